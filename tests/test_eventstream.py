import datetime
import decimal
import json
import logging
import socket
import uuid
from contextlib import closing, contextmanager

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, OperationalError, connection

from grip_eventstream import (
    PublishError,
    channel_permission_changed,
    get_current_event_id,
    send_event,
    send_events,
)
from grip_eventstream.cursor import channel_key
from grip_eventstream.grip import pushpin_channel, user_control_channel
from grip_eventstream.models import ChannelCounter, Event


class Recorder:
    def __init__(self, fail=False):
        self.items = []
        self.fail = fail

    def publish(self, items, *, channel=""):
        if self.fail:
            raise PublishError([("http://proxy:5561", "connection refused")], channel=channel)
        self.items.extend(items)

    def close(self):
        pass


@pytest.fixture
def published(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr("grip_eventstream.eventstream.get_publisher", lambda: recorder)
    return recorder


def stream(item):
    return item["formats"]["http-stream"]


def test_unreliable_event_is_published_at_once_without_id(published, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    send_event("test", "message", {"text": "hello world"})
    [item] = published.items
    assert item["channel"] == "test"
    assert "id" not in item
    assert "prev-id" not in item
    assert stream(item) == {"content": 'data: {"text": "hello world"}\n\n'}


@pytest.mark.django_db(transaction=True)
def test_reliable_event_is_stored_then_published_with_ids(published):
    send_event("room 1", "update", {"pct": "100%"})
    send_event("room 1", "update", {"pct": "50%"})
    first, second = published.items
    assert first["channel"] == pushpin_channel("room 1")
    assert (first["id"], first["prev-id"]) == ("1", "0")
    assert (second["id"], second["prev-id"]) == ("2", "1")
    # "%I" becomes each subscriber's cursor in Pushpin, followed by the event's own
    # position (buildid.live_id); every other % is escaped.
    key = channel_key("room 1")
    assert stream(first) == {
        "content": f'event: update\nid: %I.{key}-1\ndata: {{"pct": "100%%"}}\n\n',
        "content-filters": ["build-id"],
    }
    assert Event.objects.filter(channel="room 1").count() == 2


@pytest.mark.django_db
def test_in_a_transaction_the_publish_waits_for_the_commit(
    published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        send_event("test", "message", {})
        assert published.items == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert len(published.items) == 1


def test_django_json_encoder_types(published, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    send_event("t", "m", {"at": when, "d": decimal.Decimal("1.5"), "u": uuid.UUID(int=1)})
    content = stream(published.items[0])["content"]
    assert '"at": "2026-01-02T03:04:05Z"' in content
    assert '"d": "1.5"' in content


@pytest.mark.django_db(transaction=True)
def test_unserialisable_data_raises_and_stores_nothing(published):
    with pytest.raises(TypeError, match=r"send_event\('test', 'message', \.\.\.\) cannot encode"):
        send_event("test", "message", {"x": object()})
    assert not Event.objects.exists()
    assert published.items == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("reliable", [True, False])
def test_too_big_events_are_refused_before_storing(published, settings, reliable):
    settings.EVENTSTREAM_MAX_EVENT_BYTES = 1000
    channel = "test" if reliable else "volatile-x"
    # 497 "%" are 994 bytes once escaped for Pushpin, plus 8 of SSE framing.
    with pytest.raises(ValueError, match=r"over the limit of 1000 bytes \(EVENTSTREAM_MAX_EVENT"):
        send_event(channel, "message", "%" * 497, json_encode=False)
    assert not Event.objects.exists()
    assert published.items == []
    send_event(channel, "message", "%" * 496, json_encode=False)
    assert len(published.items) == 1


def test_json_encode_false_needs_a_str(published, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    send_event("t", "m", "raw text", json_encode=False)
    assert "data: raw text" in stream(published.items[0])["content"]
    with pytest.raises(TypeError, match="needs str data"):
        send_event("t", "m", b"bytes", json_encode=False)


@pytest.mark.parametrize(
    ("channel", "event_type", "error"),
    [
        ("", "m", "empty"),
        ("x" * 129, "m", "limit is 128"),
        ("ok", "", "non-empty string"),
        ("ok", "a\nb", "event"),
        ("ok", "a\rb", "event"),
        ("ok", "e" * 256, "longer than 255"),
    ],
)
def test_bad_channel_or_event_type_raises_value_error(published, channel, event_type, error):
    with pytest.raises(ValueError, match=error):
        send_event(channel, event_type, {})
    assert published.items == []


def test_publish_errors_raise_by_default(monkeypatch, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    monkeypatch.setattr("grip_eventstream.eventstream.get_publisher", lambda: Recorder(fail=True))
    with pytest.raises(PublishError, match="http://proxy:5561: connection refused"):
        send_event("t", "m", {})


def test_publish_errors_can_be_logged(monkeypatch, settings, caplog):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    settings.EVENTSTREAM_PUBLISH_ERRORS = "log"
    monkeypatch.setattr("grip_eventstream.eventstream.get_publisher", lambda: Recorder(fail=True))
    with caplog.at_level(logging.ERROR, logger="grip_eventstream"):
        send_event("t", "m", {})
    assert "could not publish on channel 't': failed to publish" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_get_current_event_id(published, settings):
    assert get_current_event_id(["a"]).endswith("-0")
    send_event("a", "m", {})
    assert get_current_event_id(["a"]).endswith("-1")
    assert get_current_event_id(["volatile-x"]) == ""  # unreliable (tests' channel manager)
    settings.EVENTSTREAM_STORAGE_CLASS = None
    assert get_current_event_id(["a"]) == ""


@pytest.mark.django_db
def test_channel_permission_changed_hints_only_when_access_is_lost(published):
    user = User.objects.create(username="u")
    group = Group.objects.create(name="g")
    user.groups.add(group)
    channel_permission_changed(user, "members-g")  # still a member: nothing to do
    assert published.items == []
    user.groups.remove(group)
    channel_permission_changed(user, "members-g")
    assert published.items == [
        {"channel": user_control_channel(user.pk), "formats": {"http-stream": {"action": "hint"}}}
    ]


# --- django-eventstream's signature, skip_user_ids, send_events -------------------------


@pytest.mark.django_db(transaction=True)
def test_django_eventstream_positional_order(published, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    send_event("test", "message", "<li>x</li>", None, False, False)
    [item] = published.items
    assert stream(item) == {"content": "data: <li>x</li>\n\n"}


@pytest.mark.django_db(transaction=True)
def test_skip_user_ids_become_publish_meta(published):
    from grip_eventstream.grip import user_meta

    send_event("test", "message", {}, skip_user_ids=[1, "2", uuid.UUID(int=3)])
    send_event("test", "message", {}, skip_user_ids=[])
    first, second = published.items
    assert first["meta"] == {
        "skip_users": f"{user_meta(1)},{user_meta(2)},{user_meta(uuid.UUID(int=3))}"
    }
    assert "meta" not in second


def test_skip_user_ids_must_be_a_list(published):
    with pytest.raises(TypeError, match="list of user ids"):
        send_event("test", "message", {}, skip_user_ids="12")


@pytest.mark.django_db(transaction=True)
def test_send_events_stores_all_and_publishes_once(published, settings):
    calls = []
    original = published.publish

    def counting(items, channel=""):
        calls.append(len(items))
        original(items)

    published.publish = counting
    send_events([("a", "message", {"n": 1}), ("volatile-b", "t", {"n": 2}), ("a", "u", {"n": 3})])
    assert calls == [3]
    a1, b, a2 = published.items
    assert (a1["id"], a2["id"], a2["prev-id"]) == ("1", "2", "1")
    assert "id" not in b
    assert list(Event.objects.values_list("channel", "seq")) == [("a", 1), ("a", 2)]


@pytest.mark.django_db(transaction=True)
def test_send_events_checks_everything_before_storing(published):
    with pytest.raises(ValueError, match="event_type"):
        send_events([("a", "message", {}), ("a", "", {})])
    assert not Event.objects.exists()
    assert published.items == []
    send_events([])
    assert published.items == []


@pytest.mark.django_db(transaction=True)
def test_async_publish_goes_to_the_background_publisher(published, monkeypatch):
    submitted = []

    class Background:
        def submit(self, items, *, channel=""):
            submitted.append((items, channel))

    monkeypatch.setattr("grip_eventstream.eventstream.get_background_publisher", Background)
    send_event("test", "message", {"n": 1}, async_publish=True)
    assert published.items == []
    ((items, channel),) = submitted
    assert channel == "test"
    assert items[0]["id"] == "1"


# --- NUL characters ------------------------------------------------------------------------
# PostgreSQL cannot store NUL in text (DataError); SQLite can. Refused on both, before
# anything is stored, so that an event never depends on the database (GES_TEST_DB=postgres
# runs these on PostgreSQL).


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("channel", ["test", "volatile-x"], ids=["stored", "not-stored"])
@pytest.mark.parametrize("data", ["a\x00", "\x00", "line\n\x00 end"])
def test_nul_in_raw_data_is_a_value_error_before_storing(eventstream_outbox, channel, data):
    with pytest.raises(ValueError, match=r"NUL character \('\\x00'\) at index \d+.*json_encode"):
        send_event(channel, "message", data, json_encode=False)
    with pytest.raises(ValueError, match="NUL"):
        send_events([(channel, "message", "fine"), (channel, "message", data)], json_encode=False)
    assert not Event.objects.exists()
    assert not ChannelCounter.objects.exclude(channel="").exists()
    assert eventstream_outbox == []


@pytest.mark.django_db(transaction=True)
def test_nul_in_json_data_is_escaped_and_stored(eventstream_outbox):
    send_event("test", "message", {"text": "a\x00b"})
    (event,) = eventstream_outbox
    assert event.json() == {"text": "a\x00b"}
    stored = Event.objects.get(channel="test")
    assert "\x00" not in stored.data
    assert json.loads(stored.data) == {"text": "a\x00b"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("event_type", ["a\x00", "\x00"])
def test_nul_in_the_event_type_is_a_value_error_before_storing(eventstream_outbox, event_type):
    with pytest.raises(ValueError, match="NUL"):
        send_event("test", event_type, {})
    assert not Event.objects.exists()
    assert eventstream_outbox == []


# --- the database fails --------------------------------------------------------------------


def closed_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def unreachable_database(tmp_path):
    """The default database cannot be reached: SQLite's file is in a directory that does not
    exist, PostgreSQL's port is closed. Restored (and reconnected on next use) after."""
    connection.close()
    with pytest.MonkeyPatch.context() as patch:
        if connection.vendor == "sqlite":
            patch.setitem(connection.settings_dict, "NAME", str(tmp_path / "gone" / "db.sqlite3"))
        else:
            patch.setitem(connection.settings_dict, "PORT", str(closed_port()))
        try:
            yield
        finally:
            connection.close()


@pytest.fixture
def database_down(transactional_db, tmp_path):
    with unreachable_database(tmp_path):
        yield


@pytest.mark.parametrize("async_publish", [False, True], ids=["sync", "async"])
def test_database_down_raises_django_database_error_and_publishes_nothing(
    database_down, eventstream_outbox, async_publish
):
    with pytest.raises(OperationalError):
        send_event("test", "message", {"n": 1}, async_publish=async_publish)
    with pytest.raises(DatabaseError):
        send_events(
            [("test", "message", {"n": 2}), ("volatile-x", "message", {"n": 3})],
            async_publish=async_publish,
        )
    # Not even the batch's unstored event: nothing is published before everything is stored.
    assert eventstream_outbox == []


@pytest.mark.django_db(transaction=True)
def test_database_down_stores_nothing(eventstream_outbox, tmp_path):
    send_event("test", "message", {"n": 0})
    with unreachable_database(tmp_path), pytest.raises(OperationalError):
        send_events([("test", "message", {"n": 1}), ("other", "message", {"n": 2})])
    assert list(Event.objects.values_list("channel", "seq")) == [("test", 1)]
    assert len(eventstream_outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_a_batch_failing_half_way_stores_and_publishes_nothing(eventstream_outbox):
    """The database fails after the batch's first channel took its numbers."""
    from grip_eventstream.storage import DjangoModelStorage

    send_events([("a", "message", {"n": 0}), ("b", "message", {"n": 0})])
    reserve = DjangoModelStorage._reserve

    def failing_on_b(self, using, channel, count):
        if channel == "b":
            raise OperationalError("server closed the connection unexpectedly")
        return reserve(self, using, channel, count)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DjangoModelStorage, "_reserve", failing_on_b)
        with pytest.raises(OperationalError, match="closed"):
            send_events([("a", "message", {"n": 1}), ("a", "message", {"n": 2}), ("b", "m", {})])
    assert list(Event.objects.order_by("pk").values_list("channel", "seq")) == [
        ("a", 1),
        ("b", 1),
    ]
    # "a"'s numbers were given back: the next event is 2, without a gap.
    assert dict(ChannelCounter.objects.values_list("channel", "last_seq"))["a"] == 1
    assert len(eventstream_outbox) == 2
    send_event("a", "message", {"n": 3})
    assert eventstream_outbox[-1].seq == 2


# --- no proxy configured -------------------------------------------------------------------


@pytest.fixture
def no_proxy_settings(settings):
    """Settings without a proxy: as a settings file without GRIP_URL or GRIP_PROXIES, which
    read as None. (Set rather than deleted: pytest-django's "del" sends no setting_changed,
    so the registry would keep the proxies it built.)"""
    settings.GRIP_URL = None
    settings.GRIP_PROXIES = None
    return settings


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("async_publish", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("errors", ["raise", "log"])
def test_no_proxy_is_improperly_configured_before_storing(no_proxy_settings, async_publish, errors):
    no_proxy_settings.EVENTSTREAM_PUBLISH_ERRORS = errors
    with pytest.raises(ImproperlyConfigured, match=r"set GRIP_URL .* or GRIP_PROXIES"):
        send_event("test", "message", {}, async_publish=async_publish)
    with pytest.raises(ImproperlyConfigured, match="GRIP_URL"):
        send_event("volatile-x", "message", {}, async_publish=async_publish)
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_no_proxy_for_channel_permission_changed(no_proxy_settings):
    user = User.objects.create(username="x")  # not in the group "staff": access is lost
    with pytest.raises(ImproperlyConfigured, match="GRIP_URL"):
        channel_permission_changed(user, "members-staff")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("async_publish", [False, True], ids=["sync", "async"])
def test_the_outbox_needs_no_proxy(no_proxy_settings, eventstream_outbox, async_publish):
    send_event("test", "message", {"n": 1}, async_publish=async_publish)
    send_events([("volatile-x", "message", {"n": 2})], async_publish=async_publish)
    assert [(e.channel, e.json(), e.seq) for e in eventstream_outbox] == [
        ("test", {"n": 1}, 1),
        ("volatile-x", {"n": 2}, None),
    ]

import datetime
import decimal
import logging
import uuid

import pytest
from django.contrib.auth.models import Group, User

from grip_eventstream import (
    PublishError,
    channel_permission_changed,
    get_current_event_id,
    send_event,
    send_events,
)
from grip_eventstream.grip import pushpin_channel, user_control_channel
from grip_eventstream.cursor import channel_key
from grip_eventstream.models import Event


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
    # position (cursor.live_id); every other % is escaped.
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

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from grip_eventstream.models import ChannelCounter, Event


@pytest.fixture
def no_publish(monkeypatch):
    sent = []
    monkeypatch.setattr(
        "grip_eventstream.eventstream._publish", lambda item, channel: sent.append(item)
    )
    return sent


@pytest.mark.django_db
def test_send_event_command_stores_and_publishes(no_publish, django_capture_on_commit_callbacks):
    out = StringIO()
    # The test runs in a transaction: send_event publishes on commit.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("send_event", "news", "message", '{"text": "hi"}', "--count", "3", stdout=out)
    assert "sent 3 event(s) to 'news'" in out.getvalue()
    rows = list(Event.objects.filter(channel="news").order_by("seq").values_list("seq", "data"))
    assert [seq for seq, _ in rows] == [1, 2, 3]
    assert [json.loads(d) for _, d in rows] == [{"text": "hi", "i": i} for i in range(3)]
    assert len(no_publish) == 3


@pytest.mark.django_db
def test_send_event_command_rejects_bad_json(no_publish):
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("send_event", "news", "message", "{oops")
    assert not no_publish


@pytest.mark.django_db
def test_send_event_command_reports_a_bad_channel(no_publish):
    with pytest.raises(CommandError, match="control character"):
        call_command("send_event", "bad\x01", "message", "{}")


@pytest.mark.django_db
def test_send_event_command_reports_publish_errors(settings):
    settings.GRIP_URL = "http://127.0.0.1:9"  # discard port: connection refused
    settings.EVENTSTREAM_STORAGE_CLASS = None
    with pytest.raises(CommandError, match="failed to publish"):
        call_command("send_event", "news", "message", "{}")


@pytest.mark.django_db
def test_trim_events_deletes_only_expired_rows(settings):
    settings.EVENTSTREAM_STORAGE_TTL = 60
    old = timezone.now() - timedelta(seconds=120)
    Event.objects.bulk_create(
        [Event(channel="a", seq=i, event_type="m", data="{}", created=old) for i in (1, 2)]
        + [Event(channel="a", seq=3, event_type="m", data="{}")]
        + [Event(channel="b", seq=1, event_type="m", data="{}", created=old)]
    )
    ChannelCounter.objects.bulk_create(
        [ChannelCounter(channel="a", last_seq=3), ChannelCounter(channel="b", last_seq=1)]
    )
    out = StringIO()
    call_command("trim_events", stdout=out)
    assert "deleted 3 expired event(s)" in out.getvalue()
    assert list(Event.objects.values_list("channel", "seq")) == [("a", 3)]


def test_trim_events_without_storage(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    with pytest.raises(CommandError, match="EVENTSTREAM_STORAGE_CLASS"):
        call_command("trim_events")


# --- eventstream_status -----------------------------------------------------------------


@pytest.mark.django_db
def test_status_lists_channels_and_a_mute_proxy(settings, no_publish):
    import socket
    from contextlib import closing

    from grip_eventstream.storage import DjangoModelStorage

    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.GRIP_URL = f"http://127.0.0.1:{port}"
    storage = DjangoModelStorage()
    for _ in range(3):
        storage.append_event("news", "message", "{}", 60)
    Event.objects.filter(channel="news", seq=1).update(
        created=timezone.now() - timedelta(minutes=30)
    )
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("eventstream_status", stdout=out, stderr=err)
    assert exit_info.value.code == 1
    text = out.getvalue()
    assert f"epoch {storage.get_epoch()}, 1 channel(s)" in text
    assert "  news: last id 3, 3 stored, oldest 30 min old, kept 24 h" in text
    assert f"proxy http://127.0.0.1:{port}: does not answer: connection refused" in text
    assert "1 of 1 proxy(ies) did not answer" in err.getvalue()


@pytest.mark.django_db
def test_status_without_storage_or_proxies(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    settings.GRIP_URL = None
    out = StringIO()
    call_command("eventstream_status", stdout=out)
    assert "storage: none" in out.getvalue()
    assert "proxies: none" in out.getvalue()

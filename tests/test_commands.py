import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from grip_eventstream.models import ChannelCounter, Event
from tests.conftest import ROOT


class AnsweringProxy(ThreadingHTTPServer):
    """A control port that accepts every publish; ``publishes`` counts them."""

    publishes = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def answering_proxy():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            server.publishes += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = AnsweringProxy(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


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
    # One batch (send_events): one publish of the three events.
    [items] = no_publish
    assert [item["id"] for item in items] == ["1", "2", "3"]


@pytest.mark.django_db
@pytest.mark.parametrize("count", ["0", "-1", "-100"])
def test_send_event_command_refuses_counts_below_one(no_publish, count):
    with pytest.raises(CommandError, match=f"--count must be 1 or more, got {count}"):
        call_command("send_event", "news", "message", "{}", "--count", count)
    assert not Event.objects.exists()
    assert not no_publish


@pytest.mark.django_db(transaction=True)
def test_send_event_command_with_the_database_down(no_publish, tmp_path):
    from tests.test_eventstream import unreachable_database

    with (
        unreachable_database(tmp_path),
        pytest.raises(CommandError, match=r"nothing was sent: .*OperationalError"),
    ):
        call_command("send_event", "news", "message", "{}", "--count", "3")
    assert not Event.objects.exists()
    assert not no_publish


@pytest.mark.django_db(transaction=True)
def test_send_event_command_is_all_or_nothing(no_publish, settings):
    # The last of the three is over the limit (its "i" is one digit longer).
    settings.EVENTSTREAM_MAX_EVENT_BYTES = len('data: {"i": 9}\n\n')
    with pytest.raises(CommandError, match="over the limit"):
        call_command("send_event", "news", "message", "{}", "--count", "11")
    assert not Event.objects.exists()
    assert not no_publish


def test_send_event_command_without_a_proxy(settings):
    settings.GRIP_URL = None
    settings.GRIP_PROXIES = None
    with pytest.raises(CommandError, match="set GRIP_URL"):
        call_command("send_event", "news", "message", "{}")


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


@pytest.mark.django_db
def test_status_says_a_channel_is_empty(settings):
    settings.GRIP_URL = None
    ChannelCounter.objects.create(channel="news", last_seq=3)  # its events were trimmed
    out = StringIO()
    call_command("eventstream_status", stdout=out)
    assert "  news: last id 3, empty: no event stored (older ones have expired), kept 24 h" in (
        out.getvalue()
    )
    assert " - old" not in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_status_with_the_database_down_still_checks_the_proxies(
    settings, answering_proxy, tmp_path
):
    from tests.test_eventstream import unreachable_database

    settings.GRIP_URL = answering_proxy.url
    out, err = StringIO(), StringIO()
    with unreachable_database(tmp_path), pytest.raises(SystemExit) as exit_info:
        call_command("eventstream_status", stdout=out, stderr=err)
    assert exit_info.value.code == 1
    [line] = err.getvalue().splitlines()
    assert line.startswith("storage: the database 'default' cannot be read (OperationalError: ")
    assert "Check that the database server is running" in line
    assert out.getvalue() == f"proxy {answering_proxy.url}: answers\n"
    assert answering_proxy.publishes == 1


def test_status_with_the_database_down_in_its_own_process(answering_proxy, tmp_path):
    """As an operator runs it: one line about the database, no traceback, exit status 1."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "GES_TEST_DB": "sqlite",
        "GES_DB_NAME": str(tmp_path / "gone" / "db.sqlite3"),
        # With a key: system check W001 would add its warning to stderr.
        "GRIP_URL": f"{answering_proxy.url}?key=grip-eventstream-test-key-0123456789abcdef",
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "eventstream_status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert "storage: the database 'default' cannot be read (OperationalError: unable to open" in (
        line
    )
    assert done.stdout == f"proxy {answering_proxy.url}: answers\n"

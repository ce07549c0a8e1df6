"""Faults with the real parts: Pushpin killed or down, a gunicorn worker killed mid-send,
eight concurrent writer processes. Each test asserts that the subscriber ends with every
committed event exactly once and in order, and records its figures (see conftest.tally).
"""

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.db import connections

from grip_eventstream import PublishError, send_event
from grip_eventstream.cursor import parse_cursor
from grip_eventstream.models import Event
from tests.conftest import ROOT, tally
from tests.reconnecting_client import ReconnectingClient

pytestmark = pytest.mark.e2e


def unique(prefix="fault"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def committed(channel):
    return [
        json.loads(d)["n"]
        for d in Event.objects.filter(channel=channel)
        .order_by("seq")
        .values_list("data", flat=True)
    ]


def received(client):
    return [json.loads(e.data)["n"] for e in client.data_events()]


def assert_exactly_once_in_order(figures):
    assert figures["duplicated"] == figures["reordered"] == figures["missing"] == 0, figures
    assert figures["received"] == figures["sent"], figures


def test_pushpin_down_while_events_are_sent(private_stack, settings):
    channel = unique()
    url = f"{private_stack.url}/stream/?channel={channel}"
    # As GripEventSource does: Pushpin answers 500 for a moment while it starts.
    with ReconnectingClient(url, retry_server_errors=True) as client:
        client.wait_connected()
        send_event(channel, "message", {"n": 0})
        client.wait_count(1)
        private_stack.pushpin.stop()
        started = time.monotonic()
        with pytest.raises(PublishError) as info:
            send_event(channel, "message", {"n": 1})
        assert time.monotonic() - started < 30  # bounded (EVENTSTREAM_PUBLISH_TIMEOUT), never hung
        assert private_stack.pushpin.control_url in str(info.value)
        settings.EVENTSTREAM_PUBLISH_ERRORS = "log"
        send_event(channel, "message", {"n": 2})  # logged, not raised; still stored
        private_stack.start_pushpin()
        send_event(channel, "message", {"n": 3})
        client.wait_count(4)
    figures = tally("pushpin down during sends", committed(channel), received(client))
    assert_exactly_once_in_order(figures)


def test_pushpin_killed_and_restarted_mid_stream(private_stack, settings):
    settings.EVENTSTREAM_PUBLISH_ERRORS = "log"
    channel = unique()
    url = f"{private_stack.url}/stream/?channel={channel}"
    done = threading.Event()

    def sender():
        try:
            for n in range(120):
                send_event(channel, "message", {"n": n})
                time.sleep(0.01)
            done.set()
        finally:
            connections.close_all()  # this thread's own connection, else PG can't drop the DB

    # As GripEventSource does: Pushpin answers 500 for a moment while it starts.
    with ReconnectingClient(url, retry_server_errors=True) as client:
        client.wait_connected()
        thread = threading.Thread(target=sender)
        thread.start()
        client.wait_count(20)
        private_stack.pushpin.kill()  # SIGKILL: runner and its four services
        time.sleep(0.5)
        private_stack.start_pushpin()
        thread.join(60)
        assert done.is_set()
        # Events sent while Pushpin's control port was not up yet are stored, not
        # published: the next event reveals the gap (else the link timeout would, in
        # 120 s). The sender may have finished within that window: one more event.
        send_event(channel, "message", {"n": 120})
        try:
            client.wait_count(121, timeout=30)
        except TimeoutError:
            raise AssertionError(f"client stopped: status {client.failed_status}") from None
        reconnects = client.connections
    figures = tally(
        "pushpin SIGKILLed + restarted mid-stream", committed(channel), received(client)
    )
    assert_exactly_once_in_order(figures)
    assert reconnects >= 2


def test_gunicorn_worker_killed_during_send_event(private_stack):
    channel = unique()
    url = f"{private_stack.url}/stream/?channel={channel}"
    with ReconnectingClient(url) as client:
        client.wait_connected()
        errors = []

        def long_send():
            try:
                private_stack.send_via_app(channel, {}, count=5000)
            except Exception as exc:  # the worker dies under it
                errors.append(exc)

        thread = threading.Thread(target=long_send)
        thread.start()
        client.wait_count(50, timeout=30)
        # Every worker: the one serving the request is among them (the master respawns them).
        for pid in private_stack.gunicorn.worker_pids():
            private_stack.gunicorn.kill_worker(pid)
        thread.join(60)
        assert not thread.is_alive()
        # Whatever the dead worker committed but never published is repaired by the next
        # publish (its prev-id reveals the gap) through Pushpin's next-link request.
        time.sleep(0.5)
        send_event(channel, "message", {"i": -1, "n": "after"})
        expected = Event.objects.filter(channel=channel).count()
        client.wait_count(expected, timeout=30)
    assert errors, "the request should have failed with its worker"
    assert expected < 5001
    got = [json.loads(e.data).get("i") for e in client.data_events()]
    want = [
        json.loads(d).get("i")
        for d in Event.objects.filter(channel=channel)
        .order_by("seq")
        .values_list("data", flat=True)
    ]
    figures = tally("gunicorn worker SIGKILLed during send_event", want, got)
    assert_exactly_once_in_order(figures)


def _what_pushpin_and_the_app_did(offsets, channel, lines=40):
    """For a failure: how many items of ``channel`` Pushpin published to its streams, and
    the publish requests and next-link fetches, since ``offsets`` (log path -> size)."""
    shown = []
    for path, offset in offsets.items():
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace").splitlines()
        published = sum(f"publish channel={channel} " in line for line in text)
        other = [line[:200] for line in text if "publish channel=" not in line]
        shown.append(f"--- {path.name}: {published} items of {channel} published; then:")
        shown += other[-lines:]
    return "\n".join(shown)


# The writers take up to a minute under load.
@pytest.mark.timeout(200)
# Concurrent batches of 200 on one channel: Pushpin holds at most 100 items of a channel
# that arrive ahead of a missing one and drops the rest unseen, so the end of a batch
# whose publish overtook another's reaches the stream at its next link fetch, within twice
# the link timeout (docs: "Batches and bursts"). 5 s here, for the wait below.
@pytest.mark.stack_env(GES_LINK_TIMEOUT="5")
def test_eight_writer_processes_on_one_new_channel(private_stack, test_db_name):
    stack = private_stack
    channel = unique("load")  # a new channel: the first writes race to create its counter
    url = f"{stack.url}/stream/?channel={channel}"
    env = {
        **__import__("os").environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "GES_DB_NAME": test_db_name,
        "GRIP_URL": stack.grip_url,
    }
    with ReconnectingClient(url) as client:
        client.wait_connected()
        logs = {p.log_path: p.log_path.stat().st_size for p in (stack.pushpin, stack.gunicorn)}
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "send_event",
                    channel,
                    "message",
                    json.dumps({"w": w}),
                    "--count",
                    "200",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(8)
        ]
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err[-2000:]
        try:
            client.wait_count(1600, timeout=60)
        except TimeoutError as exc:
            detail = _what_pushpin_and_the_app_did(logs, channel)
            raise AssertionError(f"{exc}\n{detail}") from None
    rows = list(Event.objects.filter(channel=channel).order_by("seq").values_list("seq", "data"))
    assert [s for s, _ in rows] == list(range(1, 1601))  # unique, gapless, increasing
    sent = [(json.loads(d)["w"], json.loads(d)["i"]) for _, d in rows]
    events = client.data_events()
    got = [(json.loads(e.data)["w"], json.loads(e.data)["i"]) for e in events]
    cursors = [parse_cursor(e.last_event_id) for e in events]
    seqs = [c.position(channel) if c else None for c in cursors]
    assert seqs == list(range(1, 1601))
    for w in range(8):  # each writer's own events in its own order
        assert [i for ww, i in sent if ww == w] == list(range(200))
    assert_exactly_once_in_order(tally("8 writer processes x 200 events", sent, got))

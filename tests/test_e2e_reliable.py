"""Reliable delivery through a real Pushpin: replay, reset, gap repair, paging, transactions.

Every test asserts that the subscriber ends with every committed event exactly once, in
order. The fault scenarios (processes killed) are in test_e2e_faults.py.
"""

import json
import time
import uuid

import pytest
from django.db import transaction

from grip_eventstream import buildid, get_current_event_id, send_event, send_events
from grip_eventstream.cursor import parse_cursor
from grip_eventstream.storage import DjangoModelStorage
from tests.conftest import events, wait_events

pytestmark = pytest.mark.e2e


def unique(prefix="ch"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def numbers(evs):
    return [json.loads(e.data)["n"] for e in evs]


def seq(event, channel):
    return parse_cursor(event.last_event_id).position(channel)  # type: ignore[union-attr]


def test_reconnect_with_last_event_id_replays_exactly_the_missed_events(stack):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        for n in range(3):
            send_event(channel, "message", {"n": n})
        first = wait_events(reader, 3)
    assert numbers(first) == [0, 1, 2]
    for n in range(3, 8):
        send_event(channel, "message", {"n": n})
    headers = {"Last-Event-ID": first[-1].last_event_id}
    with stack.stream(f"/stream/?channel={channel}", headers=headers) as reader:
        replayed = wait_events(reader, 5)
        send_event(channel, "message", {"n": 8})
        after = wait_events(reader, 6)
    assert numbers(replayed) == [3, 4, 5, 6, 7]
    assert numbers(after) == [3, 4, 5, 6, 7, 8]
    assert [seq(e, channel) for e in after] == [4, 5, 6, 7, 8, 9]


def test_rendered_cursor_in_the_query_misses_nothing(stack):
    channel = unique()
    send_event(channel, "message", {"n": 0})
    cursor = get_current_event_id([channel])  # as a template would render it
    send_event(channel, "message", {"n": 1})  # between render and connect
    with stack.stream(f"/stream/?channel={channel}&lastEventId={cursor}") as reader:
        assert numbers(wait_events(reader, 1)) == [1]


def test_last_event_id_header_wins_over_the_query(stack):
    channel = unique()
    send_event(channel, "message", {"n": 0})
    old = get_current_event_id([channel])
    send_event(channel, "message", {"n": 1})
    newer = get_current_event_id([channel])
    send_event(channel, "message", {"n": 2})
    url = f"/stream/?channel={channel}&lastEventId={old}"
    with stack.stream(url, headers={"Last-Event-ID": newer}) as reader:
        text = reader.wait_contains('"n": 2')
    assert numbers(events(text)) == [2]


def test_several_channels_replay_in_order_across_channels(stack):
    # "/multi/" streams test, "room 1" and "ünï": names that need quoting and encoding.
    channels = ["test", "room 1", "ünï"]
    with stack.stream("/multi/") as reader:
        for n in range(6):
            send_event(channels[n % 3], "message", {"n": n})
        live = wait_events(reader, 6)
    # Live, order is guaranteed per channel; an event that raced the subscription comes
    # through Pushpin's first-subscriber check, possibly after a later one of another channel.
    assert sorted(numbers(live)) == list(range(6))
    for k in range(3):
        assert [n for n in numbers(live) if n % 3 == k] == list(range(k, 6, 3))
    # The cursor of the last event received covers every channel: replay starts after it.
    for n in range(6, 12):
        send_event(channels[n % 3], "message", {"n": n})
    with stack.stream("/multi/", headers={"Last-Event-ID": live[-1].last_event_id}) as reader:
        replayed = wait_events(reader, 6)
    assert numbers(replayed) == list(range(6, 12))
    for event in replayed:  # only CORS-safe characters, no preflight needed
        assert set(event.last_event_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-")


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        ("not a cursor!", "invalid-cursor"),
        ("aaaaaaa.zzzzzz-1", "epoch-changed"),
        # Longer than MAX_CURSOR_LENGTH; Pushpin itself resets requests with ~10 KB heads.
        ("x" * 2_000, "invalid-cursor"),
    ],
)
def test_unusable_cursor_gets_a_stream_reset_then_live_events(stack, cursor, reason):
    channel = unique()
    send_event(channel, "message", {"n": 0})
    with stack.stream(f"/stream/?channel={channel}", headers={"Last-Event-ID": cursor}) as reader:
        text = reader.wait_contains("stream-reset")
        send_event(channel, "message", {"n": 1})
        text = reader.wait_contains('"n": 1')
    [reset] = [e for e in events(text, skip=()) if e.type == "stream-reset"]
    assert json.loads(reset.data) == {"channels": [channel], "reason": reason}
    assert seq(reset, channel) == 1
    assert numbers(events(text)) == [1]


def test_cursor_ahead_of_the_database_is_reset(stack):
    channel = unique()
    send_event(channel, "message", {"n": 0})
    future = get_current_event_id([channel]).replace("-1", "-99")
    with stack.stream(f"/stream/?channel={channel}", headers={"Last-Event-ID": future}) as reader:
        text = reader.wait_contains("stream-reset")
    [reset] = events(text, skip=("message",))
    assert json.loads(reset.data)["reason"] == "unknown-position"


def test_trimmed_history_is_reset(stack):
    from grip_eventstream.models import Event

    channel = unique()
    send_event(channel, "message", {"n": 0})
    cursor = get_current_event_id([channel])
    send_event(channel, "message", {"n": 1})
    send_event(channel, "message", {"n": 2})
    Event.objects.filter(channel=channel, seq__lte=2).delete()  # as trimming would: oldest first
    with stack.stream(f"/stream/?channel={channel}", headers={"Last-Event-ID": cursor}) as reader:
        text = reader.wait_contains("stream-reset")
    [reset] = events(text, skip=("message",))
    assert json.loads(reset.data) == {"channels": [channel], "reason": "expired"}


def test_lost_publish_reaches_a_connected_client_without_reconnecting(stack):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        send_event(channel, "message", {"n": 0})
        wait_events(reader, 1)
        # Stored but never published, as when a process dies between commit and publish.
        DjangoModelStorage().append_event(channel, "message", json.dumps({"n": 1}), 3600)
        send_event(channel, "message", {"n": 2})  # its prev-id reveals the gap to Pushpin
        got = wait_events(reader, 3, timeout=15)
    assert numbers(got) == [0, 1, 2]
    assert [seq(e, channel) for e in got] == [1, 2, 3]


@pytest.mark.stack_env(GES_LINK_TIMEOUT="3")
def test_a_batch_published_ahead_of_an_earlier_event_arrives_by_the_link_timeout(
    private_stack,
):
    """A batch whose publish overtakes an earlier event's (two processes sending at once).

    Pushpin holds at most 100 items of a channel that arrive ahead of a missing one and
    drops the rest unseen: once the missing one comes, the stream has the batch's first
    100 events and nothing shows Pushpin that the last 100 are missing. They arrive at the
    stream's next link fetch, within twice EVENTSTREAM_LINK_TIMEOUT (3 s here): exactly
    once and in order (docs: "Batches and bursts").
    """
    stack = private_stack
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        send_event(channel, "message", {"n": 0})
        wait_events(reader, 1)  # Pushpin now expects the item after event 1
        # Past the next-link fetch Pushpin makes about 1 s after a channel's first
        # subscriber, which would otherwise repair the loss by chance.
        time.sleep(2)
        # Stored, not yet published: the other process's publish is on its way.
        late = DjangoModelStorage().append_event(channel, "message", json.dumps({"n": 1}), 3600)
        send_events([(channel, "message", {"n": n}) for n in range(2, 202)])
        stack.pushpin.publish([buildid.publish_item(channel, late.seq, late.data, "message", None)])
        got = wait_events(reader, 202, timeout=20)
        time.sleep(1)  # a repeat would arrive by now
        assert len(events(reader.text())) == 202
    assert numbers(got) == list(range(202))
    assert [seq(e, channel) for e in got] == list(range(1, 203))


def test_transaction_publishes_on_commit_and_a_rollback_never(stack):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        with transaction.atomic():
            send_event(channel, "message", {"n": 0})
            with pytest.raises(TimeoutError):  # not visible before the commit
                reader.wait_contains('"n": 0', timeout=1)
        wait_events(reader, 1)
        try:
            with transaction.atomic():
                send_event(channel, "message", {"n": "rolled back"})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        send_event(channel, "message", {"n": 1})
        got = wait_events(reader, 2)
    assert numbers(got) == [0, 1]
    assert [seq(e, channel) for e in got] == [1, 2]  # the rollback left no phantom id


@pytest.mark.stack_env(GES_REPLAY_LIMIT="5")
def test_big_backlog_pages_through_next_links(private_stack):
    channel = unique()
    send_event(channel, "message", {"n": -1})
    cursor = get_current_event_id([channel])
    for n in range(23):
        send_event(channel, "message", {"n": n})
    url = f"/stream/?channel={channel}"
    with private_stack.stream(url, headers={"Last-Event-ID": cursor}) as reader:
        backlog = wait_events(reader, 23, timeout=20)
        send_event(channel, "message", {"n": 23})
        got = wait_events(reader, 24)
    assert numbers(backlog) == list(range(23))
    assert numbers(got) == list(range(24))

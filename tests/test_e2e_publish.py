"""Publishing through a real Pushpin: skip_user_ids, send_events batches, async_publish."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth import get_user_model

from grip_eventstream import get_current_event_id, send_event, send_events
from grip_eventstream.registry import get_background_publisher
from tests.conftest import wait_events
from tests.test_e2e_security import login

pytestmark = pytest.mark.e2e


def unique(prefix: str = "pub") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def numbers(evs) -> list[int]:
    return [json.loads(e.data)["n"] for e in evs]


@pytest.mark.parametrize("reliable", [True, False])
def test_skipped_users_do_not_receive_the_event_live(stack, reliable):
    channel = unique() if reliable else unique("volatile")
    skipped = login(stack, unique("user"))
    other = login(stack, unique("user"))
    skipped_pk = get_user_model().objects.latest("pk").pk - 1
    url = f"/stream/?channel={channel}"
    with (
        stack.stream(url, headers=skipped) as skipped_reader,
        stack.stream(url, headers=other) as other_reader,
        stack.stream(url) as anonymous_reader,
    ):
        send_event(channel, "message", {"n": 1}, skip_user_ids=[skipped_pk])
        send_event(channel, "message", {"n": 2})
        send_event(channel, "message", {"n": 3}, [str(skipped_pk)])  # positional, as a str
        send_event(channel, "message", {"n": 4})
        assert numbers(wait_events(anonymous_reader, 4)) == [1, 2, 3, 4]
        assert numbers(wait_events(other_reader, 4)) == [1, 2, 3, 4]
        got = wait_events(skipped_reader, 2)
        # Pushpin does not count a skipped event as a gap: no repair brings it back.
        with pytest.raises(TimeoutError):
            skipped_reader.wait_contains('"n": 1', timeout=3)
    assert numbers(got) == [2, 4]


def test_send_events_batch_in_order_with_ids(stack):
    a, b = unique(), unique()
    cursor = get_current_event_id([a, b])
    with stack.stream(f"/stream/?channel={a}&channel={b}") as reader:
        send_events([(a if n % 3 else b, "message", {"n": n}) for n in range(30)])
        live = wait_events(reader, 30)
    # Live, Pushpin keeps the order of one POST per channel, not across channels.
    assert sorted(numbers(live)) == list(range(30))
    assert [n for n in numbers(live) if n % 3] == [n for n in range(30) if n % 3]
    with stack.stream(f"/stream/?channel={a}&channel={b}&lastEventId={cursor}") as reader:
        replayed = wait_events(reader, 30)
    assert numbers(replayed) == list(range(30))
    # Replayed in the order sent, ending at the channels' current cursor.
    assert replayed[-1].last_event_id == get_current_event_id([a, b])


def test_async_publish_delivers_and_flushes(stack):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        for n in range(50):
            send_event(channel, "message", {"n": n}, async_publish=True)
        assert get_background_publisher().flush(timeout=10)
        got = wait_events(reader, 50)
    assert numbers(got) == list(range(50))


def test_async_publish_to_a_dead_proxy_is_repaired_later(stack, settings, caplog):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        send_event(channel, "message", {"n": 0})
        wait_events(reader, 1)
        live_url = settings.GRIP_URL
        settings.GRIP_URL = f"http://127.0.0.1:9/?iss=pushpin&key={'k' * 32}"  # nothing listens
        send_event(channel, "message", {"n": 1}, async_publish=True)
        assert get_background_publisher().flush(timeout=10)
        assert "could not publish" in caplog.text
        settings.GRIP_URL = live_url
        send_event(channel, "message", {"n": 2})  # its prev-id reveals the lost one
        got = wait_events(reader, 3, timeout=15)
    assert numbers(got) == [0, 1, 2]

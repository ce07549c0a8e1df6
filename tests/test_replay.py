"""grip_eventstream.replay: the resume decision and paging, on an in-memory event source.

The same engine runs against the databases in test_views.py and through Pushpin in the
end-to-end tests; here hypothesis explores histories, trims, cursors and page limits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grip_eventstream import buildid, replay
from grip_eventstream.cursor import format_cursor, parse_cursor
from grip_eventstream.replay import ReplayRequest, StoredEvent, plan, resolve_positions
from grip_eventstream.sseclient import SSEParser
from tests.pushpin_model import pushpin_build_id

EPOCH = "abcdefg"


@dataclass
class Memory:
    """Events per channel, oldest first; ``trimmed`` events are gone from the start."""

    events: dict[str, list[StoredEvent]] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    order: int = 0

    def add(self, channel: str, data: str, event_type: str = "message") -> StoredEvent:
        self.order += 1
        seq = len(self.events.setdefault(channel, [])) + 1
        event = StoredEvent(channel, seq, event_type, data, self.order)
        self.events[channel].append(event)
        return event

    def current(self, channels: list[str]) -> dict[str, int]:
        return {c: len(self.events.get(c, [])) for c in channels}

    def get_events(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        self.reads.append((channel, after, limit))
        first = self.trimmed.get(channel, 0)
        stored = self.events.get(channel, [])[first:]
        return [e for e in stored if e.seq > after][:limit]


def request(memory: Memory, channels: list[str], **kwargs: object) -> ReplayRequest:
    return ReplayRequest(
        epoch=EPOCH,
        channels=channels,
        current=memory.current(channels),
        **kwargs,  # type: ignore[arg-type]
    )


def received(replay_: replay.Replay, escape: bool = False) -> list:
    body = replay_.render(buildid.escape if escape else str)
    if escape:
        body = pushpin_build_id(body, "unused")
    return SSEParser().feed(body.encode())


# --- positions ----------------------------------------------------------------------------


def test_no_cursor_starts_from_now_without_reset():
    memory = Memory()
    memory.add("a", "old")
    positions, resets = resolve_positions(request(memory, ["a"]))
    assert (positions, resets) == ({"a": 1}, {})


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        ("garbage", replay.INVALID_CURSOR),  # seven letters: an epoch alone is no cursor
        ("not a cursor", replay.INVALID_CURSOR),
        ("zzzzzzz.aaaaaa-1", replay.EPOCH_CHANGED),
    ],
)
def test_untrusted_cursors_reset(cursor, reason):
    memory = Memory()
    memory.add("a", "x")
    positions, resets = resolve_positions(request(memory, ["a"], cursor=cursor))
    assert positions == {"a": 1}
    assert resets == {reason: ["a"]}


def test_position_ahead_of_the_channel_resets():
    memory = Memory()
    cursor = format_cursor(EPOCH, {"a": 5}, ["a"])
    assert resolve_positions(request(memory, ["a"], cursor=cursor))[1] == {
        replay.UNKNOWN_POSITION: ["a"]
    }


def test_grip_last_only_without_a_cursor():
    memory = Memory()
    for i in range(3):
        memory.add("a", str(i))
    positions, _ = resolve_positions(request(memory, ["a"], grip_last={"a": "1"}))
    assert positions == {"a": 1}
    cursor = format_cursor(EPOCH, {"a": 2}, ["a"])
    positions, _ = resolve_positions(request(memory, ["a"], cursor=cursor, grip_last={"a": "1"}))
    assert positions == {"a": 2}


@pytest.mark.parametrize("value", ["", "x", "4", "01", "\u00b2", "9" * 30])
def test_bad_grip_last_resets(value):
    memory = Memory()
    memory.add("a", "x")
    _, resets = resolve_positions(request(memory, ["a"], grip_last={"a": value}))
    assert resets == {replay.UNKNOWN_POSITION: ["a"]}


# --- expiry and reading ---------------------------------------------------------------


def test_expired_when_the_next_event_is_gone():
    memory = Memory()
    for i in range(5):
        memory.add("a", str(i))
    memory.trimmed["a"] = 3  # seq 1-3 gone
    cursor = format_cursor(EPOCH, {"a": 1}, ["a"])
    result = plan(request(memory, ["a"], cursor=cursor), memory)
    assert result.resets == {replay.EXPIRED: ["a"]}
    assert result.positions == {"a": 5}
    (event,) = received(result)
    assert event.type == "stream-reset"
    assert json.loads(event.data) == {"channels": ["a"], "reason": "expired"}
    assert parse_cursor(event.last_event_id).position("a") == 5  # type: ignore[union-attr]


def test_exactly_at_the_trim_point_is_not_expired():
    memory = Memory()
    for i in range(5):
        memory.add("a", str(i))
    memory.trimmed["a"] = 3
    cursor = format_cursor(EPOCH, {"a": 3}, ["a"])
    result = plan(request(memory, ["a"], cursor=cursor), memory)
    assert result.resets == {}
    assert [e.data for e in received(result)] == ["3", "4"]


def test_everything_trimmed_is_expired():
    memory = Memory()
    memory.add("a", "x")
    memory.trimmed["a"] = 1
    cursor = format_cursor(EPOCH, {"a": 0}, ["a"])
    assert plan(request(memory, ["a"], cursor=cursor), memory).resets == {replay.EXPIRED: ["a"]}


def test_reads_only_the_missed_range_a_chunk_at_a_time():
    memory = Memory()
    for i in range(1000):
        memory.add("a", str(i))
    cursor = format_cursor(EPOCH, {"a": 990}, ["a"])
    result = plan(request(memory, ["a"], cursor=cursor), memory)
    assert memory.reads == [("a", 990, 10)]
    assert result.events == 10
    memory.reads.clear()
    cursor = format_cursor(EPOCH, {"a": 700}, ["a"])
    plan(request(memory, ["a"], cursor=cursor), memory)
    assert memory.reads == [("a", 700, 100), ("a", 800, 100), ("a", 900, 100)]


def test_up_to_date_reads_nothing():
    memory = Memory()
    memory.add("a", "x")
    cursor = format_cursor(EPOCH, {"a": 1}, ["a"])
    plan(request(memory, ["a"], cursor=cursor, id_only_tail=True), memory)
    assert memory.reads == []


def test_events_newer_than_current_are_left_for_the_hold():
    memory = Memory()
    memory.add("a", "1")
    req = request(memory, ["a"], cursor=format_cursor(EPOCH, {"a": 0}, ["a"]))
    memory.add("a", "2")  # committed after current was read
    result = plan(req, memory)
    assert [e.data for e in received(result)] == ["1"]
    assert result.positions == {"a": 1}


# --- pages --------------------------------------------------------------------------------


def test_page_by_count_and_by_bytes():
    memory = Memory()
    for i in range(10):
        memory.add("a", f"{i}" * 1000)
    start = format_cursor(EPOCH, {"a": 0}, ["a"])
    by_count = plan(request(memory, ["a"], cursor=start, max_events=4), memory)
    assert (by_count.events, by_count.complete) == (4, False)
    by_bytes = plan(request(memory, ["a"], cursor=start, max_bytes=3500), memory)
    assert (by_bytes.events, by_bytes.complete) == (3, False)
    assert len(by_bytes.render().encode()) <= 3500


def test_a_single_event_over_the_budget_still_goes_alone():
    memory = Memory()
    memory.add("a", "x" * 5000)
    memory.add("a", "y")
    start = format_cursor(EPOCH, {"a": 0}, ["a"])
    result = plan(request(memory, ["a"], cursor=start, max_bytes=1024), memory)
    assert (result.events, result.complete, result.positions) == (1, False, {"a": 1})


def test_budget_counts_escaped_percent():
    memory = Memory()
    memory.add("a", "%" * 600)
    memory.add("a", "%" * 600)
    start = format_cursor(EPOCH, {"a": 0}, ["a"])
    result = plan(request(memory, ["a"], cursor=start, max_bytes=2000), memory)
    assert result.events == 1  # 1200+ bytes each once escaped
    assert len(result.render(buildid.escape).encode()) <= 2000


def test_id_only_tail_on_complete_pages_only():
    memory = Memory()
    memory.add("a", "x")
    memory.add("a", "y")
    start = format_cursor(EPOCH, {"a": 0}, ["a"])
    paged = plan(request(memory, ["a"], cursor=start, max_events=1, id_only_tail=True), memory)
    assert not paged.render().endswith("\n\nid: ")
    assert paged.tail == ""
    whole = plan(request(memory, ["a"], cursor=start, id_only_tail=True), memory)
    assert whole.tail == f"id: {whole.cursor}\n\n"


# --- the property: any content, any history, any paging ---------------------------------

CHANNELS = ["a", "b%", "c d"]
content = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["%", "%%", "%I", "%(x)s", "50% off", "\r\n", ""]
)

event_types = (
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=1, max_size=20)
    | st.sampled_from(["%", "ev%t", "%I", "message"])
).filter(lambda t: t != "stream-reset")


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(st.tuples(st.sampled_from(CHANNELS), content, event_types), max_size=40),
    seen=st.lists(st.integers(0, 40), min_size=3, max_size=3),
    trims=st.lists(st.integers(0, 40), min_size=3, max_size=3),
    max_events=st.integers(1, 8),
    max_bytes=st.integers(1024, 4096),
    escape=st.booleans(),
)
def test_pages_deliver_every_missed_event_once_in_order(
    history, seen, trims, max_events, max_bytes, escape
):
    memory = Memory()
    for channel, data, event_type in history:
        memory.add(channel, data, event_type)
    current = memory.current(CHANNELS)
    positions = {c: min(s, current[c]) for c, s in zip(CHANNELS, seen, strict=True)}
    for c, t in zip(CHANNELS, trims, strict=True):
        memory.trimmed[c] = min(t, current[c])
    expired = {c for c in CHANNELS if positions[c] < memory.trimmed[c]}
    expected = [
        e for c in CHANNELS if c not in expired for e in memory.events.get(c, [])[positions[c] :]
    ]
    expected.sort(key=lambda e: e.order)

    cursor = format_cursor(EPOCH, positions, CHANNELS)
    delivered = []
    reset_channels: list[str] = []
    for _ in range(100):
        result = plan(
            request(memory, CHANNELS, cursor=cursor, max_events=max_events, max_bytes=max_bytes),
            memory,
        )
        events = received(result, escape=escape)
        size = len(result.render(buildid.escape if escape else str).encode())
        assert result.events <= max_events
        assert size <= max_bytes or result.events == 1
        for event in events:
            if event.type == "stream-reset":
                reset_channels += json.loads(event.data)["channels"]
            else:
                delivered.append((event.type, event.data))
        if events:
            cursor = events[-1].last_event_id
        assert cursor == result.cursor
        if result.complete:
            break
    assert result.complete
    assert result.positions == current
    assert sorted(reset_channels) == sorted(expired)
    # Line breaks arrive as LF, as SSE defines (tested in test_sse.py).
    assert delivered == [
        (e.event_type, e.data.replace("\r\n", "\n").replace("\r", "\n")) for e in expected
    ]

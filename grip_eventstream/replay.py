"""The replay decision: where a stream resumes, what it must be told, and which page of
missed events its response carries. Pure: no Django import.

The view turns a request into a :class:`ReplayRequest` (which cursor text counts, Pushpin's
``Grip-Last`` for its own next-link requests) and a :class:`Replay` into a response. The
rules, in order:

1. Every reliable channel gets a position (the last seq the client has):
   the cursor's, else Pushpin's ``Grip-Last`` on a next link, else the channel's current
   seq for a channel new to the stream. A position that cannot be trusted is a *reset*:
   the channel resumes from its current seq and the client is told why
   (:data:`INVALID_CURSOR`, :data:`EPOCH_CHANGED`, :data:`UNKNOWN_POSITION`).
2. Missed events are read per channel as a bounded range ``position < seq <= current``
   on the ``(channel, seq)`` index, a chunk at a time, so the cost follows what was
   missed and never what is stored. Sequence numbers have no gaps, so when the first
   event after a position is not ``position + 1`` the client missed events that are no
   longer stored: an :data:`EXPIRED` reset.
3. Events of all channels are merged in commit order and rendered into one page, capped by
   count and by bytes (Pushpin refuses an instruct response over its size limit). A page
   always carries at least one event, so a replay always makes progress.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import sse
from .buildid import escaped_size
from .cursor import format_cursor, parse_cursor

INVALID_CURSOR = "invalid-cursor"
EPOCH_CHANGED = "epoch-changed"
UNKNOWN_POSITION = "unknown-position"
EXPIRED = "expired"
# The order in which reset notices are written, when several apply to one response.
RESET_REASONS = (INVALID_CURSOR, EPOCH_CHANGED, UNKNOWN_POSITION, EXPIRED)

# Rows read per query: a replay of 10 events is one query, one of 500 a few, and a page cut
# short by its byte budget never reads far past what it sends.
CHUNK = 100

# Pushpin's last ids are ours: decimal, bounded like cursor positions (str.isdigit would
# also accept "²" and 5000-digit strings that int() refuses).
_LAST_ID = re.compile(r"0|[1-9][0-9]{0,17}")


@dataclass(frozen=True)
class StoredEvent:
    channel: str
    seq: int
    event_type: str
    data: str
    order: int  # a total order across channels, consistent with commit order per channel


class EventHistory(Protocol):
    """Where a replay reads the events a client missed (the storage)."""

    def get_events(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events of ``channel`` with seq > ``after``, in seq order."""


@dataclass(frozen=True)
class ReplayRequest:
    epoch: str
    channels: Sequence[str]  # the stream's reliable channels, in cursor order
    current: Mapping[str, int]  # the last seq of each channel
    cursor: str | None = None  # the resume point the client (or a paged link) gave
    grip_last: Mapping[str, str] | None = None  # Pushpin's last ids, on its next links
    max_events: int = 500
    max_bytes: int = 64 * 1024
    id_only_tail: bool = False  # end a complete page with the cursor, for quiet streams


@dataclass
class Replay:
    epoch: str
    channels: Sequence[str]
    positions: dict[str, int]  # after this page
    resets: dict[str, list[str]] = field(default_factory=dict)  # reason -> channels
    blocks: list[tuple[str, str, str]] = field(default_factory=list)  # (data, type, id)
    events: int = 0
    complete: bool = True  # False: more missed events than this page carries
    tail: str = ""  # the id-only block that ends a complete page, if asked for

    @property
    def cursor(self) -> str:
        return format_cursor(self.epoch, self.positions, self.channels)

    def render(self, escape: Callable[[str], str] = str) -> str:
        """The page as text/event-stream. ``escape`` is applied to every text field:
        Pushpin runs its build-id filter over some response bodies, where "%" must be
        escaped (see buildid.escape). The page fits ``max_bytes`` either way.
        """
        body = "".join(
            sse.encode_event(escape(data), event=escape(event_type), id=id)
            for data, event_type, id in self.blocks
        )
        return body + self.tail


def resolve_positions(request: ReplayRequest) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Rule 1: each channel's position, and the channels reset (by reason)."""
    current = request.current
    positions: dict[str, int] = {}
    resets: dict[str, list[str]] = {}

    def reset(channel: str, reason: str) -> None:
        positions[channel] = current[channel]
        resets.setdefault(reason, []).append(channel)

    if request.cursor is None and request.grip_last is not None:
        for channel in request.channels:
            value = request.grip_last.get(channel, "")
            if _LAST_ID.fullmatch(value) and int(value) <= current[channel]:
                positions[channel] = int(value)
            else:
                reset(channel, UNKNOWN_POSITION)
        return positions, resets

    text = request.cursor
    cursor = parse_cursor(text) if text else None
    # A cursor without positions is never written for a stream with reliable channels.
    invalid = bool(text) and (cursor is None or not cursor.positions)
    for channel in request.channels:
        if invalid:
            reset(channel, INVALID_CURSOR)
        elif cursor is not None and cursor.epoch != request.epoch:
            reset(channel, EPOCH_CHANGED)
        else:
            position = cursor.position(channel) if cursor is not None else None
            if position is None:
                positions[channel] = current[channel]  # new to this stream: from now
            elif position > current[channel]:
                reset(channel, UNKNOWN_POSITION)
            else:
                positions[channel] = position
    return positions, resets


def plan(request: ReplayRequest, source: EventHistory) -> Replay:
    """Rules 1 to 3: the positions after this page, the resets, and the page's body."""
    positions, resets = resolve_positions(request)
    streams: list[Iterator[StoredEvent]] = []
    for channel in request.channels:
        if positions[channel] >= request.current[channel]:
            continue
        events = _read(source, channel, positions[channel], request.current[channel])
        first = next(events, None)
        if first is None or first.seq != positions[channel] + 1:
            positions[channel] = request.current[channel]
            resets.setdefault(EXPIRED, []).append(channel)
        else:
            streams.append(_prepend(first, events))

    replay = Replay(request.epoch, request.channels, positions, resets)
    size = 0
    for reason in RESET_REASONS:
        if reason in resets:
            data = json.dumps({"channels": resets[reason], "reason": reason})
            replay.blocks.append((data, "stream-reset", replay.cursor))
            size += escaped_size(data, "stream-reset", replay.cursor)
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda e: e.order)
    for event in merged:
        if replay.events >= request.max_events:
            replay.complete = False
            break
        before = replay.positions[event.channel]
        replay.positions[event.channel] = event.seq
        cursor = replay.cursor
        cost = escaped_size(event.data, event.event_type, cursor)
        if replay.events and size + cost > request.max_bytes:
            replay.positions[event.channel] = before
            replay.complete = False
            break
        replay.blocks.append((event.data, event.event_type, cursor))
        size += cost
        replay.events += 1
    if replay.complete and request.id_only_tail:
        replay.tail = sse.encode_id_only(replay.cursor)
    return replay


def _read(source: EventHistory, channel: str, after: int, until: int) -> Iterator[StoredEvent]:
    """The events of ``channel`` in ``after < seq <= until``, read a chunk at a time."""
    while after < until:
        events = source.get_events(channel, after, min(CHUNK, until - after))
        for event in events:
            if event.seq > until:
                return
            yield event
            after = event.seq
        if not events:
            return


def _prepend(first: StoredEvent, rest: Iterator[StoredEvent]) -> Iterator[StoredEvent]:
    yield first
    yield from rest

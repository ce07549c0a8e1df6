"""A ``text/event-stream`` parser that follows the WHATWG HTML standard, for tests.

Implements "Interpreting an event stream" (and the "dispatch the event" steps) of
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
for one connection, as a browser's ``EventSource`` would see it. Stdlib only.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass

__all__ = ["Event", "SSEParser"]

# "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character
# pair, a single U+000A LINE FEED (LF) character, or a single U+000D CARRIAGE RETURN (CR)
# character." Not str.splitlines(): that also splits on VT, FF, U+2028 and others.
_LINE_END = re.compile(r"\r\n|\r|\n")
# "If the field value consists of only ASCII digits" (str.isdigit() would accept "²" and "٣").
_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Event:
    """A dispatched ``MessageEvent``: what ``EventSource`` listeners receive."""

    type: str  # "message" when the block had no (or an empty) event field
    data: str
    last_event_id: str  # the source's last event ID string when this event was dispatched


class SSEParser:
    """Incremental parser. Feed it chunks split anywhere; it returns the events they complete."""

    def __init__(self, last_event_id: str = "") -> None:
        # The EventSource's "last event ID string": set from the buffer on each dispatch only.
        # An EventSource keeps it (and its buffer) across reconnections: pass it on.
        self.last_event_id = last_event_id
        # The "reconnection time" in milliseconds; None until a valid retry field is seen.
        self.retry: int | None = None
        # "UTF-8 decode": replacement characters for invalid input. The BOM is handled below
        # rather than with "utf-8-sig" so that str chunks get the same treatment as bytes.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # has the first character of the stream been seen?
        self._partial_line = ""  # text after the last line end; never contains CR or LF
        self._skip_lf = False  # the last chunk ended with CR: an LF next completes that CRLF
        # The "data buffer" as its lines: the buffer is empty exactly when there are no lines,
        # and "\n".join(lines) is the buffer with its final LF removed.
        self._data_lines: list[str] = []
        self._event_type = ""  # the "event type buffer"
        self._id_buffer = last_event_id  # the "last event ID buffer"
        self._id_updates: list[str] = []

    def id_updates(self) -> list[str]:
        """Every value ``last_event_id`` changed to, in order (id-only blocks show up here)."""
        return list(self._id_updates)

    def feed(self, chunk: str | bytes) -> list[Event]:
        """Parse the next piece of the stream; return the events dispatched by it, in order.

        An event whose closing blank line has not arrived yet is kept pending; if the stream
        ends there it is never dispatched, as the spec requires.
        """
        if isinstance(chunk, str):
            # Bytes left mid-sequence by an earlier bytes chunk can't be completed by text.
            text = self._decoder.decode(b"", final=True) + chunk
        else:
            text = self._decoder.decode(chunk)
        if not text:
            # E.g. only part of a multi-byte character: nothing to do, and a pending CR must
            # still be able to meet its LF.
            return []
        if not self._started:
            self._started = True
            # "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."
            # Only at the very start of the stream, and only one.
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]

        buffer = self._partial_line + text
        events: list[Event] = []
        start = 0
        # The partial line holds no line end, so scanning can start where the new text does.
        for match in _LINE_END.finditer(buffer, len(self._partial_line)):
            event = self._process_line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._partial_line = buffer[start:]
        # A CR at the very end has already ended its line; remember to swallow the LF of a
        # CRLF that was split between chunks, so it doesn't count as a second (blank) line.
        self._skip_lf = start == len(buffer) and buffer.endswith("\r")
        return events

    def _process_line(self, line: str) -> Event | None:
        # "If the line is empty (a blank line): Dispatch the event."
        if not line:
            return self._dispatch()
        # "If the line starts with a U+003A COLON character (:): Ignore the line."
        if line[0] == ":":
            return None
        # "If the line contains a U+003A COLON character": field is before the first colon,
        # value after it, minus one leading U+0020 SPACE if there is one. "Otherwise": the
        # whole line is the field name and the value is empty (partition gives exactly that).
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._process_field(field, value)
        return None

    def _process_field(self, field: str, value: str) -> None:
        # Field names are case-sensitive: "Data" is an unknown field.
        if field == "event":
            self._event_type = value
        elif field == "data":
            # "Append the field value to the data buffer, then append a single LF."
            self._data_lines.append(value)
        elif field == "id":
            # "If the field value does not contain U+0000 NULL, then set the last event ID
            # buffer to the field value. Otherwise, ignore the field." An empty value resets it.
            if "\x00" not in value:
                self._id_buffer = value
        elif field == "retry" and _ASCII_DIGITS.fullmatch(value):
            # "If the field value consists of only ASCII digits, then interpret the field value
            # as an integer in base ten". int() refuses more digits than
            # sys.get_int_max_str_digits(): absurd, and arbitrary input must not make us raise.
            with contextlib.suppress(ValueError):
                self.retry = int(value)
        # "Otherwise: The field is ignored."

    def _dispatch(self) -> Event | None:
        # Step 1: set the source's last event ID string from the buffer, which is not reset.
        # This happens even for a block without data, so "id: X" + blank line updates it.
        if self._id_buffer != self.last_event_id:
            self._id_updates.append(self._id_buffer)
        self.last_event_id = self._id_buffer
        # Step 2: an empty data buffer dispatches nothing; reset data and event type buffers.
        if not self._data_lines:
            self._event_type = ""
            return None
        # Steps 3-6: drop the final LF (join does), type "message" unless the event type
        # buffer is non-empty, lastEventId from the source's last event ID string.
        event = Event(
            type=self._event_type or "message",
            data="\n".join(self._data_lines),
            last_event_id=self.last_event_id,
        )
        # Step 7: reset the data and event type buffers.
        self._data_lines = []
        self._event_type = ""
        return event

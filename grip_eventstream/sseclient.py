"""An SSE client for tests: a WHATWG-conformant parser and a stream reader with timeouts.

``SSEParser`` implements "Interpreting an event stream" (and the "dispatch the event"
steps) of
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
for one connection, as a browser's ``EventSource`` would see it. ``EventStream`` opens a
stream (through Pushpin) and waits, with a timeout, for its events or for its text as
received; the test kit (``grip_eventstream.testing``) hands it out. No Django import.

Written here rather than taken from an SSE client library: the ones on PyPI block without a
timeout, or treat lines and ids in ways browsers do not (``str.splitlines``, ids with NUL),
and a test of a stream must see exactly what a browser would.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests

__all__ = ["Event", "EventStream", "SSEParser", "StreamEnded"]

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

    def json(self) -> Any:
        return json.loads(self.data)


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


class StreamEnded(AssertionError):
    """The stream ended (or could not be read) before the events waited for arrived."""


class EventStream:
    """One stream opened with ``GET url``, read in a background thread until :meth:`close`.

    The response's status and headers are available at once (``status``, ``headers``); a
    stream that is not ``200 text/event-stream`` is still returned, so that a test can assert
    on a refusal. Events are parsed as a browser would (``retry``, ids, comments), and
    ``events`` keeps every one received; :meth:`text` is the body as received (comments,
    fields and line ends included, or a refusal's message), for tests of the bytes on the
    wire. It does not reconnect: an ended stream is a fact a test may want to see (``ended``).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        last_event_id: str = "",
        timeout: float = 10,
    ) -> None:
        sent = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            sent["Last-Event-ID"] = last_event_id
        sent.update(headers or {})
        self.url = url
        self._response = requests.get(
            url, headers=sent, cookies=dict(cookies or {}), stream=True, timeout=timeout
        )
        self.status: int = self._response.status_code
        self.headers: Mapping[str, str] = self._response.headers
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._parser = SSEParser(last_event_id)
        # The body as text (text()), decoded as the parser decodes it but by a decoder of
        # its own: the parser drops a leading BOM and keeps no text once parsed.
        self._text = ""
        self._text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._taken = 0
        self._ended = False
        self._closing = False
        self._cond = threading.Condition()
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        self._sock = sock if isinstance(sock, socket.socket) else None
        if self._sock is not None:
            # requests' timeout covered the headers; a quiet stream may wait longer for its
            # body, and close() interrupts a blocked read by shutting the socket down.
            self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, name=f"EventStream {url}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        raw = self._response.raw
        # read1 (urllib3 2.3+) returns whatever has arrived; iter_content waits for a whole
        # HTTP chunk, which is the same through Pushpin (it sends chunked responses).
        read1 = getattr(raw, "read1", None)
        chunks: Iterator[bytes] = (
            iter(lambda: read1(65536, decode_content=True), b"")
            if read1 is not None
            else self._response.iter_content(chunk_size=None)
        )
        try:
            for chunk in chunks:
                with self._cond:
                    self._text += self._text_decoder.decode(chunk)
                    self.events += self._parser.feed(chunk)
                    self._cond.notify_all()
        except Exception as exc:  # the test is told through wait(); nothing to raise here
            if not self._closing:
                self.error = exc
        finally:
            with self._cond:
                # An incomplete character at the very end becomes U+FFFD.
                self._text += self._text_decoder.decode(b"", final=True)
                self._ended = True
                self._cond.notify_all()

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended

    @property
    def last_event_id(self) -> str:
        """The id a browser would send as ``Last-Event-ID`` if it reconnected now."""
        with self._cond:
            return self._parser.last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection time (ms) the server set with ``retry:``, if any."""
        with self._cond:
            return self._parser.retry

    def wait(self, count: int = 1, timeout: float = 5) -> list[Event]:
        """The next ``count`` events not returned before, waiting up to ``timeout`` seconds.

        Raises :class:`StreamEnded` if the stream ends first, ``TimeoutError`` if they do not
        arrive in time; both say what did arrive.
        """
        with self._cond:
            self._until(
                lambda: len(self.events) - self._taken >= count,
                timeout,
                timed_out=lambda: (
                    f"{len(self.events) - self._taken} of {count} events from {self.url} "
                    f"within {timeout:g} s: {self.events[self._taken :]!r}"
                ),
                ended=lambda: (
                    f"the stream {self.url} ended{self._reason()} after "
                    f"{len(self.events) - self._taken} of {count} events: "
                    f"{self.events[self._taken :]!r}"
                ),
            )
            taken = self.events[self._taken : self._taken + count]
            self._taken += count
            return taken

    def next(self, timeout: float = 5) -> Event:
        """The next event (see :meth:`wait`)."""
        return self.wait(1, timeout)[0]

    def wait_ended(self, timeout: float = 5) -> list[Event]:
        """Wait until the server ends the stream; return the events not returned before."""
        with self._cond:
            self._until(
                lambda: self._ended,
                timeout,
                timed_out=lambda: f"the stream {self.url} was still open after {timeout:g} s",
            )
            taken = self.events[self._taken :]
            self._taken = len(self.events)
            return taken

    def text(self) -> str:
        """The body received so far, decoded as UTF-8 (invalid bytes become U+FFFD).

        All of it, comments and line ends included: what :meth:`wait` does not show. A
        character cut in two by the network is held back until its end arrives.
        """
        with self._cond:
            return self._text

    def wait_text(
        self, predicate: Callable[[str], bool], timeout: float = 5, what: str = "the text"
    ) -> str:
        """Wait until ``predicate(text)`` holds for the body received so far; return that text.

        ``predicate`` sees all of it each time (see :meth:`text`), independently of the
        events :meth:`wait` has returned. Raises :class:`StreamEnded` if the stream ends first,
        ``TimeoutError`` if it does not hold in time; both say ``what`` was awaited and show
        the text received.
        """
        with self._cond:
            self._until(
                lambda: predicate(self._text),
                timeout,
                timed_out=lambda: (
                    f"no {what} from {self.url} within {timeout:g} s; received: {self._text!r}"
                ),
                ended=lambda: (
                    f"the stream {self.url} ended{self._reason()} before {what}; "
                    f"received: {self._text!r}"
                ),
            )
            return self._text

    def wait_contains(self, needle: str, timeout: float = 5) -> str:
        """Wait until the body received contains ``needle``; return it (see :meth:`wait_text`)."""
        return self.wait_text(lambda text: needle in text, timeout, repr(needle))

    def _until(
        self,
        done: Callable[[], bool],
        timeout: float,
        *,
        timed_out: Callable[[], str],
        ended: Callable[[], str] | None = None,
    ) -> None:
        """With the lock held, wait until ``done()``: raise ``TimeoutError(timed_out())`` after
        ``timeout`` s, or, unless ``ended`` is None, ``StreamEnded(ended())`` once the stream
        has ended without it."""
        deadline = time.monotonic() + timeout
        while not done():
            if ended is not None and self._ended:
                raise StreamEnded(ended())
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(timed_out())
            self._cond.wait(left)

    def _reason(self) -> str:
        return f" ({self.error!r})" if self.error else ""

    def close(self) -> None:
        """Disconnect (idempotent)."""
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

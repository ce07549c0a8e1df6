"""Server-Sent Events framing: build ``text/event-stream`` text. Pure, stdlib only.

Writes what the WHATWG HTML standard's parser reads back unchanged, see "Interpreting an event
stream": https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

* ``data`` is split on CRLF, lone CR and lone LF (the parser ends a line at all three) and written
  as one ``data: `` line per piece. The client joins them with LF, so line breaks in ``data``
  arrive as LF whatever form they were sent in.
* Every field is written ``name: value``. The parser strips exactly one space after the colon,
  so a value that starts with a space survives.
* ``event`` and ``id`` may not contain CR, LF or NUL: a line break would let the value inject
  other fields, and browsers ignore an ``id`` that contains NUL.
* ``id=None`` writes no id line and the client keeps its last event id. ``id=""`` writes an
  empty ``id: `` line, which resets the client's last event id (no ``Last-Event-ID`` on its
  next reconnect).
* The stream is UTF-8, so a lone surrogate in any string is rejected rather than mangled.

The caller encodes the result as UTF-8. Prefer ids made of ``[A-Za-z0-9._~:-]``: browsers may send
a CORS preflight for other ``Last-Event-ID`` values.
"""

from __future__ import annotations

import re

__all__ = ["encode_comment", "encode_event", "encode_id_only", "encode_retry"]

# CRLF first, so that it counts as one line break and not as a CR then an LF.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELD_FORBIDDEN = re.compile(r"[\r\n\x00]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CHAR_NAMES = {"\r": "CR ('\\r')", "\n": "LF ('\\n')", "\x00": "NUL ('\\x00')"}


def _check_text(field: str, value: str) -> None:
    # Catches the common mistake of passing an int id, which would be written as its repr.
    if not isinstance(value, str):
        raise TypeError(
            f"SSE {field} must be a str, got {type(value).__name__}; convert it with str() first"
        )
    bad = _SURROGATE.search(value)
    if bad:
        raise ValueError(
            f"SSE {field} contains a lone surrogate U+{ord(bad.group()):04X} at index "
            f"{bad.start()}; the stream is UTF-8 and cannot carry it: fix how the text was "
            "decoded (for example decode with errors='replace')"
        )


def _check_field(field: str, value: str) -> None:
    _check_text(field, value)
    bad = _FIELD_FORBIDDEN.search(value)
    if bad:
        raise ValueError(
            f"SSE {field} must not contain {_CHAR_NAMES[bad.group()]} (found at index "
            f"{bad.start()}): it would end the {field} line early or be ignored by the browser; "
            f"remove line breaks and NUL from the {field} before sending"
        )


def _lines(prefix: str, text: str) -> str:
    return "".join(f"{prefix}{piece}\n" for piece in _LINE_BREAK.split(text))


def encode_event(
    data: str, event: str | None = None, id: str | None = None, retry: int | None = None
) -> str:
    """Return one complete event block: ``event``, ``id``, ``retry``, ``data`` lines, blank line.

    ``event`` None, "" or "message" gives the default type, "message", with no event line.
    ``id`` None leaves the client's last event id alone; ``id=""`` resets it. ``retry`` is
    the reconnection delay in milliseconds. Empty ``data`` still dispatches an event (with
    empty data): one ``data: `` line is written.
    """
    _check_text("data", data)
    lines: list[str] = []
    if event is not None:
        _check_field("event", event)
        # "message" is the type of an event without an event line; htmx 4 swaps only those.
        if event and event != "message":
            lines.append(f"event: {event}\n")
    if id is not None:
        _check_field("id", id)
        lines.append(f"id: {id}\n")
    if retry is not None:
        # bool is an int subclass, but retry=True is a bug, not one millisecond.
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise TypeError(
                f"SSE retry must be an int number of milliseconds, got {type(retry).__name__}"
            )
        if retry < 0:
            raise ValueError(f"SSE retry must be >= 0 milliseconds, got {retry}")
        # int() drops any int subclass's custom __str__: the parser accepts ASCII digits only.
        lines.append(f"retry: {int(retry)}\n")
    lines.append(_lines("data: ", data))
    return "".join(lines) + "\n"


def encode_comment(text: str = "") -> str:
    """Return comment lines (``:`` + text, split like data): keep-alives and padding.

    Comments fire nothing in the browser, unlike a named keep-alive event. No blank line is
    added: write comments between event blocks, never inside one.
    """
    _check_text("comment", text)
    return _lines(":", text)


def encode_retry(milliseconds: int) -> str:
    """Return ``retry: N`` and a blank line: the client's reconnection delay, no event."""
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        raise ValueError(f"SSE retry must be an int >= 0 milliseconds, got {milliseconds!r}")
    return f"retry: {milliseconds}\n\n"


def encode_id_only(id: str) -> str:
    """Return ``id: X`` and a blank line: sets the client's last event id, fires no event.

    Hands a quiet stream its resume point. ``id=""`` resets the last event id.
    """
    _check_field("id", id)
    return f"id: {id}\n\n"

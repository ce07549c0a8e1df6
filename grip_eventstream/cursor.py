"""Stream cursors: the SSE ``id`` a client sees and sends back as ``Last-Event-ID``.

A cursor records, for every reliable channel of a stream, the sequence number of the last
event the client received, plus the epoch of the database the numbers come from::

    k3x9a2q.mf6ua3-42.q2ad7b-7
    ^epoch  ^channel key-position ...

A live event's id ends with its own channel's part once more (see
:func:`buildid.live_id`); when a channel appears twice, the later part wins.

Only ``[a-z0-9.-]``: no CORS preflight is needed to send it cross-origin, and channel names
of any shape (``room 1``, unicode) are represented by a short hash, never quoted.
Pure: no Django import.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_CURSOR_LENGTH = 1024
_EPOCH = re.compile(r"[a-z2-7]{7}")
_PART = re.compile(r"([a-z2-7]{6})-(0|[1-9][0-9]{0,17})")


def new_epoch() -> str:
    """A fresh random epoch: 7 base32 characters (35 bits)."""
    return base64.b32encode(secrets.token_bytes(5)).decode("ascii").lower()[:7]


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def epoch_to_int(epoch: str) -> int:
    """An epoch as a number below 2**35, for storage in an integer column."""
    value = 0
    for char in epoch:
        value = value * 32 + _BASE32.index(char)
    return value


def epoch_from_int(value: int) -> str:
    """Inverse of :func:`epoch_to_int`."""
    chars = []
    for _ in range(7):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return "".join(reversed(chars))


@functools.lru_cache(maxsize=4096)  # every request computes its channels' keys, twice
def channel_key(channel: str) -> str:
    """Six base32 characters (30 bits) identifying a channel inside one cursor."""
    digest = hashlib.sha256(channel.encode("utf-8")).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()[:6]


@dataclass(frozen=True)
class Cursor:
    epoch: str
    positions: dict[str, int]  # channel key -> last sequence number received

    def position(self, channel: str) -> int | None:
        return self.positions.get(channel_key(channel))


def format_cursor(epoch: str, positions: Mapping[str, int], order: Sequence[str]) -> str:
    """The cursor for ``positions`` ({channel: seq}), channels written in ``order``."""
    parts = [epoch]
    parts.extend(f"{channel_key(channel)}-{positions[channel]}" for channel in order)
    return ".".join(parts)


def parse_cursor(text: str | None) -> Cursor | None:
    """Parse a cursor; None for anything that is not one (never raises)."""
    if not text or len(text) > MAX_CURSOR_LENGTH:
        return None
    epoch, dot, rest = text.partition(".")
    if not _EPOCH.fullmatch(epoch) or (dot and not rest):
        return None
    positions: dict[str, int] = {}
    if rest:
        for part in rest.split("."):
            match = _PART.fullmatch(part)
            if match is None:
                return None
            # A repeated channel is a live event's own part (buildid.live_id): the later
            # one wins.
            positions[match.group(1)] = int(match.group(2))
    return Cursor(epoch, positions)

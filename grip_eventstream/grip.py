"""GRIP protocol pieces: channel names as Pushpin sees them, hold headers, Grip-Last.

Pure: no Django import. Header grammar and behaviour verified against Pushpin 1.36.
"""

from __future__ import annotations

import base64
import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from gripcontrol import Channel, create_grip_channel_header

from .exceptions import InvalidChannel

MAX_CHANNEL_LENGTH = 128
# The content filter of reliable channels (everything about it: buildid.py).
BUILD_ID = "build-id"

# Names made only of these characters go to Pushpin unchanged. Everything else is encoded,
# because Pushpin parses Grip-Channel / Grip-Last as header parameters (',', ';', '"', '='
# and spaces are syntax), reads header bytes as UTF-8 while WSGI writes Latin-1 (non-ASCII
# names arrive mangled), and the build-id filter's id format treats '%', ')' and '\' as
# syntax. '~' is left out of the set so that the encoded form, which starts with '~', can
# never collide with a plain name.
_PLAIN_CHANNEL = re.compile(r"[A-Za-z0-9_.:@/+!-]+")
_ENCODED_PREFIX = "~"

# ":\n\n" (an SSE comment) in base64. Base64 rather than cstring because gripcontrol's and
# Pushpin's cstring escaping disagree on backslashes, and a length divisible by three gives
# a value without '=' padding, which the header-parameter parser would split on.
_KEEP_ALIVE_B64 = base64.b64encode(b":\n\n").decode("ascii")


def validate_channel(name: object) -> str:
    """Return ``name`` if it can be used as a channel name, else raise InvalidChannel."""
    if not isinstance(name, str):
        raise InvalidChannel(f"channel names are strings, got {type(name).__name__}")
    if not name:
        raise InvalidChannel("channel name is empty")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(
            f"channel name is {len(name)} characters long; the limit is {MAX_CHANNEL_LENGTH}"
        )
    if _PLAIN_CHANNEL.fullmatch(name):
        return name  # printable ASCII only: no control character to look for
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidChannel(
                f"channel name {name[:40]!r} contains the control character U+{ord(char):04X}"
            )
    return name


@functools.lru_cache(maxsize=4096)  # every request and every publish asks, of few names
def pushpin_channel(name: str) -> str:
    """The name Pushpin uses for a channel: the name itself, or an encoded form."""
    if _PLAIN_CHANNEL.fullmatch(name):
        return name
    encoded = base64.b32encode(name.encode("utf-8")).decode("ascii").rstrip("=").lower()
    return _ENCODED_PREFIX + encoded


def channel_from_pushpin(pushpin_name: str) -> str | None:
    """Inverse of :func:`pushpin_channel`; None for a name it cannot have produced."""
    if not pushpin_name.startswith(_ENCODED_PREFIX):
        return pushpin_name if _PLAIN_CHANNEL.fullmatch(pushpin_name) else None
    encoded = pushpin_name[len(_ENCODED_PREFIX) :].upper()
    try:
        name = base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    # Only the form pushpin_channel writes: "~" alone, upper case or a plain name encoded
    # would otherwise name a channel Pushpin knows under another name.
    return name if name and pushpin_channel(name) == pushpin_name else None


# Reserved channels (one per authenticated user, used to reach all of that user's streams)
# start with "~~": plain names have no "~", and encoded names have exactly one.
_CONTROL_PREFIX = "~~u."


# A reserved channel, never published to, that every stream without stored channels holds
# with a prev-id. Pushpin sends a Grip-Last header for each channel with a prev-id on its
# own next-link requests and strips any Grip-Last a client sends, so with it, a next-link
# request without Grip-Last is provably not Pushpin's: someone replaying a link read from
# an access log.
LINK_PROOF_CHANNEL = "~~link"


def user_control_channel(user_pk: object) -> str:
    """The Pushpin channel every stream of the user with this primary key subscribes to."""
    return _CONTROL_PREFIX + user_meta(user_pk)


@dataclass(frozen=True)
class Subscription:
    """One channel of a stream hold. ``prev_id`` is set for reliable channels only.

    ``raw`` marks a reserved channel whose name goes to Pushpin as it is.
    """

    channel: str
    prev_id: str | None = None
    raw: bool = False


def hold_headers(
    subscriptions: Sequence[Subscription],
    *,
    keep_alive: int,
    id_format: str | None = None,
    user: str | None = None,
    link: str | None = None,
    link_timeout: int = 0,
) -> dict[str, str]:
    """Response headers that make Pushpin hold the request open as a stream.

    ``user`` is the stream's :func:`user_meta` value, for publishes that skip users.
    """
    channels = []
    for sub in subscriptions:
        name = sub.channel if sub.raw else pushpin_channel(sub.channel)
        channel = Channel(name, sub.prev_id)
        # Reliable channels' publishes carry the build-id content filter, which the
        # subscription must list; skip-users drops publishes whose skip_users meta names
        # this stream's user. Reserved (raw) channels take neither.
        if not sub.raw:
            if sub.prev_id is not None:
                channel.filters.append(BUILD_ID)  # see buildid.py
            channel.filters.append("skip-users")
        channels.append(channel)
    headers = {
        "Grip-Hold": "stream",
        "Grip-Channel": create_grip_channel_header(channels),
    }
    if keep_alive > 0:
        headers["Grip-Keep-Alive"] = f"{_KEEP_ALIVE_B64}; format=base64; timeout={keep_alive}"
    meta = []
    if id_format is not None:
        meta.append(f'id_format="{id_format}"')
    if user is not None:
        meta.append(f'user="{user}"')
    if meta:
        headers["Grip-Set-Meta"] = ", ".join(meta)
    if link is not None:
        headers["Grip-Link"] = link_header(link, link_timeout)
    return headers


@functools.lru_cache(maxsize=1024)  # a stream's path, on each of its requests
def link_path(path: str) -> str:
    """A decoded URL path as it can stand in a ``Grip-Link`` header.

    Pushpin splits that header's values on ``,`` and its parameters on ``;``, so both are
    %-encoded along with everything a URL path may not carry raw (spaces, quotes, non-ASCII,
    ``%`` itself); Django decodes them again when Pushpin requests the link.
    """
    return quote(path, safe="/:@&+$-_.!~*'()=")


@functools.lru_cache(maxsize=64)  # every request; a proxy sends the same value each time
def proxy_features(header: str | None) -> frozenset[str]:
    """The features a ``Grip-Feature`` request header lists (Pushpin sends it on every request)."""
    if not header:
        return frozenset()
    return frozenset(part.strip() for part in header.split(",") if part.strip())


# The Grip-Feature a proxy lists when it sends gone notices (Pushpin 1.41): it then also
# filters a next-link response with that response's own hold (buildid.body_filtered).
GONE_FEATURE = "link:gone"


def sends_gone_notices(features: frozenset[str]) -> bool:
    """Whether the proxy POSTs a stream's ``rel=gone`` link when the stream ends."""
    return GONE_FEATURE in features


def link_header(url: str, timeout: int = 0) -> str:
    value = f"<{url}>; rel=next"
    if timeout > 0:
        value += f"; timeout={timeout}"
    return value


def parse_grip_last(values: Iterable[str]) -> dict[str, str]:
    """Parse ``Grip-Last: CHANNEL; last-id=ID`` header values into {channel: last id}.

    Pushpin sends one header per channel; WSGI joins repeated headers with commas, which
    cannot occur inside channel names as :func:`pushpin_channel` writes them. Entries that
    do not parse, or name channels this library cannot have created, are skipped.
    """
    result: dict[str, str] = {}
    for value in values:
        for entry in value.split(","):
            name, _, params = entry.partition(";")
            channel = channel_from_pushpin(name.strip())
            if channel is None:
                continue
            for param in params.split(";"):
                key, _, last_id = param.partition("=")
                if key.strip() == "last-id":
                    result[channel] = last_id.strip().strip('"')
    return result


def http_stream_item(
    channel: str,
    content: str,
    *,
    item_id: str | None = None,
    prev_id: str | None = None,
    content_filters: Sequence[str] = (),
    skip_users: str | None = None,
) -> dict[str, object]:
    """One item of Pushpin's publish API for the http-stream transport.

    ``skip_users``: comma-separated :func:`user_meta` values whose streams skip the item.
    """
    stream: dict[str, object] = {"content": content}
    if content_filters:
        # Pushpin ends a stream whose subscription's content filters differ from a
        # publish's list; skip-users is not a content filter: the subscription's runs on
        # every publish, reading the publish's skip_users meta.
        stream["content-filters"] = list(content_filters)
    item: dict[str, object] = {
        "channel": pushpin_channel(channel),
        "formats": {"http-stream": stream},
    }
    # Strings only: Pushpin rejects integer ids.
    if item_id is not None:
        item["id"] = item_id
    if prev_id is not None:
        item["prev-id"] = prev_id
    if skip_users:
        item["meta"] = {"skip_users": skip_users}
    return item


def user_meta(user_pk: object) -> str:
    """A user's value in Pushpin's ``user`` meta and ``skip_users`` lists.

    Encoded, because those lists are comma-separated and header values are quoted, while a
    primary key may be any string.
    """
    return base64.b32encode(str(user_pk).encode("utf-8")).decode("ascii").rstrip("=").lower()


def hint_item(pushpin_name: str) -> dict[str, object]:
    """An item that makes Pushpin fetch the next link of every stream on the channel now.

    A hint carries no id: with ids it would announce a lost event, not ask for a check.
    """
    return {"channel": pushpin_name, "formats": {"http-stream": {"action": "hint"}}}

"""The public API: send_event, get_current_event_id, channel_permission_changed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from . import grip, sse
from .conf import conf
from .cursor import format_cursor
from .exceptions import PublishError
from .registry import get_channel_manager, get_publisher, get_storage
from .replay import escaped_size

logger = logging.getLogger("grip_eventstream")

MAX_EVENT_TYPE_LENGTH = 255


def send_event(channel: str, event_type: str, data: Any, json_encode: bool = True) -> None:
    """Send an event to every subscriber of ``channel``, from any process.

    ``data`` is encoded with Django's ``DjangoJSONEncoder`` (dates, decimals, UUIDs, lazy
    strings), or sent as is when ``json_encode`` is False (it must then be a str).

    With storage enabled and the channel reliable, the event is stored first, in the
    caller's transaction when there is one, and published only after that transaction
    commits; a rollback publishes nothing. Without a transaction it is published at once.

    Raises ``TypeError`` for data that cannot be encoded and ``ValueError`` for a bad
    channel name or event type (nothing is stored or published then), and
    ``PublishError`` when a GRIP proxy cannot be reached within
    ``EVENTSTREAM_PUBLISH_TIMEOUT`` (unless ``EVENTSTREAM_PUBLISH_ERRORS = "log"``).
    """
    grip.validate_channel(channel)
    _validate_event_type(event_type)
    text = _encode_data(data, json_encode, channel, event_type)
    _check_size(text, channel, event_type)

    storage = get_storage()
    manager = get_channel_manager()
    if storage is None or not manager.is_channel_reliable(channel):
        content = sse.encode_event(text, event=event_type)
        _publish(grip.http_stream_item(channel, content), channel)
        return

    stored = storage.append_event(channel, event_type, text, manager.get_channel_ttl(channel))
    # "%I" is replaced by Pushpin's build-id filter with the stream's own cursor (every
    # subscriber's stream has its own set of channels); so every other "%" is escaped.
    content = sse.encode_event(
        grip.escape_for_filter(text), event=grip.escape_for_filter(event_type), id="%I"
    )
    item = grip.http_stream_item(
        channel,
        content,
        item_id=str(stored.seq),
        prev_id=str(stored.seq - 1),
        build_id=True,
    )
    if transaction.get_connection(storage.using).in_atomic_block:
        transaction.on_commit(lambda: _publish(item, channel), using=storage.using)
    else:
        _publish(item, channel)


def get_current_event_id(channels: Iterable[str]) -> str:
    """The cursor a client would hold had it received every event sent so far on ``channels``.

    Render it into a page and open ``EventSource('/events/?lastEventId=' + cursor)`` so
    that nothing sent between the render and the connection is missed. Empty when none
    of the channels is stored (no storage, or unreliable channels).
    """
    storage = get_storage()
    manager = get_channel_manager()
    names = sorted({grip.validate_channel(c) for c in channels})
    reliable = [c for c in names if storage is not None and manager.is_channel_reliable(c)]
    if storage is None or not reliable:
        return ""
    return format_cursor(storage.get_epoch(), storage.get_current_ids(reliable), reliable)


def channel_permission_changed(user: AbstractBaseUser, channel: str) -> None:
    """Call after changing whether ``user`` may read ``channel``; works from any process.

    When the channel manager's ``can_read_channel(user, channel)`` now says no, every open
    stream of that user that carries the channel receives a ``stream-error`` event (JSON data
    ``{"condition": "forbidden", "text": ..., "channels": [...]}``) and is closed within
    about a second; the browser's reconnect is then refused with 403. The user's other
    streams, and other users' streams, continue untouched.

    How: each stream of an authenticated user also subscribes to a reserved channel of that
    user; this publishes a hint there, which makes Pushpin fetch each such stream's next
    link at once, and the next-link view checks the permissions of every channel again.
    """
    grip.validate_channel(channel)
    if get_channel_manager().can_read_channel(user, channel):
        return
    _publish(grip.hint_item(grip.user_control_channel(user.pk)), channel)


def _validate_event_type(event_type: object) -> None:
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise ValueError(f"event_type is longer than {MAX_EVENT_TYPE_LENGTH} characters")
    # sse.encode_event rejects CR, LF and NUL; checked here so nothing is stored first.
    sse.encode_event("", event=event_type)


def _check_size(text: str, channel: str, event_type: str) -> None:
    # An event that no replay page can carry would break every resume after it: refused
    # before anything is stored.
    size = escaped_size(text, event_type, None)
    limit = conf.EVENTSTREAM_MAX_EVENT_BYTES
    if size > limit:
        raise ValueError(
            f"send_event({channel!r}, {event_type!r}, ...): the event is {size} bytes as "
            f"sent (SSE framing, '%' doubled for Pushpin), over the limit of {limit} bytes "
            "(EVENTSTREAM_MAX_EVENT_BYTES). Send a smaller event, such as an id the client "
            "fetches the content by, or raise the limit (see the README: Pushpin refuses "
            "replay responses over about 100 KB)."
        )


def _encode_data(data: Any, json_encode: bool, channel: str, event_type: str) -> str:
    if not json_encode:
        if not isinstance(data, str):
            raise TypeError(
                f"send_event({channel!r}, {event_type!r}, ...) with json_encode=False needs "
                f"str data, got {type(data).__name__}"
            )
        return data
    try:
        return json.dumps(data, cls=DjangoJSONEncoder)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"send_event({channel!r}, {event_type!r}, ...) cannot encode its data as JSON: "
            f"{exc}. Pass JSON-serialisable data (DjangoJSONEncoder also handles dates, "
            "decimals and UUIDs), or a str with json_encode=False."
        ) from exc


def _publish(item: dict[str, object], channel: str) -> None:
    try:
        get_publisher().publish([item], channel=channel)
    except PublishError as exc:
        if conf.EVENTSTREAM_PUBLISH_ERRORS == "log":
            # The message names every failed proxy and why; a traceback would add nothing.
            logger.error("send_event could not publish on channel %r: %s", channel, exc)
            return
        raise

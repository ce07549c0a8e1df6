"""The public API: send_event(s), get_current_event_id, channel_permission_changed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from . import buildid, grip, sse
from .conf import conf
from .cursor import format_cursor
from .exceptions import PublishError
from .registry import (
    get_background_publisher,
    get_channel_manager,
    get_publisher,
    get_storage,
    stored_channels,
)
from .replay import StoredEvent

logger = logging.getLogger("grip_eventstream")

MAX_EVENT_TYPE_LENGTH = 255


def send_event(
    channel: str,
    event_type: str,
    data: Any,
    skip_user_ids: Iterable[object] | None = None,
    async_publish: bool = False,
    json_encode: bool = True,
) -> None:
    """Send an event to every subscriber of ``channel``, from any process.

    The parameters are django-eventstream's, in its order. ``data`` is encoded with
    Django's ``DjangoJSONEncoder`` (dates, decimals, UUIDs, lazy strings), or sent as is when
    ``json_encode`` is False (it must then be a str). The streams of the users whose
    primary keys are in ``skip_user_ids`` do not receive the event live (a replay after a
    reconnect still includes it: stored events are for every reader of the channel).

    With storage enabled and the channel reliable, the event is stored first, in the
    caller's transaction when there is one, and published only after that transaction
    commits; a rollback publishes nothing. Without a transaction it is published at once.

    ``async_publish=False`` (the default) publishes before returning and raises
    ``PublishError`` when a GRIP proxy cannot be reached within
    ``EVENTSTREAM_PUBLISH_TIMEOUT`` (unless ``EVENTSTREAM_PUBLISH_ERRORS = "log"``).
    ``async_publish=True`` hands the publish to this process's background publisher and
    returns at once; failures are logged, and stored events then reach their subscribers
    through gap repair.

    Raises, with nothing stored or published:

    * ``TypeError`` for data that cannot be encoded;
    * ``ValueError`` for a bad channel name or event type, data with a NUL character
      (``"\\x00"``: PostgreSQL cannot store it; JSON-encoded data carries it as
      ``\\u0000``), or an event over ``EVENTSTREAM_MAX_EVENT_BYTES``;
    * ``django.core.exceptions.ImproperlyConfigured`` when neither ``GRIP_URL`` nor
      ``GRIP_PROXIES`` names a proxy to publish to (unless the test kit's
      ``eventstream_outbox`` records the publishes);
    * ``django.db.DatabaseError`` (``OperationalError`` when the database cannot be
      reached), as raised by Django, when storage is enabled and the event cannot be
      stored. Inside the caller's transaction, that transaction is then to be rolled
      back as after any failed query.
    """
    send_events(
        [(channel, event_type, data)],
        skip_user_ids=skip_user_ids,
        async_publish=async_publish,
        json_encode=json_encode,
    )


def send_events(
    events: Iterable[tuple[str, str, Any]],
    *,
    skip_user_ids: Iterable[object] | None = None,
    async_publish: bool = False,
    json_encode: bool = True,
) -> None:
    """Send many ``(channel, event_type, data)`` events at once, in order.

    As :func:`send_event` for each, but every event is checked before any is stored, the
    stored ones are written in one transaction (a batch per channel), and the publish is
    one request per proxy for all of them. The batch is all or nothing: when any event
    is refused, or the database fails, none is stored and none is published.
    """
    checked = []
    for channel, event_type, data in events:
        grip.validate_channel(channel)
        _validate_event_type(event_type)
        text = _encode_data(data, json_encode, channel, event_type)
        _check_size(text, channel, event_type)
        checked.append((channel, event_type, text))
    if not checked:
        return
    _check_destination(async_publish)
    skip = _skip_users_meta(skip_user_ids)
    storage = get_storage()
    manager = get_channel_manager()
    reliable = set(stored_channels({c for c, _, _ in checked}))
    to_store = [(c, t, text) for c, t, text in checked if c in reliable]
    stored: Iterator[StoredEvent] = iter(())
    if storage is not None and to_store:
        ttls = {c: manager.get_channel_ttl(c) for c, _, _ in to_store}
        stored = iter(storage.append_events(to_store, ttls))

    items = []
    for channel, event_type, text in checked:
        if channel in reliable:
            event = next(stored)
            item = buildid.publish_item(channel, event.seq, text, event_type, skip)
        else:
            content = sse.encode_event(text, event=event_type)
            item = grip.http_stream_item(channel, content, skip_users=skip)
        items.append(item)
    label = checked[0][0] if len(checked) == 1 else f"{checked[0][0]} (+{len(checked) - 1})"

    def publish() -> None:
        if async_publish:
            get_background_publisher().submit(items, channel=label)
        else:
            _publish(items, label)

    if to_store and storage and transaction.get_connection(storage.using).in_atomic_block:
        transaction.on_commit(publish, using=storage.using)
    else:
        publish()


def _skip_users_meta(user_ids: Iterable[object] | None) -> str | None:
    if user_ids is None:
        return None
    if isinstance(user_ids, str | bytes):
        raise TypeError("skip_user_ids is a list of user ids, not a single string")
    encoded = [grip.user_meta(user_id) for user_id in user_ids]
    return ",".join(encoded) or None


def get_current_event_id(channels: Iterable[str]) -> str:
    """The cursor a client would hold had it received every event sent so far on ``channels``.

    Render it into a page and open ``EventSource('/events/?lastEventId=' + cursor)`` so
    that nothing sent between the render and the connection is missed. Empty when none
    of the channels is stored (no storage, or unreliable channels).
    """
    storage = get_storage()
    names = sorted({grip.validate_channel(c) for c in channels})
    reliable = stored_channels(names)
    if storage is None or not reliable:
        return ""
    epoch, current = storage.get_state(reliable)
    return format_cursor(epoch, current, reliable)


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
    _publish([grip.hint_item(grip.user_control_channel(user.pk))], channel)


def _validate_event_type(event_type: object) -> None:
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise ValueError(f"event_type is longer than {MAX_EVENT_TYPE_LENGTH} characters")
    # sse.encode_event rejects CR, LF and NUL; checked here so nothing is stored first.
    sse.encode_event("", event=event_type)


def _check_destination(async_publish: bool) -> None:
    """ImproperlyConfigured, before anything is stored, when no proxy is configured."""
    # Imported here, as the registry does: importing this module must stay cheap for
    # pages that only render get_current_event_id.
    from .publisher import BackgroundPublisher, Publisher

    publisher = get_background_publisher() if async_publish else get_publisher()
    if isinstance(publisher, BackgroundPublisher):
        publisher = publisher.publisher
    # Anything else stands in for the proxies (the test kit's outbox records publishes)
    # and needs none.
    if isinstance(publisher, Publisher):
        publisher.check_configured()


def _check_size(text: str, channel: str, event_type: str) -> None:
    # An event that no replay page can carry would break every resume after it: refused
    # before anything is stored.
    size = buildid.escaped_size(text, event_type, None)
    limit = conf.EVENTSTREAM_MAX_EVENT_BYTES
    if size > limit:
        raise ValueError(
            f"send_event({channel!r}, {event_type!r}, ...): the event is {size} bytes as "
            f"sent (SSE framing, '%' doubled for Pushpin), over the limit of {limit} bytes "
            "(EVENTSTREAM_MAX_EVENT_BYTES). Send a smaller event, such as an id the client "
            "fetches the content by, or raise the limit (the documentation's Reliable "
            "delivery page: Pushpin refuses replay responses over about 100 KB)."
        )


def _encode_data(data: Any, json_encode: bool, channel: str, event_type: str) -> str:
    if not json_encode:
        if not isinstance(data, str):
            raise TypeError(
                f"send_event({channel!r}, {event_type!r}, ...) with json_encode=False needs "
                f"str data, got {type(data).__name__}"
            )
        # Refused whatever the storage: PostgreSQL cannot store NUL in text (SQLite can),
        # and an event must not be accepted on one database and refused on another.
        # JSON-encoded data never holds one: json.dumps writes it as \u0000.
        nul = data.find("\x00")
        if nul >= 0:
            raise ValueError(
                f"send_event({channel!r}, {event_type!r}, ...): the data contains a NUL "
                f"character ('\\x00') at index {nul}, which PostgreSQL cannot store. Remove "
                "it, or send the data JSON-encoded (json_encode=True writes it as \\u0000)."
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


def _publish(items: list[dict[str, object]], channel: str) -> None:
    try:
        get_publisher().publish(items, channel=channel)
    except PublishError as exc:
        if conf.EVENTSTREAM_PUBLISH_ERRORS == "log":
            # The message names every failed proxy and why; a traceback would add nothing.
            logger.error("send_event could not publish on channel %r: %s", channel, exc)
            return
        raise

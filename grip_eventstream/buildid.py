"""Pushpin's ``build-id`` filter, all of it: escaping, ids, sizes, publish items. Pure.

Reliable channels are held with the ``build-id`` content filter, which lets Pushpin write
each subscriber's own cursor into a live event: the publish carries ``%I`` where the id
goes, and the subscription's ``id_format`` meta is the template Pushpin renders ``%I`` from,
with ``%(channel)s`` replaced by the last id Pushpin delivered on that channel. The price:
the filter reads every ``%`` as a directive, so any text it runs over must be escaped, and
Pushpin runs it over publishes, and over some response bodies (:func:`body_filtered`).
"""

from __future__ import annotations

from . import grip, sse
from .cursor import channel_key

FILTER = grip.BUILD_ID


def escape(text: str) -> str:
    """Escape text that Pushpin's ``build-id`` content filter will run over.

    That filter reads ``%`` as a directive (``%I`` the event id, ``%(name)s`` a channel's last
    id, ``%%`` a literal ``%``) and fails the whole message on an unknown one: Pushpin then
    drops a published event, or sends an empty body and closes a stream whose hold or
    next-link response carried it. Every text that Pushpin filters goes through here,
    whoever wrote it: stored event data and types, channel names in reset notices.
    """
    return text.replace("%", "%%")


def unescape(text: str) -> str:
    """What the filter makes of :func:`escape`'s output (for clients that see publishes)."""
    return text.replace("%%", "%")


def id_var(channel: str) -> str:
    """The template directive that Pushpin replaces with the channel's last delivered id."""
    return f"%({grip.pushpin_channel(channel)})s"


def id_format(epoch: str, channels: list[str] | tuple[str, ...]) -> str:
    """The ``id_format`` that makes Pushpin render :func:`cursor.format_cursor` itself."""
    parts = [epoch]
    parts.extend(f"{channel_key(channel)}-{id_var(channel)}" for channel in channels)
    return ".".join(parts)


def live_id(channel: str, seq: int) -> str:
    """The ``id:`` of a live event: Pushpin renders ``%I`` from the stream's id format.

    Pushpin's build-id filter renders the id format from the ids it last delivered on each
    channel. Pushpin 1.36 updates the event's own channel before it renders, 1.41 after (its
    filters became asynchronous and the update moved behind them), so there the event's own
    channel would read one behind and every resume would repeat an event. The event's own
    position, appended, is right on both; :func:`cursor.parse_cursor` lets the later part win.
    """
    return f"%I.{channel_key(channel)}-{seq}"


def publish_item(
    channel: str, seq: int, text: str, event_type: str, skip_users: str | None
) -> dict[str, object]:
    """The publish item of stored event ``seq`` of ``channel``: its id and prev-id let
    Pushpin detect a gap; its content is filtered into each subscriber's own cursor."""
    content = sse.encode_event(escape(text), event=escape(event_type), id=live_id(channel, seq))
    return grip.http_stream_item(
        channel,
        content,
        item_id=str(seq),
        prev_id=str(seq - 1),
        content_filters=[FILTER],
        skip_users=skip_users,
    )


def escaped_size(data: str, event_type: str, id: str | None) -> int:
    """Bytes of an event block in the larger of its two forms, escaped or not.

    Every "%" doubles when escaped; so this is what a page will cost either way.
    """
    block = sse.encode_event(data, event=event_type, id=id)
    return len(block.encode("utf-8")) + block.count("%")


def body_filtered(
    features: frozenset[str], *, old_hold_filtered: bool, new_hold_filtered: bool
) -> bool:
    """Whether Pushpin runs the build-id filter over a next-link response's body.

    Pushpin 1.36 filters it with the filters of the hold the stream had when it fetched the
    link; 1.41 with the filters of the response's own hold (Pushpin commit fbc0d7b "apply
    next link response's own filters to its content"). The same release added gone links,
    so a proxy that lists ``link:gone`` behaves as 1.41.
    """
    if grip.sends_gone_notices(features):
        return new_hold_filtered
    return old_hold_filtered

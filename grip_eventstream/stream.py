"""Every answer the stream view gives Pushpin, decided in one place. Pure: no Django import.

The view reads the request (channels, user, cursor, the link being fetched, Pushpin's
``Grip-Last`` and ``Grip-Feature``), reads the storage state, and calls :func:`answer`,
which returns the body and the GRIP headers: hold the stream or send a page, which channels
with which prev-ids and filters, the next link, the gone link. The view then only builds
the ``HttpResponse``.

The rules, each in one place here:

* **Channels held.** Unstored channels without a prev-id; stored (reliable) channels with
  their position as prev-id and the ``build-id`` filter, once the replay is complete; the
  user's control channel (``channel_permission_changed``); and the link-proof channel
  (:data:`grip.LINK_PROOF_CHANNEL`, prev-id 0, never published to) for streams without
  stored channels and for presence streams. With it, Pushpin's own next-link requests always
  carry ``Grip-Last``, which it strips from clients' requests, and a presence stream's link
  timer is never pushed back by deliveries.
* **Hold or page.** A replay that fits one response holds the stream; a longer one is sent
  as pages without a hold, each with a one-time page link (``nonce``) that continues it.
* **Build-id filtering.** Pushpin runs its ``build-id`` filter over a response body that
  holds with a ``build-id`` channel (a subscribe's), and over a next-link response's body
  according to :func:`buildid.body_filtered` (1.36: the old hold's filters; 1.41: the
  response's own). A filtered body has every ``%`` escaped.
* **Links.** Every hold has a next link (the link token's :class:`LinkState`); the first
  response of a presence stream behind a proxy with gone notices also has its gone link.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from . import buildid, grip, replay, sse


@dataclass(frozen=True)
class LinkState:
    """What a next-link token carries in place of the client's cookies (see links.py)."""

    channels: tuple[str, ...]
    user_pk: str | None  # str(pk): integer, UUID and string keys alike
    resume: str | None = None  # the cursor the next page of a paged replay starts after
    # Whether Pushpin holds the stream with the build-id filter when it fetches this link:
    # it then runs that filter over the link response's body, which must be escaped.
    filtered: bool = False
    # A page link's one-time nonce; None on next links.
    nonce: str | None = None
    # The stream's presence id (grip_eventstream.presence), when it has presence channels:
    # each next-link fetch refreshes its presence.
    stream: str | None = None


@dataclass(frozen=True)
class StreamRequest:
    """What the view read from a stream request it may answer with a stream."""

    channels: Sequence[str]  # every channel of the stream, validated and sorted
    reliable: Sequence[str]  # those whose events are stored, in cursor order
    user_pk: str | None
    # The state of the next link or page link being fetched; None for a subscribe.
    link: LinkState | None = None
    # Subscribe: Last-Event-ID, else ?lastEventId=. Ignored on links.
    cursor: str | None = None
    grip_last: str = ""  # Pushpin's Grip-Last header, on its next-link requests
    features: frozenset[str] = frozenset()  # the proxy's Grip-Feature list
    presence_stream: str | None = None  # the stream's presence id, if it has one
    gone_url: str | None = None  # its gone link, when this response must carry it
    retry: str = ""  # a "retry:" block that opens a subscribe's body
    keep_alive: int = 20
    link_timeout: int = 0
    replay_limit: int = 500
    replay_max_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Answer:
    body: str
    headers: dict[str, str]
    holds: bool  # False: a page, or a body the stream ends with
    filtered: bool = False  # Pushpin runs build-id over the body (so "%" was escaped)
    # Not 200: a plain-text answer (body: its message) that Pushpin retries (see outage).
    status: int = 200


# The link timeout of a next-link answer that carried missed events (see answer()).
SETTLE_LINK_TIMEOUT = 3
# Seconds a next-link token outlives the link timeout (see link_max_age).
LINK_MARGIN = 60
# Pushpin's link timeout when the Grip-Link header gives none (EVENTSTREAM_LINK_TIMEOUT = 0).
PUSHPIN_LINK_TIMEOUT = 120
# While the database is unavailable, subscribes reconnect after a random delay of at least
# 1 s and up to this many seconds, or EVENTSTREAM_RECONNECT_SPREAD if longer.
OUTAGE_MIN_SPREAD = 5


def link_max_age(link_timeout: int) -> int:
    """How long a next-link token stays valid after it is issued.

    Pushpin fetches a stream's link at the latest ``link_timeout`` seconds after the last
    link response, which carries a fresh token; a paged replay fetches its links at once.
    The margin covers a slow response and clock steps between app servers.
    """
    return (link_timeout or PUSHPIN_LINK_TIMEOUT) + LINK_MARGIN


def copied_link(
    link: LinkState, *, grip_last_sent: bool, use_nonce: Callable[[str], bool]
) -> str | None:
    """Why a link request did not come from the proxy holding the stream; None if it did.

    Every hold has a channel with a prev-id (the stored channels or the link-proof
    channel), so Pushpin's own next-link requests carry ``Grip-Last``, and Pushpin strips a
    ``Grip-Last`` sent by a client: a next link without it is someone replaying a link read
    from a log. A page link carries a nonce that ``use_nonce`` spends (False: spent).
    """
    if link.nonce is None:
        return None if grip_last_sent else "next link without Grip-Last"
    return None if use_nonce(link.nonce) else "page link fetched a second time"


def retry(spread: int, choose: Callable[[int, int], int]) -> str:
    """The ``retry:`` block that opens a subscribe's body ("" for a spread of 1 s or less).

    When Pushpin restarts, every browser reconnects after the same delay (3 s): a storm
    that Pushpin answers with 502 once more than about 100 requests wait for the app. A
    random delay per stream (``choose(low, high)``, in ms) spreads the reconnects.
    """
    if spread <= 1:
        return ""
    return sse.encode_retry(choose(1000, spread * 1000))


def outage(*, link: bool, spread: int, choose: Callable[[int, int], int]) -> Answer:
    """The answer to a stream request that could not reach the database.

    Nothing may be lost, and a browser's EventSource (and htmx's SSE extensions) stops for
    good on any status but 200: a subscribe gets 200 with a ``retry:`` and no hold
    (:func:`unavailable`), so the browser reconnects after that delay with its
    Last-Event-ID until the database answers again. A next link gets 503: Pushpin keeps the
    client's stream open and fetches the link again (5 retries over about 34 s; on 1.36
    each keep-alive also fetches it at once, so with the default 20 s keep-alive the stream
    ends after about 20 s), then ends the stream, and the browser reconnects.
    """
    if link:
        return Answer("The database is unavailable; try again shortly.", {}, False, status=503)
    return unavailable(choose(1000, max(spread, OUTAGE_MIN_SPREAD) * 1000))


def answer(
    request: StreamRequest,
    storage_state: tuple[str, Mapping[str, int]] | None,
    events: replay.EventHistory,
    link_url: Callable[[LinkState], str],
    new_nonce: Callable[[], str],
) -> Answer:
    """The answer to a stream request the user may read.

    ``storage_state``: the epoch and each reliable channel's last seq (None when the stream
    has no reliable channel). ``events`` reads missed events; ``link_url`` turns a link
    state into the URL of a signed link; ``new_nonce`` makes a page link's nonce.
    """
    reliable = list(request.reliable)
    subscriptions = [grip.Subscription(c) for c in request.channels if c not in reliable]
    if request.user_pk is not None:
        subscriptions.append(
            grip.Subscription(grip.user_control_channel(request.user_pk), raw=True)
        )
    if not reliable or request.presence_stream is not None:
        subscriptions.append(grip.Subscription(grip.LINK_PROOF_CHANNEL, "0", raw=True))
    state = LinkState(
        tuple(request.channels),
        request.user_pk,
        filtered=bool(reliable),
        stream=request.presence_stream,
    )
    gone = None if request.gone_url is None else f"<{request.gone_url}>; rel=gone"

    def hold(
        id_format: str | None = None, link_timeout: int = request.link_timeout
    ) -> dict[str, str]:
        headers = grip.hold_headers(
            subscriptions,
            keep_alive=request.keep_alive,
            id_format=id_format,
            user=None if request.user_pk is None else grip.user_meta(request.user_pk),
            link=link_url(state),
            link_timeout=link_timeout,
        )
        return _with_gone(headers, gone)

    retry = request.retry if request.link is None else ""
    if storage_state is None or not reliable:
        return Answer(retry, hold(), holds=True)

    epoch, current = storage_state
    link = request.link
    if link is None:
        cursor, grip_last = request.cursor, None
        # Pushpin filters the body of a response that holds with build-id, not of a page.
        filtered_if_complete, filtered_if_paged = True, False
    else:
        cursor = link.resume
        # Pushpin's own record of what it delivered, on next links that are not pages.
        grip_last = grip.parse_grip_last([request.grip_last]) if cursor is None else None
        filtered_if_complete = buildid.body_filtered(
            request.features, old_hold_filtered=link.filtered, new_hold_filtered=True
        )
        filtered_if_paged = buildid.body_filtered(
            request.features, old_hold_filtered=link.filtered, new_hold_filtered=False
        )
    result = replay.plan(
        replay.ReplayRequest(
            epoch=epoch,
            channels=reliable,
            current=current,
            cursor=cursor,
            grip_last=grip_last,
            max_events=request.replay_limit,
            max_bytes=request.replay_max_bytes,
            id_only_tail=link is None,
        ),
        events,
    )
    filtered = filtered_if_complete if result.complete else filtered_if_paged
    body = retry + result.render(buildid.escape if filtered else str)
    if not result.complete:
        # More missed events than one response may carry: no hold yet; Pushpin sends this
        # page and fetches the next link at once, which continues from this cursor.
        # Without a hold the stream has no channels, so no filter runs over the next
        # page on 1.36 either, whatever ran over this one.
        page = dataclasses.replace(state, resume=result.cursor, filtered=False, nonce=new_nonce())
        headers = _with_gone({"Grip-Link": grip.link_header(link_url(page))}, gone)
        return Answer(body, headers, holds=False, filtered=filtered)
    subscriptions += [grip.Subscription(c, str(result.positions[c])) for c in reliable]
    link_timeout = request.link_timeout
    if link is not None and result.events:
        # A next link that found missed events repaired a gap while other sends may still
        # be landing: Pushpin keeps at most 100 items that reach a stream during this
        # fetch and drops the rest unseen, and events committed after this read that it
        # dropped would wait for the next period. The link is fetched again shortly, and
        # the fetch that finds nothing new restores the usual timeout.
        link_timeout = min(link_timeout or PUSHPIN_LINK_TIMEOUT, SETTLE_LINK_TIMEOUT)
    return Answer(body, hold(buildid.id_format(epoch, reliable), link_timeout), True, filtered)


def forbidden(user_pk: str | None, denied: Sequence[str], *, filtered: bool) -> Answer:
    """A next link of a stream whose user may no longer read ``denied``: say why, end it.

    A next-link answer without a hold ends the stream after its body. The body is filtered
    as the old hold was (channel names may hold "%").
    """
    who = "anonymous users" if user_pk is None else "this user"
    data = json.dumps(
        {
            "condition": "forbidden",
            "text": f"Permission denied: {who} may no longer read {', '.join(denied)}.",
            "channels": list(denied),
        }
    )
    if filtered:
        data = buildid.escape(data)
    return Answer(sse.encode_event(data, event="stream-error"), {}, holds=False)


def end() -> Answer:
    """An empty body and no hold: Pushpin ends the stream; the browser reconnects."""
    return Answer("", {}, holds=False)


def unavailable(retry_ms: int) -> Answer:
    """A subscribe that could not reach the database: a retry, no hold.

    The stream ends at once and the browser reconnects after ``retry_ms`` with its
    Last-Event-ID, as after a network error; any status but 200 would stop it for good.
    The ``retry:`` rides on a ``stream-unavailable`` event: htmx 4's SSE extension ignores a
    block with a ``retry:`` alone (and then reconnects within half a second, again and
    again), and every client ignores an event type nobody listens to.
    """
    data = json.dumps({"condition": "database-unavailable"})
    body = sse.encode_retry(retry_ms).removesuffix("\n") + sse.encode_event(
        data, event="stream-unavailable"
    )
    return Answer(body, {}, holds=False)


def _with_gone(headers: dict[str, str], gone: str | None) -> dict[str, str]:
    if gone is not None:
        headers["Grip-Link"] = f"{headers['Grip-Link']}, {gone}"
    return headers

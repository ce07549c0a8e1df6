"""The stream view: answers at once with GRIP instructions; Pushpin holds the connection."""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import grip, links, stream
from .conf import conf
from .cors import cors_headers, preflight_headers
from .exceptions import InvalidChannel
from .proxies import InvalidSignature
from .registry import get_channel_manager, get_storage, get_verifier, stored_channels

logger = logging.getLogger("grip_eventstream")

# The query parameter with which GripEventSource (eventsource.js) marks the request it makes
# only to read the status after its EventSource gave up: not a stream to count (presence).
CHECK_PARAMETER = "grip-check"


class EndStream(Exception):
    """Answer a next link with an empty body and no hold: Pushpin ends the stream."""


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@csrf_exempt
# Without a transaction of its own (ATOMIC_REQUESTS): opening one while the database is
# down would fail before the view could answer the outage as it should.
@transaction.non_atomic_requests
def events(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    """Subscribe to channels; also serves the next-link and gone requests Pushpin makes."""
    gone_token = kwargs.pop("grip_gone", None)
    if gone_token is not None:
        return gone(request, gone_token)
    link_token = kwargs.pop("grip_link", None)

    def channels_and_user() -> tuple[Sequence[str], AbstractBaseUser | None]:
        channels = requested_channels(request, kwargs)
        return channels, get_channel_manager().get_user(request)

    return serve(request, channels_and_user, link_token)


def serve(
    request: HttpRequest,
    channels_and_user: Callable[[], tuple[Sequence[str], AbstractBaseUser | None]],
    link_token: str | None = None,
) -> HttpResponse:
    """Answer a stream request (views and the DRF viewset share this).

    ``channels_and_user`` is called for subscribe requests only: on next-link requests the
    channels and the user come from the signed link token, since Pushpin makes those
    requests itself, without the client's cookies or headers.
    """
    # request.META rather than request.headers throughout: the first use of
    # request.headers copies every header of the request (profiled: a tenth of what a
    # subscribe adds to a hello-world view).
    meta = request.META
    cors = cors_headers(
        meta.get("HTTP_ORIGIN"),
        conf.EVENTSTREAM_ALLOW_ORIGINS,
        conf.EVENTSTREAM_ALLOW_CREDENTIALS,
    )
    if request.method == "OPTIONS":
        preflight = preflight_headers(cors, conf.EVENTSTREAM_ALLOW_HEADERS)
        return _with_headers(HttpResponse(status=204), cors, preflight)
    try:
        if request.method != "GET":
            response = text_response(405, "Event streams are opened with GET.")
            response["Allow"] = "GET, OPTIONS"
            return _with_headers(response, cors)
        _check_proxy(request)
        channels: Sequence[str]
        link = None
        if link_token is not None:
            state, user = _read_link(request, link_token)
            channels, link = state.channels, (link_token, state)
        else:
            channels, user = channels_and_user()
        denied = _denied(user, channels)
        if denied and link is not None:
            # The stream is already open: tell the client why, then end it.
            user_pk = None if user is None else str(user.pk)
            answer = stream.forbidden(user_pk, denied, filtered=link[1].filtered)
        elif denied:
            who = "anonymous users" if user is None else "this user"
            raise Refused(403, f"Permission denied: {who} may not read {', '.join(denied)}.")
        else:
            answer = _stream(request, channels, user, link)
        if _outage_logged:
            _database_reachable()
        response = _stream_response(answer)
    except Refused as refused:
        response = text_response(refused.status, refused.message)
    except EndStream:
        response = _stream_response(stream.end())
    except DatabaseError as exc:
        response = _database_unavailable(request, exc, link=link_token is not None)
    return _with_headers(response, cors)


# Whether this process has logged the current database outage (logged once per outage).
_outage_logged = False


def _database_unavailable(request: HttpRequest, exc: DatabaseError, *, link: bool) -> HttpResponse:
    """Answer a stream request that could not reach the database (stream.outage decides;
    measured in tests/test_e2e_pushpin_versions.py), and log the outage once."""
    global _outage_logged
    if not _outage_logged:
        _outage_logged = True
        logger.error(
            "The database is unavailable: stream requests are answered with a retry until it "
            "is back (first failure on %s: %s: %s)",
            request.path,
            type(exc).__name__,
            exc,
        )
    answer = stream.outage(
        link=link, spread=conf.EVENTSTREAM_RECONNECT_SPREAD, choose=random.randint
    )
    return _stream_response(answer)


def _database_reachable() -> None:
    global _outage_logged
    _outage_logged = False
    logger.warning("The database is reachable again: stream requests are served.")


def gone(request: HttpRequest, token: str) -> HttpResponse:
    """Pushpin's notice that a presence stream has ended (its ``rel=gone`` link).

    Pushpin 1.41 POSTs it a few milliseconds after the client disconnects and wants an
    empty answer. Only the proxy can make it count: the request must carry a verified
    Grip-Sig, and the signed token names one stream, which no client ever sees before the
    notice (ending a stream that has ended changes nothing).
    """
    if request.method != "POST":
        response = text_response(405, "Gone notices are sent by the GRIP proxy with POST.")
        response["Allow"] = "POST"
        return response
    try:
        _check_proxy(request)
        stream = links.read_gone_token(token)
    except Refused as refused:
        return text_response(refused.status, refused.message)
    except links.InvalidLink as exc:
        logger.warning("Refused a gone notice: the token is %s", exc.reason)
        return text_response(400, "Invalid gone token.")
    from . import presence

    try:
        presence.end_stream(stream)
    except DatabaseError as exc:
        # Pushpin does not retry a gone notice: the stream stays counted until it expires
        # (EVENTSTREAM_PRESENCE_TTL).
        logger.error("Could not record the end of a presence stream: %s", exc)
        return HttpResponse(b"", status=503)
    return HttpResponse(b"")


def text_response(status: int, message: str) -> HttpResponse:
    # Any status but 200 closes a browser's EventSource for good, which is what these
    # answers mean: retrying the same request cannot succeed.
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _with_headers(response: HttpResponse, *header_sets: Mapping[str, str]) -> HttpResponse:
    for headers in header_sets:
        for name, value in headers.items():
            response[name] = value
    return response


def _check_proxy(request: HttpRequest) -> None:
    """Refuse requests that did not come through a GRIP proxy: they could never stream."""
    signature = request.META.get("HTTP_GRIP_SIG")
    if not signature:
        # Also in the server log: the browser shows only the status, and this is the
        # usual first mistake (opening the dev server's port instead of Pushpin's).
        logger.warning(
            "Refused a stream request to %s that did not come through a GRIP proxy (no "
            "Grip-Sig): open the page through Pushpin's port instead.",
            request.path,
        )
        raise Refused(
            400,
            "This is a Server-Sent Events endpoint that must be reached through a GRIP "
            "proxy (Pushpin or Fastly Fanout), which holds the connection open; this request "
            "came to Django directly. Connect through the proxy (Pushpin listens on port "
            "7999 by default) and route it to this server.",
        )
    verifier = get_verifier()
    if verifier is None:
        return  # nothing to verify with: system check W001 says so
    try:
        verifier.verify(signature)
    except InvalidSignature as exc:
        # The reason (wrong issuer, expired, bad signature) is for the operator, not the
        # client: it would tell an attacker which part of a forgery to fix.
        logger.warning("Refused a request to %s: Grip-Sig did not verify (%s)", request.path, exc)
        raise Refused(
            403,
            "The Grip-Sig header did not verify with the key configured in GRIP_URL / "
            "GRIP_PROXIES: the request did not come through the configured GRIP proxy, or "
            "the proxy's sig_key differs from the key given to Django.",
        ) from None


def requested_channels(request: HttpRequest, kwargs: Mapping[str, Any]) -> list[str]:
    names = get_channel_manager().get_channels_for_request(request, kwargs)
    if not names:
        raise Refused(
            400,
            "No channel selected: pass channels in the URL configuration "
            "({'channels': [...]}, {'format-channels': [...]} or a <channel> path "
            "component) or as ?channel=NAME query parameters.",
        )
    limit = conf.EVENTSTREAM_MAX_CHANNELS
    if len(names) > limit:
        raise Refused(
            400,
            f"{len(names)} channels requested; a stream carries at most {limit} "
            "(EVENTSTREAM_MAX_CHANNELS).",
        )
    try:
        return sorted(grip.validate_channel(name) for name in names)
    except InvalidChannel as exc:
        raise Refused(400, f"Invalid channel name: {exc}.") from None


def _denied(user: AbstractBaseUser | None, channels: Sequence[str]) -> list[str]:
    manager = get_channel_manager()
    return [c for c in channels if not manager.can_read_channel(user, c)]


def _read_link(
    request: HttpRequest, token: str
) -> tuple[stream.LinkState, AbstractBaseUser | None]:
    max_age = stream.link_max_age(conf.EVENTSTREAM_LINK_TIMEOUT)
    try:
        state = links.read_token(token, max_age=max_age, max_channels=conf.EVENTSTREAM_MAX_CHANNELS)
    except links.LinkExpired:
        # Pushpin restarts its link timer on every delivery, so a busy stream may hold
        # an old token when a gap appears. Ending the stream (200, no hold) makes the
        # browser reconnect at once with Last-Event-ID and lose nothing; an error status
        # would make Pushpin retry the same token for a minute first.
        raise EndStream from None
    except links.InvalidLink as exc:
        logger.warning("Refused next-link request: the token is %s", exc.reason)
        raise Refused(400, "Invalid, expired or tampered next-link token.") from None
    copied = stream.copied_link(
        state,
        grip_last_sent="HTTP_GRIP_LAST" in request.META,
        use_nonce=lambda nonce: links.use_page_nonce(nonce, max_age),
    )
    if copied is not None:
        _refuse_copied_link(request, copied)
    user = None
    if state.user_pk is not None:
        found = _find_user(state.user_pk)
        if found is not None and found.is_active:
            user = found
    return state, user


def _refuse_copied_link(request: HttpRequest, reason: str) -> None:
    logger.warning("Refused a copied link (%s): %s", reason, request.path[:120])
    raise Refused(
        403,
        "This link is fetched once by the GRIP proxy that holds the stream; it cannot be "
        "opened as a stream of its own.",
    )


def _find_user(pk: str) -> AbstractBaseUser | None:
    model = get_user_model()
    try:
        pk_value = model._meta.pk.to_python(pk)
    except ValidationError:
        return None  # a key of another type than this project's (a changed AUTH_USER_MODEL)
    return model._default_manager.filter(pk=pk_value).first()


def _stream(
    request: HttpRequest,
    channels: Sequence[str],
    user: AbstractBaseUser | None,
    link: tuple[str, stream.LinkState] | None,
) -> stream.Answer:
    """Read what the answer depends on from the request and the storage; stream.py decides."""
    storage = get_storage()
    reliable = stored_channels(channels)
    user_pk = None if user is None else str(user.pk)
    meta = request.META
    features = grip.proxy_features(meta.get("HTTP_GRIP_FEATURE"))
    presence_stream, gone_url = _presence(request, channels, user_pk, link, features)
    if link is None:
        base = request.path
        # The browser sends Last-Event-ID on its own reconnects, newer than any
        # lastEventId the page put in the URL, so the header wins.
        cursor = meta.get("HTTP_LAST_EVENT_ID") or request.GET.get("lastEventId")
    else:
        base, cursor = links.base_path(request.path, link[0]), None
    answer_request = stream.StreamRequest(
        channels=channels,
        reliable=reliable,
        user_pk=user_pk,
        link=None if link is None else link[1],
        cursor=cursor,
        grip_last=meta.get("HTTP_GRIP_LAST", ""),
        features=features,
        presence_stream=presence_stream,
        gone_url=gone_url,
        retry=(
            stream.retry(conf.EVENTSTREAM_RECONNECT_SPREAD, random.randint) if link is None else ""
        ),
        keep_alive=conf.EVENTSTREAM_KEEP_ALIVE,
        link_timeout=conf.EVENTSTREAM_LINK_TIMEOUT,
        replay_limit=conf.EVENTSTREAM_REPLAY_LIMIT,
        replay_max_bytes=conf.EVENTSTREAM_REPLAY_MAX_BYTES,
    )
    state = None if storage is None or not reliable else storage.get_state(reliable)
    return stream.answer(
        answer_request,
        state,
        storage,  # type: ignore[arg-type]  # only read when there is a state
        lambda link_state: links.link_url(base, link_state),
        links.new_page_nonce,
    )


def _presence(
    request: HttpRequest,
    channels: Sequence[str],
    user_pk: str | None,
    link: tuple[str, stream.LinkState] | None,
    features: frozenset[str],
) -> tuple[str | None, str | None]:
    """The stream's presence id, and its gone link when this response must carry one.

    A subscribe with presence channels records the stream (grip_eventstream.presence). When
    the proxy sends gone notices (``link:gone`` in Grip-Feature: Pushpin 1.41), the first
    response carries the gone link, which Pushpin only takes from a stream's first response;
    otherwise the stream is counted until it expires. Each next-link fetch refreshes it.
    """
    if link is not None:
        stream_id = link[1].stream
        if stream_id is not None:
            from . import presence

            # Without the channels: a stream whose rows are gone is not recorded again. A
            # next-link fetch can be under way when the gone notice removes the stream
            # (both come from Pushpin as the client leaves), and must not bring it back.
            presence.refresh_streams(stream_id, conf.EVENTSTREAM_PRESENCE_TTL)
        return stream_id, None
    manager = get_channel_manager()
    if not any(manager.is_presence_channel(c) for c in channels):
        return None, None
    if CHECK_PARAMETER in request.GET:
        # GripEventSource asking for the status only: it aborts this request at once.
        return None, None
    from . import presence

    stream_id = secrets.token_urlsafe(12)
    exact = grip.sends_gone_notices(features)
    presence.record_streams(
        stream_id, channels, user_pk, exact=exact, ttl=conf.EVENTSTREAM_PRESENCE_TTL
    )
    if not exact:
        return stream_id, None
    return stream_id, links.gone_url(request.path, stream_id)


def _stream_response(answer: stream.Answer) -> HttpResponse:
    if answer.status != 200:
        return text_response(answer.status, answer.body)
    # The body in one piece, as bytes: each HttpResponse.write() encodes and appends a
    # chunk, looking the charset up in the headers again. UTF-8 whatever DEFAULT_CHARSET
    # says: an event stream is always UTF-8.
    response = HttpResponse(answer.body.encode("utf-8"), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return _with_headers(response, answer.headers)

"""The stream view: answers at once with GRIP instructions; Pushpin holds the connection."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.utils.encoding import escape_uri_path
from django.views.decorators.csrf import csrf_exempt

from . import grip, sse
from .conf import conf
from .cursor import format_cursor, id_format, parse_cursor
from .exceptions import InvalidChannel
from .proxies import InvalidSignature, verify_grip_sig
from .registry import get_channel_manager, get_storage, get_verification_keys
from .storage import EventStorage, StoredEvent

logger = logging.getLogger("grip_eventstream")

LINK_SALT = "grip_eventstream.link"
# Pushpin's last ids are ours: decimal, bounded like cursor positions (str.isdigit would
# also accept "²" and 5000-digit strings that int() refuses).
_LAST_ID = re.compile(r"0|[1-9][0-9]{0,17}")
# A query parameter only ever written by this view into the next link of a paged replay.
RESUME_PARAM = "_resume"


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@csrf_exempt
def events(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    """Subscribe to channels; also serves the next-link requests Pushpin makes."""
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
    cors = _cors_headers(request)
    if request.method == "OPTIONS":
        return _with_headers(HttpResponse(status=204), cors, _preflight_headers(cors))
    try:
        if request.method != "GET":
            response = text_response(405, "Event streams are opened with GET.")
            response["Allow"] = "GET, OPTIONS"
            return _with_headers(response, cors)
        _check_proxy(request)
        channels: Sequence[str]
        if link_token is not None:
            channels, user = _read_link_token(link_token)
        else:
            channels, user = channels_and_user()
        denied = _denied(user, channels)
        if denied and link_token is not None:
            # The stream is already open: tell the client why, then end it (a next-link
            # answer without a hold closes the stream after its body).
            response = _end_stream(user, denied)
        elif denied:
            who = "anonymous users" if user is None else "this user"
            raise Refused(403, f"Permission denied: {who} may not read {', '.join(denied)}.")
        else:
            response = _stream(request, channels, user, link_token)
    except Refused as refused:
        response = text_response(refused.status, refused.message)
    return _with_headers(response, cors)


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
    signature = request.headers.get("Grip-Sig")
    if not signature:
        raise Refused(
            400,
            "This is a Server-Sent Events endpoint that must be reached through a GRIP "
            "proxy (Pushpin or Fastly Fanout), which holds the connection open; this request "
            "came to Django directly. Connect through the proxy (Pushpin listens on port "
            "7999 by default) and route it to this server.",
        )
    keys = get_verification_keys()
    if not keys:
        return  # nothing to verify with: system check W002 says so
    try:
        verify_grip_sig(signature, keys)
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


def _end_stream(user: AbstractBaseUser | None, denied: Sequence[str]) -> HttpResponse:
    who = "anonymous users" if user is None else "this user"
    data = json.dumps(
        {
            "condition": "forbidden",
            "text": f"Permission denied: {who} may no longer read {', '.join(denied)}.",
            "channels": list(denied),
        }
    )
    response = HttpResponse(
        sse.encode_event(data, event="stream-error"), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    return response


def _link_token(channels: Sequence[str], user: AbstractBaseUser | None) -> str:
    # Pushpin's next-link requests carry no cookies, and may be shared between clients
    # with the same path: the channels and the user travel signed in the path itself.
    return signing.dumps(
        {"c": list(channels), "u": None if user is None else str(user.pk)},  # UUID pks too
        salt=LINK_SALT,
        compress=True,
    )


def _read_link_token(token: str) -> tuple[list[str], AbstractBaseUser | None]:
    try:
        payload = signing.loads(token, salt=LINK_SALT)
        channels = [grip.validate_channel(c) for c in payload["c"]]
        user_pk = payload["u"]
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise Refused(400, "Invalid or tampered next-link token.") from None
    user = None
    if user_pk is not None:
        found = get_user_model()._default_manager.filter(pk=user_pk).first()
        if found is not None and found.is_active:
            user = found
    return channels, user


@dataclass
class _Replay:
    """What a stream response says: reset notices and missed events, in order."""

    positions: dict[str, int]
    blocks: list[str] = field(default_factory=list)
    complete: bool = True


def _stream(
    request: HttpRequest,
    channels: Sequence[str],
    user: AbstractBaseUser | None,
    link_token: str | None,
) -> HttpResponse:
    manager = get_channel_manager()
    storage = get_storage()
    reliable = [c for c in channels if storage is not None and manager.is_channel_reliable(c)]
    response = HttpResponse(content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    subscriptions = [grip.Subscription(c) for c in channels if c not in reliable]
    if user is not None:
        # Lets channel_permission_changed() reach this user's streams (see its docstring).
        subscriptions.append(grip.Subscription(grip.user_control_channel(user.pk), raw=True))
    token = link_token or _link_token(channels, user)
    # Every stream has a next link, reliable or not: Pushpin fetches it on a hint from
    # channel_permission_changed() and after EVENTSTREAM_LINK_TIMEOUT quiet seconds, and
    # each fetch checks the user's permissions again.
    # request.path is decoded: a space or "ü" must go back to %-escapes in a header value.
    path = escape_uri_path(request.path)
    link_path = path if link_token else f"{path}_link/{token}/"

    if storage is None or not reliable:
        hold = grip.hold_headers(
            subscriptions,
            keep_alive=conf.EVENTSTREAM_KEEP_ALIVE,
            link=link_path,
            link_timeout=conf.EVENTSTREAM_LINK_TIMEOUT,
        )
        return _with_headers(response, hold)

    epoch = storage.get_epoch()
    replay = _replay(request, storage, epoch, reliable, is_link=link_token is not None)
    body = "".join(replay.blocks)
    if not replay.complete:
        # More missed events than one response may carry: no hold yet; Pushpin sends this
        # page and fetches the next link at once, which continues from this cursor.
        cursor = format_cursor(epoch, replay.positions, reliable)
        response.content = body.encode("utf-8")
        response["Grip-Link"] = grip.link_header(f"{link_path}?{urlencode({RESUME_PARAM: cursor})}")
        return response
    if link_token is None:
        # An id-only block gives even a quiet stream a resume point for Last-Event-ID.
        body += sse.encode_id_only(format_cursor(epoch, replay.positions, reliable))
    response.content = body.encode("utf-8")
    subscriptions += [grip.Subscription(c, str(replay.positions[c])) for c in reliable]
    return _with_headers(
        response,
        grip.hold_headers(
            subscriptions,
            keep_alive=conf.EVENTSTREAM_KEEP_ALIVE,
            id_format=id_format(epoch, reliable, {c: grip.id_format_var(c) for c in reliable}),
            link=link_path,
            link_timeout=conf.EVENTSTREAM_LINK_TIMEOUT,
        ),
    )


def _replay(
    request: HttpRequest,
    storage: EventStorage,
    epoch: str,
    reliable: Sequence[str],
    *,
    is_link: bool,
) -> _Replay:
    current = storage.get_current_ids(reliable)
    positions, resets = _resolve_positions(request, storage, epoch, reliable, current, is_link)
    replay = _Replay(positions=dict(positions))
    for reason, reset_channels in resets.items():
        data = json.dumps({"channels": reset_channels, "reason": reason})
        replay.blocks.append(
            sse.encode_event(
                data, event="stream-reset", id=format_cursor(epoch, replay.positions, reliable)
            )
        )
    limit = conf.EVENTSTREAM_REPLAY_LIMIT
    missed: list[StoredEvent] = []
    for channel in reliable:
        if positions[channel] < current[channel]:
            missed += storage.get_events(channel, positions[channel], limit + 1)
    missed.sort(key=lambda event: event.order)
    replay.complete = len(missed) <= limit
    for event in missed[:limit]:
        replay.positions[event.channel] = event.seq
        cursor = format_cursor(epoch, replay.positions, reliable)
        replay.blocks.append(sse.encode_event(event.data, event=event.event_type, id=cursor))
    return replay


def _resolve_positions(
    request: HttpRequest,
    storage: EventStorage,
    epoch: str,
    reliable: Sequence[str],
    current: Mapping[str, int],
    is_link: bool,
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Where each reliable channel resumes, and which channels need a stream-reset."""
    resets: dict[str, list[str]] = {}
    positions: dict[str, int] = {}

    def reset(channel: str, reason: str) -> None:
        positions[channel] = current[channel]
        resets.setdefault(reason, []).append(channel)

    resume = request.GET.get(RESUME_PARAM)
    # Only Pushpin's own next-link requests (signed link paths) may speak Grip-Last.
    grip_last = request.headers.get("Grip-Last") if is_link else None
    if resume is None and grip_last is not None:
        # Pushpin's own record of what it delivered: preferred over the link's query,
        # which is whatever the last hold response said.
        last_ids = grip.parse_grip_last([grip_last])
        for channel in reliable:
            value = last_ids.get(channel, "")
            if _LAST_ID.fullmatch(value) and int(value) <= current[channel]:
                positions[channel] = int(value)
            else:
                reset(channel, "unknown-position")
    else:
        text = resume
        if text is None:
            # The browser sends Last-Event-ID on its own reconnects, newer than any
            # lastEventId the page put in the URL, so the header wins.
            text = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
        cursor = parse_cursor(text) if text else None
        for channel in reliable:
            if text and cursor is None:
                reset(channel, "invalid-cursor")
            elif cursor is not None and cursor.epoch != epoch:
                reset(channel, "epoch-changed")
            else:
                position = cursor.position(channel) if cursor is not None else None
                if position is None:
                    positions[channel] = current[channel]  # new to this stream: from now
                elif position > current[channel]:
                    reset(channel, "unknown-position")
                else:
                    positions[channel] = position
    behind = [c for c in reliable if positions[c] < current[c]]
    if behind:
        first = storage.get_first_available(behind)
        for channel in behind:
            if positions[channel] + 1 < first[channel]:
                reset(channel, "expired")
    return positions, resets


def _cors_headers(request: HttpRequest) -> dict[str, str]:
    origin = request.headers.get("Origin")
    allowed = conf.EVENTSTREAM_ALLOW_ORIGINS
    if not origin or not allowed:
        return {}
    credentials = conf.EVENTSTREAM_ALLOW_CREDENTIALS
    headers: dict[str, str] = {}
    if "*" in allowed and not credentials:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin in allowed or "*" in allowed:
        # Browsers reject "*" with credentials, so the origin is echoed instead.
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    else:
        return {}
    if credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def _preflight_headers(cors: Mapping[str, str]) -> dict[str, str]:
    if not cors:
        return {}
    names = ["Last-Event-ID", "Cache-Control"]
    for name in conf.EVENTSTREAM_ALLOW_HEADERS:
        if name.lower() not in (n.lower() for n in names):
            names.append(name)
    return {
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(names),
        "Access-Control-Max-Age": "86400",
    }

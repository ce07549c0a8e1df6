"""Next-link tokens: what Pushpin's next-link requests carry in place of the client's cookies.

Pushpin fetches a stream's next link itself (gap repair, paging, the link timeout, hints),
with none of the client's cookies or headers, and may share one fetch between clients
with the same link. So the link's path carries a token, signed with Django's signing
(``SECRET_KEY``), that says which channels and user the stream is for and, while a replay
is paged, where the next page starts.

A token is only valid for a short while (``max_age``), and every link response hands
Pushpin a fresh one. Link URLs stand in the app server's access log, so a copied token must
be worth nothing even while it is valid:

* a next link is only answered with the ``Grip-Last`` header that Pushpin sends on its own
  next-link requests and strips from clients' requests (every hold has a channel with a
  prev-id for that: the stream's stored channels, or ``grip.LINK_PROOF_CHANNEL``);
* a page link of a paged replay (fetched with no channel held, so without Grip-Last)
  carries a nonce and is answered once (:func:`use_page_nonce`).
"""

from __future__ import annotations

import secrets
import time

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, router, transaction

from . import grip
from .exceptions import InvalidChannel

# Re-exported: the state is decided in stream.py (pure), signed here.
from .stream import LinkState as LinkState

SALT = "grip_eventstream.link"
# channels, user, resume cursor, filtered, page nonce, presence stream
_PAYLOAD_KEYS = frozenset("curfns")
SEGMENT = "_link/"


class InvalidLink(Exception):
    """A token that is forged, expired or malformed; ``reason`` is for the server log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkExpired(InvalidLink):
    """A token of ours that is older than ``max_age``."""


def new_page_nonce() -> str:
    return secrets.token_urlsafe(16)


def use_page_nonce(nonce: str, max_age: int) -> bool:
    """Record that a page link is being answered; False if it has been answered before.

    Raises django.db.DatabaseError when the database cannot be reached.
    """
    from .models import UsedPageLink  # models need the app registry: not at import time

    now = int(time.time())
    using = router.db_for_write(UsedPageLink)
    try:
        # A savepoint of its own: on PostgreSQL a failed INSERT would otherwise abort any
        # transaction around it.
        with transaction.atomic(using=using):
            UsedPageLink.objects.using(using).create(nonce=nonce, expires=now + max_age)
    except IntegrityError:
        return False
    # Paged replays are rare (a backlog longer than one response): clearing expired rows
    # here keeps the table at the size of the last few minutes' pages.
    UsedPageLink.objects.using(using).filter(expires__lt=now).delete()
    return True


# Tokens made in the current second, by state and SECRET_KEY: signing stamps whole seconds,
# so a token made again within the same second would be the same string.
_made: dict[tuple[LinkState, str], str] = {}
_made_second = -1


def make_token(state: LinkState) -> str:
    global _made_second
    second = int(time.time())
    key = (state, settings.SECRET_KEY)
    if second == _made_second and key in _made:
        return _made[key]
    token = _sign(state)
    if second != _made_second or len(_made) >= 1024:
        _made.clear()
        _made_second = second
    _made[key] = token
    return token


def _sign(state: LinkState) -> str:
    payload: dict[str, object] = {"c": list(state.channels), "u": state.user_pk}
    if state.resume is not None:
        payload["r"] = state.resume
    if state.filtered:
        payload["f"] = 1
    if state.nonce is not None:
        payload["n"] = state.nonce
    if state.stream is not None:
        payload["s"] = state.stream
    return signing.dumps(payload, salt=SALT, compress=True)


def read_token(token: str, max_age: int, max_channels: int) -> LinkState:
    """The state a token carries; InvalidLink unless it is ours, fresh and well-formed.

    The payload is checked field by field although it is signed: a token signed by an
    older version, or with a SECRET_KEY shared with other code, must give a clear 400
    and never an exception.
    """
    try:
        payload = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise LinkExpired(f"expired ({exc})") from None
    except (signing.BadSignature, ValueError):  # ValueError: a corrupt compressed payload
        raise InvalidLink("bad signature") from None
    if not isinstance(payload, dict) or not {"c", "u"} <= set(payload) <= _PAYLOAD_KEYS:
        raise InvalidLink("unexpected payload")
    channels = payload.get("c")
    user_pk = payload.get("u")
    resume = payload.get("r")
    filtered = payload.get("f", 0)
    nonce = payload.get("n")
    stream = payload.get("s")
    if not isinstance(channels, list) or not 0 < len(channels) <= max_channels:
        raise InvalidLink("the channel list is missing, empty or too long")
    try:
        names = tuple(grip.validate_channel(c) for c in channels)
    except InvalidChannel as exc:
        raise InvalidLink(f"invalid channel: {exc}") from None
    if user_pk is not None and not isinstance(user_pk, str):
        raise InvalidLink("the user id is not a string")
    if resume is not None and not isinstance(resume, str):
        raise InvalidLink("the resume cursor is not a string")
    if filtered not in (0, 1) or isinstance(filtered, bool):
        raise InvalidLink("the filter flag is not 0 or 1")
    if (nonce is None) != (resume is None) or (nonce is not None and not isinstance(nonce, str)):
        raise InvalidLink("a page link without a nonce, or a nonce on a next link")
    if stream is not None and not isinstance(stream, str):
        raise InvalidLink("the presence stream id is not a string")
    return LinkState(names, user_pk, resume, filtered=bool(filtered), nonce=nonce, stream=stream)


GONE_SALT = "grip_eventstream.gone"
GONE_SEGMENT = "_gone/"


def gone_url(base_path: str, stream: str) -> str:
    """The gone link of a presence stream below ``base_path`` (see :func:`read_gone_token`).

    Pushpin 1.41 requests it once the client has disconnected. The token only names the
    stream and does not expire (a stream may stay open for days): it is worth nothing
    before that request, since a client never sees it, and nothing after, since ending a
    stream that has ended changes nothing.
    """
    token = signing.dumps(stream, salt=GONE_SALT)
    return f"{grip.link_path(base_path)}{GONE_SEGMENT}{token}/"


def read_gone_token(token: str) -> str:
    """The presence stream id a gone token names; InvalidLink unless it is ours."""
    try:
        stream = signing.loads(token, salt=GONE_SALT)
    except (signing.BadSignature, ValueError):
        raise InvalidLink("bad signature") from None
    if not isinstance(stream, str):
        raise InvalidLink("unexpected payload")
    return stream


def link_url(base_path: str, state: LinkState) -> str:
    """The next link below ``base_path`` (the stream's decoded URL path, ending in "/")."""
    return f"{grip.link_path(base_path)}{SEGMENT}{make_token(state)}/"


def base_path(path: str, token: str) -> str:
    """The stream's own path, from the path of one of its next links."""
    return path.removesuffix(f"{SEGMENT}{token}/")

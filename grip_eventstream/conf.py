"""Typed, lazy access to the settings grip_eventstream reads.

Every property reads ``django.conf.settings`` (remembered until a setting changes, see
``_get``), so ``override_settings`` works everywhere. Objects that are expensive to build
from settings (publisher clients, the channel manager, the storage) are cached in
:mod:`grip_eventstream.registry` and dropped when a setting they depend on changes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

from django.conf import settings

DEFAULT_CHANNELMANAGER_CLASS = "grip_eventstream.channelmanager.DefaultChannelManager"

# Pushpin accepts at most 20 channels per connection (``connection_subscription_max``).
# Two are reserved for the library's own per-connection channels (revocation), so
# EVENTSTREAM_MAX_CHANNELS may be at most 18.
PUSHPIN_CHANNELS_PER_CONNECTION = 20
RESERVED_CHANNELS = 2
MAX_CHANNELS_LIMIT = PUSHPIN_CHANNELS_PER_CONNECTION - RESERVED_CHANNELS

# Pushpin 1.36 answers 502 (which ends a browser's EventSource for good) to a subscribe
# response that holds with the build-id filter and has a body over PUSHPIN_INSTRUCT_LIMIT
# bytes (measured: 100,000 passes, 100,001 fails; headers do not count). A replay page may
# exceed its byte budget by its reset notices and ids (at most about 16 KB), hence the cap.
PUSHPIN_INSTRUCT_LIMIT = 100_000
MAX_REPLAY_BYTES_LIMIT = 80_000
DEFAULT_REPLAY_MAX_BYTES = 64 * 1024
DEFAULT_MAX_EVENT_BYTES = 64 * 1024

PublishErrors = Literal["raise", "log"]


def string_list(value: object) -> tuple[str, ...]:
    """A list setting also given as one comma-separated string (django-eventstream's form).

    Values of other types give an empty list here; system check E008 reports them.
    """
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()


# Values read, by setting name. Every stream request reads about ten settings, most of them
# unset, and Django finds an unset setting only through a raised AttributeError (profiled:
# 2 µs a read, a tenth of what a subscribe adds to a hello-world view). The memory belongs
# to one settings object: override_settings (and pytest-django's settings fixture, even
# its "del") installs a new one, which empties it, and setting_changed empties it too
# (registry.clear_caches).
_values: dict[str, Any] = {}
_values_of: list[object] = [None]
_UNSET = object()
_T = TypeVar("_T")


class _Recorders(threading.local):
    # The names read while registry builds an object from settings (registry.from_settings),
    # per thread: a gunicorn worker may build in several threads at once.
    def __init__(self) -> None:
        self.stack: list[set[str]] = []


_recorders = _Recorders()


def _get(name: str, default: _T) -> Any | _T:
    if _recorders.stack:
        _recorders.stack[-1].add(name)
    holder = settings._wrapped  # type: ignore[misc]  # LazySettings: the settings object
    if holder is not _values_of[0]:
        _values.clear()
        _values_of[0] = holder
    value = _values.get(name, _UNSET)
    if value is _UNSET:
        value = _values[name] = getattr(settings, name, default)
    return value


def forget_values() -> None:
    """Read every setting afresh on its next use."""
    _values.clear()


class Settings:
    """The settings this app reads, with their defaults. Documented in the README."""

    @property
    def GRIP_URL(self) -> str | None:
        return _get("GRIP_URL", None)

    @property
    def GRIP_PROXIES(self) -> Sequence[dict[str, Any]] | None:
        return _get("GRIP_PROXIES", None)

    @property
    def EVENTSTREAM_STORAGE_CLASS(self) -> str | None:
        return _get("EVENTSTREAM_STORAGE_CLASS", None)

    @property
    def EVENTSTREAM_CHANNELMANAGER_CLASS(self) -> str:
        return _get("EVENTSTREAM_CHANNELMANAGER_CLASS", DEFAULT_CHANNELMANAGER_CLASS)

    @property
    def EVENTSTREAM_ALLOW_ORIGINS(self) -> Sequence[str]:
        # django-eventstream's older single-origin name wins when set, as it does there.
        value = _get("EVENTSTREAM_ALLOW_ORIGIN", None) or _get("EVENTSTREAM_ALLOW_ORIGINS", ())
        return string_list(value)

    @property
    def EVENTSTREAM_ALLOW_CREDENTIALS(self) -> bool:
        return _get("EVENTSTREAM_ALLOW_CREDENTIALS", False)

    @property
    def EVENTSTREAM_ALLOW_HEADERS(self) -> Sequence[str]:
        return string_list(_get("EVENTSTREAM_ALLOW_HEADERS", ()))

    @property
    def EVENTSTREAM_KEEP_ALIVE(self) -> int:
        return _get("EVENTSTREAM_KEEP_ALIVE", 20)

    @property
    def EVENTSTREAM_LINK_TIMEOUT(self) -> int:
        return _get("EVENTSTREAM_LINK_TIMEOUT", 120)

    @property
    def EVENTSTREAM_PUBLISH_TIMEOUT(self) -> float:
        return _get("EVENTSTREAM_PUBLISH_TIMEOUT", 5.0)

    @property
    def EVENTSTREAM_PUBLISH_ERRORS(self) -> PublishErrors:
        return _get("EVENTSTREAM_PUBLISH_ERRORS", "raise")

    @property
    def EVENTSTREAM_MAX_CHANNELS(self) -> int:
        return _get("EVENTSTREAM_MAX_CHANNELS", 10)

    @property
    def EVENTSTREAM_REPLAY_LIMIT(self) -> int:
        return _get("EVENTSTREAM_REPLAY_LIMIT", 500)

    @property
    def EVENTSTREAM_REPLAY_MAX_BYTES(self) -> int:
        return _get("EVENTSTREAM_REPLAY_MAX_BYTES", DEFAULT_REPLAY_MAX_BYTES)

    @property
    def EVENTSTREAM_MAX_EVENT_BYTES(self) -> int:
        return _get("EVENTSTREAM_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES)

    @property
    def EVENTSTREAM_RECONNECT_SPREAD(self) -> int:
        return _get("EVENTSTREAM_RECONNECT_SPREAD", 10)

    @property
    def EVENTSTREAM_STORAGE_TTL(self) -> int:
        return _get("EVENTSTREAM_STORAGE_TTL", 24 * 3600)

    @property
    def EVENTSTREAM_PRESENCE_TTL(self) -> int:
        # Seconds a presence stream is counted after its last contact with the app (its
        # subscribe or a next-link fetch). Pushpin fetches a quiet stream's next link every
        # EVENTSTREAM_LINK_TIMEOUT seconds (its own default, 120, for 0), and retries a
        # failed fetch for about 30 s: the default outlasts both, so that a live stream is
        # never taken for a ghost; it is also how long a closed stream behind a proxy
        # without gone notices (Pushpin 1.36) stays counted.
        value = _get("EVENTSTREAM_PRESENCE_TTL", None)
        if value is None:
            link_timeout = self.EVENTSTREAM_LINK_TIMEOUT
            # A link timeout of the wrong type is check E006's to report, not this one's.
            valid = isinstance(link_timeout, int) and not isinstance(link_timeout, bool)
            return (link_timeout if valid and link_timeout > 0 else 120) + 60
        return value  # type: ignore[no-any-return]


conf = Settings()


def read(name: str) -> Any:
    """The current value of a setting (``_UNSET`` when it is not set), read afresh.

    Not through ``_get``, whose memory holds values with the caller's default in place of
    an unset setting.
    """
    return getattr(settings, name, _UNSET)


@contextlib.contextmanager
def recording() -> Iterator[set[str]]:
    """Collects the names of the settings read inside the block."""
    names: set[str] = set()
    _recorders.stack.append(names)
    try:
        yield names
    finally:
        _recorders.stack.pop()


def record(names: Iterable[str]) -> None:
    """Count ``names`` as read by the builder recording now, if any (see recording)."""
    if _recorders.stack:
        _recorders.stack[-1].update(names)

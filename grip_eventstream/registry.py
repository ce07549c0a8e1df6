"""Objects built from settings, cached per process and rebuilt when their settings change.

Each cached builder records the settings it reads while it builds (conf.recording), so no
list of "settings that invalidate caches" is kept in step by hand. A cached object is
dropped when one of those settings changes: on Django's ``setting_changed`` signal
(``override_settings``), or, since pytest-django's ``del settings.NAME`` sends no signal,
when the settings object has been replaced and one of them reads differently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import conf as conf_module
from .conf import conf, forget_values

if TYPE_CHECKING:
    from .channelmanager import ChannelManagerBase
    from .proxies import ProxyConfig, SignatureVerifier
    from .publisher import BackgroundPublisher, Publisher
    from .storage import EventStorage

_T = TypeVar("_T")
_MISSING: Any = object()
_cached: list[_FromSettings[Any]] = []


class _FromSettings(Generic[_T]):
    """A builder's one cached value, and the settings (with their values) it was built from."""

    def __init__(self, build: Callable[[], _T]) -> None:
        self._build = build
        self._value: _T = _MISSING
        self._depends: dict[str, Any] = {}
        self._holder: object = None
        functools.update_wrapper(self, build)
        _cached.append(self)

    def __call__(self) -> _T:
        holder = settings._wrapped  # type: ignore[misc]  # LazySettings: the settings object
        if holder is not self._holder:
            # Another settings object (override_settings, pytest-django's settings
            # fixture): still good when everything it was built from reads the same.
            if self._value is not _MISSING and any(
                conf_module.read(name) != value for name, value in self._depends.items()
            ):
                self.cache_clear()
            self._holder = holder
        if self._value is _MISSING:
            with conf_module.recording() as names:
                value = self._build()
            self._depends = {name: conf_module.read(name) for name in names}
            self._value = value
        # Read by another builder (get_publisher calls get_proxies): it depends on these too.
        conf_module.record(self._depends)
        return self._value

    def depends_on(self, setting: str) -> bool:
        return setting in self._depends

    def cache_clear(self) -> None:
        value, self._value = self._value, _MISSING
        self._depends = {}
        close = getattr(value, "close", None)
        if value is not _MISSING and callable(close):
            close()  # publishers: their connection pools and threads

    def cached(self) -> bool:
        return self._value is not _MISSING


def from_settings(build: Callable[[], _T]) -> _FromSettings[_T]:
    return _FromSettings(build)


@from_settings
def get_proxies() -> tuple[ProxyConfig, ...]:
    from .proxies import ProxyConfigError, parse_proxies

    try:
        return tuple(parse_proxies(conf.GRIP_URL, conf.GRIP_PROXIES))
    except ProxyConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


@from_settings
def get_verifier() -> SignatureVerifier | None:
    """Verifies Grip-Sig with every proxy's key; None when no proxy has one."""
    from .proxies import SignatureVerifier, verification_keys

    keys = verification_keys(get_proxies())
    return SignatureVerifier(keys) if keys else None


@from_settings
def get_publisher() -> Publisher:
    from .publisher import Publisher

    return Publisher(get_proxies(), conf.EVENTSTREAM_PUBLISH_TIMEOUT)


@from_settings
def get_background_publisher() -> BackgroundPublisher:
    from .publisher import BackgroundPublisher

    return BackgroundPublisher(get_publisher())


@from_settings
def get_channel_manager() -> ChannelManagerBase:
    return _instantiate(conf.EVENTSTREAM_CHANNELMANAGER_CLASS, "EVENTSTREAM_CHANNELMANAGER_CLASS")  # type: ignore[no-any-return]


@from_settings
def get_storage() -> EventStorage | None:
    path = conf.EVENTSTREAM_STORAGE_CLASS
    if not path:
        return None
    return _instantiate(path, "EVENTSTREAM_STORAGE_CLASS")  # type: ignore[no-any-return]


def stored_channels(channels: Iterable[str]) -> list[str]:
    """The channels among ``channels`` whose events are stored (reliable), in their order.

    The one rule: storage is configured and the channel manager's ``is_channel_reliable``
    says so. Everything that stores, replays or publishes with ids asks here.
    """
    storage = get_storage()
    if storage is None:
        return []
    manager = get_channel_manager()
    return [c for c in channels if manager.is_channel_reliable(c)]


def _instantiate(path: str, setting: str) -> Any:
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"{setting} = {path!r} cannot be imported ({exc}); give the dotted path of a class"
        ) from exc
    return cls()


def clear_caches(*, setting: str, **kwargs: object) -> None:
    """``setting_changed`` receiver, connected in AppConfig.ready()."""
    forget_values()
    # Dependents first: the background publisher before the publisher it sends through.
    for cached in reversed(_cached):
        if cached.depends_on(setting):
            cached.cache_clear()

"""Objects built from settings, cached per process and rebuilt when their settings change."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import CACHED_SETTINGS, conf, forget_values

if TYPE_CHECKING:
    from .channelmanager import ChannelManagerBase
    from .proxies import ProxyConfig, SignatureVerifier
    from .publisher import BackgroundPublisher, Publisher
    from .storage import EventStorage


@functools.cache
def get_proxies() -> tuple[ProxyConfig, ...]:
    from .proxies import ProxyConfigError, parse_proxies

    try:
        return tuple(parse_proxies(conf.GRIP_URL, conf.GRIP_PROXIES))
    except ProxyConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


@functools.cache
def get_verifier() -> SignatureVerifier | None:
    """Verifies Grip-Sig with every proxy's key; None when no proxy has one."""
    from .proxies import SignatureVerifier, verification_keys

    keys = verification_keys(get_proxies())
    return SignatureVerifier(keys) if keys else None


@functools.cache
def get_publisher() -> Publisher:
    from .publisher import Publisher

    return Publisher(get_proxies(), conf.EVENTSTREAM_PUBLISH_TIMEOUT)


@functools.cache
def get_background_publisher() -> BackgroundPublisher:
    from .publisher import BackgroundPublisher

    return BackgroundPublisher(get_publisher())


@functools.cache
def get_channel_manager() -> ChannelManagerBase:
    return _instantiate(conf.EVENTSTREAM_CHANNELMANAGER_CLASS, "EVENTSTREAM_CHANNELMANAGER_CLASS")  # type: ignore[no-any-return]


@functools.cache
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
    if setting not in CACHED_SETTINGS:
        return
    if get_background_publisher.cache_info().currsize:
        get_background_publisher().close()
    get_background_publisher.cache_clear()
    if get_publisher.cache_info().currsize:
        get_publisher().close()
    get_publisher.cache_clear()
    get_proxies.cache_clear()
    get_verifier.cache_clear()
    get_channel_manager.cache_clear()
    get_storage.cache_clear()

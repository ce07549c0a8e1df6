"""grip_eventstream.registry: objects cached per process, rebuilt when their settings change."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from grip_eventstream import registry
from grip_eventstream.channelmanager import DefaultChannelManager
from grip_eventstream.proxies import ProxyConfig
from grip_eventstream.publisher import Publisher
from grip_eventstream.storage import DjangoModelStorage
from tests.channelmanagers import TestChannelManager


def test_objects_are_cached():
    assert registry.get_publisher() is registry.get_publisher()
    assert registry.get_channel_manager() is registry.get_channel_manager()
    assert registry.get_storage() is registry.get_storage()
    assert isinstance(registry.get_publisher(), Publisher)
    assert type(registry.get_channel_manager()) is TestChannelManager
    assert type(registry.get_storage()) is DjangoModelStorage


def test_new_publisher_when_grip_url_changes():
    before = registry.get_publisher()
    closed = []
    before.close = lambda: closed.append(True)  # type: ignore[method-assign]
    with override_settings(GRIP_URL="http://10.0.0.1:5561/?iss=pushpin&key=k"):
        publisher = registry.get_publisher()
        assert publisher is not before
        assert publisher.proxies == [ProxyConfig("http://10.0.0.1:5561", "pushpin", "k")]
        assert registry.get_publisher() is publisher
    assert closed == [True]
    after = registry.get_publisher()
    assert after is not publisher
    assert after is not before


def test_new_publisher_when_grip_proxies_change(settings):
    settings.GRIP_PROXIES = [{"control_uri": "http://a:1"}, {"control_uri": "http://b:2"}]
    assert [p.control_uri for p in registry.get_publisher().proxies] == ["http://a:1", "http://b:2"]


def test_new_publisher_when_timeout_changes(settings):
    settings.EVENTSTREAM_PUBLISH_TIMEOUT = 0.25
    assert registry.get_publisher().timeout == 0.25


def test_unrelated_settings_keep_the_caches(settings):
    objects = registry.get_publisher(), registry.get_channel_manager(), registry.get_storage()
    settings.EVENTSTREAM_KEEP_ALIVE = 3
    settings.SOMETHING_ELSE = 1
    assert (registry.get_publisher(), registry.get_channel_manager(), registry.get_storage()) == (
        objects
    )


def test_channel_manager_follows_its_setting(settings):
    # (pytest-django's "del settings.X" sends no setting_changed: set it instead.)
    settings.EVENTSTREAM_CHANNELMANAGER_CLASS = (
        "grip_eventstream.channelmanager.DefaultChannelManager"
    )
    assert type(registry.get_channel_manager()) is DefaultChannelManager


def test_storage_follows_its_setting(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    assert registry.get_storage() is None
    settings.EVENTSTREAM_STORAGE_CLASS = ""
    assert registry.get_storage() is None


@pytest.mark.parametrize("path", ["tests.nowhere.Manager", "nodots", "tests.channelmanagers.Nope"])
def test_bad_channel_manager_path(settings, path):
    settings.EVENTSTREAM_CHANNELMANAGER_CLASS = path
    with pytest.raises(ImproperlyConfigured, match="EVENTSTREAM_CHANNELMANAGER_CLASS") as info:
        registry.get_channel_manager()
    assert repr(path) in str(info.value)
    assert "dotted path" in str(info.value)


def test_bad_storage_path(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.Nope"
    with pytest.raises(ImproperlyConfigured, match="EVENTSTREAM_STORAGE_CLASS"):
        registry.get_storage()


def test_clear_caches_without_a_cached_publisher():
    registry.get_publisher.cache_clear()
    registry.clear_caches(setting="GRIP_URL")
    assert not registry.get_publisher.cached()


def test_clear_caches_ignores_other_settings():
    publisher = registry.get_publisher()
    registry.clear_caches(setting="DEBUG", value=True, enter=True)
    assert registry.get_publisher() is publisher


def test_stored_channels_is_the_one_reliable_channel_rule(settings):
    from grip_eventstream.registry import stored_channels

    # tests.channelmanagers: volatile-* are not reliable.
    assert stored_channels(["b", "volatile-x", "a"]) == ["b", "a"]
    settings.EVENTSTREAM_STORAGE_CLASS = None
    assert stored_channels(["b", "a"]) == []


def test_each_cached_object_knows_the_settings_it_was_built_from(settings):
    settings.GRIP_URL = "http://127.0.0.1:5561"
    publisher = registry.get_publisher()
    background = registry.get_background_publisher()
    # Read by get_proxies, which get_publisher calls: recorded for both, and for the
    # background publisher built on top of it.
    for cached in (registry.get_proxies, registry.get_publisher, registry.get_background_publisher):
        assert cached.depends_on("GRIP_URL")
        assert cached.depends_on("GRIP_PROXIES")
    assert registry.get_publisher.depends_on("EVENTSTREAM_PUBLISH_TIMEOUT")
    assert not registry.get_publisher.depends_on("EVENTSTREAM_STORAGE_CLASS")
    assert registry.get_storage.depends_on("EVENTSTREAM_STORAGE_CLASS") or not (
        registry.get_storage.cached()
    )
    settings.EVENTSTREAM_KEEP_ALIVE = 5  # read by nothing cached
    assert registry.get_publisher() is publisher
    settings.EVENTSTREAM_PUBLISH_TIMEOUT = 1.5
    assert registry.get_publisher() is not publisher
    assert registry.get_background_publisher() is not background


def test_a_deleted_setting_rebuilds_what_depends_on_it(settings):
    """pytest-django's ``del settings.NAME`` sends no setting_changed signal."""
    settings.GRIP_URL = "http://127.0.0.1:5561"
    assert registry.get_proxies()[0].control_uri == "http://127.0.0.1:5561"
    del settings.GRIP_URL
    assert registry.get_proxies() == ()
    storage = registry.get_storage()
    del settings.EVENTSTREAM_KEEP_ALIVE  # another settings object, same values that matter
    assert registry.get_storage() is storage

"""grip_eventstream.conf: every setting's default, and overrides read on each access."""

from __future__ import annotations

import pytest

from grip_eventstream import conf as conf_module
from grip_eventstream.conf import Settings, conf

# setting: (default, an override)
SETTINGS = {
    "GRIP_URL": (None, "http://pushpin:5561?iss=pushpin&key=k"),
    "GRIP_PROXIES": (None, [{"control_uri": "http://a:5561"}]),
    "EVENTSTREAM_STORAGE_CLASS": (None, "grip_eventstream.storage.DjangoModelStorage"),
    "EVENTSTREAM_CHANNELMANAGER_CLASS": (
        "grip_eventstream.channelmanager.DefaultChannelManager",
        "tests.channelmanagers.TestChannelManager",
    ),
    "EVENTSTREAM_ALLOW_ORIGINS": ((), ("https://example.com",)),
    "EVENTSTREAM_ALLOW_CREDENTIALS": (False, True),
    "EVENTSTREAM_ALLOW_HEADERS": ((), ("Authorization",)),
    "EVENTSTREAM_KEEP_ALIVE": (20, 5),
    "EVENTSTREAM_LINK_TIMEOUT": (120, 30),
    "EVENTSTREAM_PUBLISH_TIMEOUT": (5.0, 0.5),
    "EVENTSTREAM_PUBLISH_ERRORS": ("raise", "log"),
    "EVENTSTREAM_MAX_CHANNELS": (10, 18),
    "EVENTSTREAM_REPLAY_LIMIT": (500, 3),
    "EVENTSTREAM_STORAGE_TTL": (24 * 3600, 60),
    "EVENTSTREAM_REPLAY_MAX_BYTES": (65536, 4096),
    "EVENTSTREAM_MAX_EVENT_BYTES": (65536, 1000),
    "EVENTSTREAM_RECONNECT_SPREAD": (10, 0),
    "EVENTSTREAM_PRESENCE_TTL": (180, 30),
}


def test_every_setting_is_listed_here():
    properties = {name for name, value in vars(Settings).items() if isinstance(value, property)}
    assert properties == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_default(settings, name):
    delattr(settings, name)
    assert getattr(conf, name) == SETTINGS[name][0]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_override_is_read_on_access(settings, name):
    override = SETTINGS[name][1]
    setattr(settings, name, override)
    assert getattr(conf, name) == override
    delattr(settings, name)
    assert getattr(conf, name) == SETTINGS[name][0]


def test_channel_limits():
    assert conf_module.PUSHPIN_CHANNELS_PER_CONNECTION == 20
    assert conf_module.MAX_CHANNELS_LIMIT == 18
    assert conf_module.RESERVED_CHANNELS == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Authorization, Last-Event-ID", ("Authorization", "Last-Event-ID")),
        ("X-One", ("X-One",)),
        ("", ()),
        (" , a ,", ("a",)),
        (["A", "B"], ("A", "B")),
        (("A",), ("A",)),
        (5, ()),
        ([1], ()),
        (None, ()),
    ],
)
def test_string_list(value, expected):
    assert conf_module.string_list(value) == expected


def test_allow_origin_is_django_eventstreams_older_name(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://b.example"]
    assert conf.EVENTSTREAM_ALLOW_ORIGINS == ("https://b.example",)
    settings.EVENTSTREAM_ALLOW_ORIGIN = "https://a.example"
    assert conf.EVENTSTREAM_ALLOW_ORIGINS == ("https://a.example",)


def test_allow_headers_string(settings):
    settings.EVENTSTREAM_ALLOW_HEADERS = "Authorization, X-Custom"
    assert conf.EVENTSTREAM_ALLOW_HEADERS == ("Authorization", "X-Custom")

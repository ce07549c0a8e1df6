"""grip_eventstream.channelmanager: which channels a request streams, and who may read them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from grip_eventstream.channelmanager import DefaultChannelManager

rf = RequestFactory()
manager = DefaultChannelManager()


def channels(query: str = "", /, **kwargs):
    return manager.get_channels_for_request(rf.get("/events/" + query), kwargs)


def test_query_parameters():
    assert channels("?channel=a&channel=b&channel=a") == {"a", "b"}
    assert channels("?channel=room%201") == {"room 1"}
    assert channels() == set()
    assert channels("?other=x") == set()


def test_channels_kwarg_wins_over_everything():
    assert channels(
        "?channel=q",
        **{"channels": ["a", "b"], "format-channels": ["f-{x}"], "channel": "c", "x": "1"},
    ) == {"a", "b"}


def test_format_channels_win_over_channel_and_query():
    assert channels(
        "?channel=q",
        **{"format-channels": ["object-{obj_id}", "all"], "channel": "c", "obj_id": "7"},
    ) == {"object-7", "all"}


def test_channel_kwarg_wins_over_query():
    assert channels("?channel=q", channel="room 1") == {"room 1"}


def test_empty_channels_kwarg_still_ignores_query():
    assert channels("?channel=q", channels=[]) == set()


@pytest.mark.parametrize("template", ["object-{missing}", "object-{0}"])
def test_format_channels_missing_key(template):
    with pytest.raises(ImproperlyConfigured) as info:
        channels(**{"format-channels": [template], "obj_id": "7"})
    message = str(info.value)
    assert repr(template) in message
    assert "obj_id" in message  # the keywords the pattern does have


def test_default_allows_everything():
    for who in (None, User(username="u")):
        assert manager.can_read_channel(who, "private-x")
    assert manager.is_channel_reliable("anything")


def test_channel_ttl_follows_setting(settings):
    assert manager.get_channel_ttl("x") == 24 * 3600
    settings.EVENTSTREAM_STORAGE_TTL = 60
    assert manager.get_channel_ttl("x") == 60


def test_get_user():
    request = rf.get("/events/")
    assert manager.get_user(request) is None  # no AuthenticationMiddleware
    request.user = AnonymousUser()
    assert manager.get_user(request) is None
    user = User(username="u")
    request.user = user
    assert manager.get_user(request) is user


def test_channel_manager_base_is_django_eventstreams_interface(settings):
    from grip_eventstream.channelmanager import ChannelManagerBase

    base = ChannelManagerBase()
    for call in (
        lambda: base.get_channels_for_request(rf.get("/"), {}),
        lambda: base.can_read_channel(None, "a"),
        lambda: base.is_channel_reliable("a"),
    ):
        with pytest.raises(NotImplementedError):
            call()
    assert base.get_user(rf.get("/")) is None
    settings.EVENTSTREAM_STORAGE_TTL = 77
    assert base.get_channel_ttl("a") == 77
    assert isinstance(manager, ChannelManagerBase)


def test_presence_is_off_by_default():
    from grip_eventstream.channelmanager import ChannelManagerBase

    for each in (ChannelManagerBase(), manager):
        assert each.is_presence_channel("room") is False
        assert each.get_presence_events("room") is False

"""The channel manager: which channels a request streams, and who may read them.

Point ``EVENTSTREAM_CHANNELMANAGER_CLASS`` at a subclass of :class:`DefaultChannelManager`
to change any of these decisions. One instance is created per process and reused, so a
manager must not keep per-request state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from .conf import conf


class ChannelManagerBase:
    """The interface of a channel manager, as django-eventstream defines it.

    Subclass :class:`DefaultChannelManager` (which implements every method) to change one
    decision; subclass this to write all of them.
    """

    def get_channels_for_request(
        self, request: HttpRequest, view_kwargs: Mapping[str, Any]
    ) -> set[str]:
        raise NotImplementedError

    def get_user(self, request: HttpRequest) -> AbstractBaseUser | None:
        """The user a stream request is made for; None when anonymous.

        By default the Django user of the request (session cookie, which browsers send
        through Pushpin). Override it for token authentication on plain views, e.g. a
        signed token in the query string, since ``EventSource`` cannot set headers. DRF
        views (:mod:`grip_eventstream.viewsets`) authenticate with DRF instead.
        """
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user  # type: ignore[no-any-return]
        return None

    def can_read_channel(self, user: AbstractBaseUser | None, channel: str) -> bool:
        raise NotImplementedError

    def is_channel_reliable(self, channel: str) -> bool:
        raise NotImplementedError

    def get_channel_ttl(self, channel: str) -> int:
        """Seconds events of ``channel`` are kept for replay (EVENTSTREAM_STORAGE_TTL)."""
        return conf.EVENTSTREAM_STORAGE_TTL

    def is_presence_channel(self, channel: str) -> bool:
        """Whether the streams of ``channel`` are tracked for presence (default: no).

        Tracked streams can be listed with :func:`~grip_eventstream.presence.get_presence`, and
        a user's first open stream on the channel and last closed one fire the
        ``presence_joined`` and ``presence_left`` signals. It costs a database write per
        subscribe and per disconnect of such streams; other channels cost nothing.
        """
        return False

    def get_presence_events(self, channel: str) -> bool:
        """Whether joins and leaves are also sent as events on ``channel`` (default: no).

        Only for presence channels (:meth:`is_presence_channel`). The events have the type
        ``presence`` and JSON data ``{"action": "join" | "leave", "user": ..., "users": ...,
        "streams": ...}`` (see :doc:`/presence`), and are stored with the
        channel's other events when the channel is.
        """
        return False


class DefaultChannelManager(ChannelManagerBase):
    """Channels from the URL configuration or the query string; everyone may read all.

    The default allows every user, anonymous ones included, to read every channel, as
    django-eventstream's does. Override :meth:`can_read_channel` before streaming anything
    private.
    """

    def get_channels_for_request(
        self, request: HttpRequest, view_kwargs: Mapping[str, Any]
    ) -> set[str]:
        """The channels a stream request asks for, in this order of precedence:

        1. ``channels`` in the view kwargs: a fixed list;
        2. ``format-channels``: templates formatted with the view kwargs
           (``"object-{obj_id}"`` with ``objects/<obj_id>/events/``);
        3. ``channel`` in the view kwargs: from a ``<channel>`` path component;
        4. otherwise every ``?channel=`` query parameter.

        Query parameters are ignored whenever the URL configuration chooses.
        """
        if "channels" in view_kwargs:
            return set(view_kwargs["channels"])
        if "format-channels" in view_kwargs:
            channels = set()
            for template in view_kwargs["format-channels"]:
                try:
                    channels.add(template.format(**view_kwargs))
                except (KeyError, IndexError) as exc:
                    raise ImproperlyConfigured(
                        f"format-channels template {template!r} uses {exc}, which is not a "
                        f"keyword of this URL pattern (it has: {sorted(view_kwargs)})"
                    ) from exc
            return channels
        if "channel" in view_kwargs:
            return {view_kwargs["channel"]}
        return set(request.GET.getlist("channel"))

    def can_read_channel(self, user: AbstractBaseUser | None, channel: str) -> bool:
        """Whether ``user`` (None when anonymous) may receive events of ``channel``.

        Asked on every subscribe, replay and next-link request, so a user who loses access
        stops receiving both live events and history.
        """
        return True

    def is_channel_reliable(self, channel: str) -> bool:
        """Whether events of ``channel`` are stored for replay (needs a storage class)."""
        return True

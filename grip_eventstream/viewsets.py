"""A DRF viewset for event streams (needs ``djangorestframework``: the ``drf`` extra).

DRF's authentication (tokens, sessions...) and permission classes apply to subscribe
requests; the channel manager's ``can_read_channel`` is asked as everywhere else::

    router = DefaultRouter()
    router.register("events", configure_events_view_set(channels=["news"]), basename="events")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.http import HttpResponse
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from . import views
from .renderers import BrowsableAPIEventStreamRenderer, SSEEventRenderer


class EventsViewSet(viewsets.ViewSet):
    """Streams ``channels`` (or those the channel manager picks from the URL and query)."""

    http_method_names = ("get", "options")
    renderer_classes = (SSEEventRenderer, BrowsableAPIEventStreamRenderer)
    channels: Sequence[str] = ()
    messages_types: Sequence[str] = ("message",)  # event types the HTML page lists

    def list(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse | Response:
        if isinstance(request.accepted_renderer, BrowsableAPIEventStreamRenderer):
            try:
                channels = views.requested_channels(request._request, self._channel_kwargs())
            except views.Refused as refused:
                return views.text_response(refused.status, refused.message)
            return Response(
                {"channels": channels, "messages_types_json": json.dumps(list(self.messages_types))}
            )
        return views.serve(request._request, lambda: self._channels_and_user(request))

    # Pushpin makes next-link requests itself, without the client's credentials: they are
    # authorised by Grip-Sig and the signed link token (channels and user), not by DRF.
    @action(
        detail=False,
        url_path=r"_link/(?P<grip_link>[^/]+)",
        authentication_classes=[],
        permission_classes=[],
    )
    def link(self, request: Request, grip_link: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """The next link Pushpin follows (see views._link_token); not for clients."""
        return views.serve(request._request, lambda: ([], None), link_token=grip_link)

    def _channel_kwargs(self) -> dict[str, Any]:
        query = self.request.query_params.get("channels")
        if self.channels:
            if query is not None:
                raise views.Refused(400, "This stream's channels are fixed: drop ?channels=.")
            return {"channels": self.channels}
        if query is not None:
            # django-eventstream's form: ?channels=a,b
            return {"channels": [name for name in query.split(",") if name]}
        return dict(self.kwargs)

    def _channels_and_user(self, request: Request) -> tuple[Sequence[str], Any]:
        channels = views.requested_channels(request._request, self._channel_kwargs())
        user = request.user if request.user and request.user.is_authenticated else None
        return channels, user


def configure_events_view_set(
    channels: list[str] | None = None, messages_types: list[str] | None = None, **attrs: Any
) -> type[EventsViewSet]:
    """An EventsViewSet subclass with fixed channels, listed event types and DRF attributes
    (``authentication_classes``, ``permission_classes``...)."""
    attrs["channels"] = tuple(channels or ())
    attrs["messages_types"] = tuple(messages_types or ("message",))
    return type("ConfiguredEventsViewSet", (EventsViewSet,), attrs)

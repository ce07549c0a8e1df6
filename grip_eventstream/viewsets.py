"""A DRF viewset for event streams (needs ``djangorestframework``: the ``drf`` extra).

DRF's authentication (tokens, sessions...) and permission classes apply to subscribe
requests; the channel manager's ``can_read_channel`` is asked as everywhere else::

    router = DefaultRouter()
    router.register("events", configure_events_view_set(channels=["news"]), basename="events")

The routes, query parameters and names are django-eventstream's (see :class:`EventsViewSet`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.http import HttpResponse, HttpResponseBase
from django.utils.encoding import escape_uri_path
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from . import views
from .renderers import FORMAT_ALIASES, BrowsableAPIEventStreamRenderer, SSEEventRenderer

# django-eventstream's form of the format override, which this viewset's page uses too.
STREAM_FORMAT = SSEEventRenderer.format
# Bounds on ?messages_types=: each is an SSE event type the page listens to.
MAX_MESSAGES_TYPES = 32
MAX_MESSAGE_TYPE_LENGTH = 255


class EventStreamContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except that ``?format=`` picks its renderer whatever ``Accept``
    says, as in django-eventstream (``?format=text/event-stream`` streams even for a browser
    that sent ``Accept: text/html``), and that the older format names are understood."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        format = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        if format:
            renderer = self.filter_renderers(renderers, format)[0]  # Http404 when none
            return renderer, renderer.media_type
        chosen: tuple[BaseRenderer, str] = super().select_renderer(
            request, renderers, format_suffix
        )
        return chosen

    def filter_renderers(
        self, renderers: Iterable[BaseRenderer], format: str
    ) -> list[BaseRenderer]:
        return super().filter_renderers(renderers, FORMAT_ALIASES.get(format, format))


class EventsViewSet(viewsets.ViewSet):
    """Streams events to the client, or shows a browser a page that lists them live.

    As django-eventstream's ``EventsViewSet``, the channels are chosen in one of three
    ways, which exclude each other (a request combining the first with another is
    answered ``400``):

    - ``channels`` on the class (or ``configure_events_view_set(channels=...)``);
    - ``?channels=a,b`` in the query (``?channel=a&channel=b`` works too);
    - the URL: ``<prefix>/<channel>/``.

    The page lists events of type ``message``, or of the types in ``messages_types``
    (class attribute or ``configure_events_view_set``), or in ``?messages_types=a,b``
    when the class sets none. ``Accept: text/event-stream`` (what ``EventSource`` sends)
    or ``?format=text/event-stream`` gives the stream, ``Accept: text/html`` or
    ``?format=api_sse`` the page. The event types only choose what the page shows: the
    stream carries every event of its channels.

    Refusals are plain text (the channel manager's, a bad query) or DRF's JSON
    (authentication, permissions, throttling, an unknown ``?format=``), never an event
    stream. ``OPTIONS`` is answered as a CORS preflight, like the plain view, without
    DRF's authentication: browsers send preflights without credentials.
    """

    http_method_names = ("get", "options")
    renderer_classes = (SSEEventRenderer, BrowsableAPIEventStreamRenderer)
    content_negotiation_class = EventStreamContentNegotiation
    channels: Sequence[str] = ()
    messages_types: Sequence[str] = ()  # event types the page lists; () for "message"

    def list(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse | Response:
        return self._respond(request, self._query_channels)

    # django-eventstream's route: <prefix>/<channel>/. Unlike its [^/.]+, dots are allowed:
    # channel names such as "room.1" are common, and the path ends in "/" anyway.
    @action(detail=False, url_path=r"(?P<channel>[^/]+)")
    def channel(
        self, request: Request, channel: str, *args: Any, **kwargs: Any
    ) -> HttpResponse | Response:
        """The stream of the one channel named in the URL."""

        def from_path() -> dict[str, Any]:
            if self.channels:
                raise views.Refused(
                    400,
                    "This stream's channels are fixed: open it without a channel in the URL.",
                )
            # As "channels", the way django-eventstream passes it: channel managers written
            # for it read view_kwargs["channels"].
            return {"channels": [channel]}

        return self._respond(request, from_path)

    # Pushpin makes next-link requests itself, without the client's credentials: they are
    # authorised by Grip-Sig and the signed link token (channels and user), not by DRF. DRF's
    # throttles would count them as Pushpin's, all streams together.
    @action(
        detail=False,
        url_path=r"_link/(?P<grip_link>[^/]+)",
        authentication_classes=[],
        permission_classes=[],
        throttle_classes=[],
    )
    def link(self, request: Request, grip_link: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """The next link Pushpin follows (tokens: links.py); not for clients."""
        return views.serve(request._request, lambda: ([], None), link_token=grip_link)

    # The next links of <prefix>/<channel>/ streams, which live below their stream's path.
    @action(
        detail=False,
        url_path=r"(?P<channel>[^/]+)/_link/(?P<grip_link>[^/]+)",
        authentication_classes=[],
        permission_classes=[],
        throttle_classes=[],
    )
    def channel_link(
        self, request: Request, channel: str, grip_link: str, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        """The next link Pushpin follows for a ``<prefix>/<channel>/`` stream."""
        return views.serve(request._request, lambda: ([], None), link_token=grip_link)

    # Gone notices of presence streams (views.gone), authorised as next links are.
    @action(
        detail=False,
        methods=["post"],
        url_path=r"_gone/(?P<grip_gone>[^/]+)",
        authentication_classes=[],
        permission_classes=[],
        throttle_classes=[],
    )
    def gone(self, request: Request, grip_gone: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """The gone link Pushpin 1.41 requests when a presence stream ends."""
        return views.gone(request._request, grip_gone)

    @action(
        detail=False,
        methods=["post"],
        url_path=r"(?P<channel>[^/]+)/_gone/(?P<grip_gone>[^/]+)",
        authentication_classes=[],
        permission_classes=[],
        throttle_classes=[],
    )
    def channel_gone(
        self, request: Request, channel: str, grip_gone: str, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        """The gone link of a ``<prefix>/<channel>/`` presence stream."""
        return views.gone(request._request, grip_gone)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # A CORS preflight carries no credentials, so DRF's authentication and permissions
        # would refuse it, and its answer says nothing about the stream: answered as the
        # plain view answers it (options() below).
        if request.method == "OPTIONS":
            return
        super().initial(request, *args, **kwargs)

    def options(  # type: ignore[override]  # the stubs say Response; any HttpResponse works
        self, request: Request, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        """A CORS preflight: ``204`` with the headers ``EVENTSTREAM_ALLOW_*`` allow."""
        return views.serve(request._request, lambda: ([], None))

    def finalize_response(  # type: ignore[override]  # as options(): not only Responses
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[arg-type]
        # The stream is an HttpResponse built by the view; a DRF Response here is one of
        # DRF's answers (an error), which the stream renderer would write as a Python repr
        # labelled text/event-stream.
        if isinstance(response, Response) and isinstance(
            response.accepted_renderer, SSEEventRenderer
        ):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    def _respond(
        self, request: Request, channel_kwargs: Callable[[], dict[str, Any]]
    ) -> HttpResponse | Response:
        """The page or the stream; ``channel_kwargs()`` says how the channels are chosen."""
        try:
            types = self._messages_types()
            if isinstance(request.accepted_renderer, BrowsableAPIEventStreamRenderer):
                channels = views.requested_channels(request._request, channel_kwargs())
                return Response(
                    {
                        "channels": channels,
                        "messages_types": types,
                        "stream_url": _stream_url(request),
                    }
                )
        except views.Refused as refused:
            return views.text_response(refused.status, refused.message)

        def channels_and_user() -> tuple[Sequence[str], Any]:
            channels = views.requested_channels(request._request, channel_kwargs())
            user = request.user if request.user and request.user.is_authenticated else None
            return channels, user

        return views.serve(request._request, channels_and_user)

    def _query_channels(self) -> dict[str, Any]:
        query = self.request.query_params.get("channels")
        if self.channels:
            if query is not None:
                raise views.Refused(400, "This stream's channels are fixed: drop ?channels=.")
            return {"channels": self.channels}
        if query is not None:
            # django-eventstream's form: ?channels=a,b, passed on as it passes it.
            return {"channels": [name for name in query.split(",") if name]}
        return dict(self.kwargs)

    def _messages_types(self) -> Sequence[str]:
        query = self.request.query_params.get("messages_types")
        if query is None:
            return list(self.messages_types) or ["message"]
        if self.messages_types:
            raise views.Refused(400, "This stream's event types are fixed: drop ?messages_types=.")
        types = list(dict.fromkeys(name.strip() for name in query.split(",") if name.strip()))
        if not types or len(types) > MAX_MESSAGES_TYPES:
            raise views.Refused(
                400,
                f"?messages_types= takes 1 to {MAX_MESSAGES_TYPES} comma-separated event "
                "types, e.g. ?messages_types=message,update.",
            )
        for name in types:
            if len(name) > MAX_MESSAGE_TYPE_LENGTH or any(c in name for c in "\r\n\x00"):
                raise views.Refused(
                    400,
                    f"?messages_types=: {name[:40]!r} is not an event type (at most "
                    f"{MAX_MESSAGE_TYPE_LENGTH} characters, no line break or NUL).",
                )
        return types


def _stream_url(request: Request) -> str:
    """The URL the page's EventSource opens: this one, query string kept, asking for the
    stream."""
    # The path as the request named it: a channel in the path may hold "#" or "?".
    path = escape_uri_path(request._request.path)
    query = request._request.GET.copy()
    override = EventStreamContentNegotiation.settings.URL_FORMAT_OVERRIDE
    if override:  # the page itself may have been asked for with ?format=api_sse
        query[override] = STREAM_FORMAT
    return f"{path}?{query.urlencode()}" if query else path


def configure_events_view_set(
    channels: list[str] | None = None, messages_types: list[str] | None = None, **attrs: Any
) -> type[EventsViewSet]:
    """An EventsViewSet subclass with fixed channels, listed event types and DRF attributes
    (``authentication_classes``, ``permission_classes``...)."""
    attrs["channels"] = tuple(channels or ())
    attrs["messages_types"] = tuple(messages_types or ())
    return type("ConfiguredEventsViewSet", (EventsViewSet,), attrs)

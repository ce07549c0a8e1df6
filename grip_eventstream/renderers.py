"""DRF renderers for event streams (needs ``djangorestframework``: the ``drf`` extra).

The names and ``format`` values are django-eventstream's: ``?format=text/event-stream``
asks for the stream and ``?format=api_sse`` for the page, whatever the ``Accept`` header
says (``?format=event-stream`` and ``?format=api`` are understood too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.template.loader import render_to_string
from rest_framework.renderers import BaseRenderer

# Other ``?format=`` values that name the same renderers.
FORMAT_ALIASES = {"event-stream": "text/event-stream", "api": "api_sse"}


class SSEEventRenderer(BaseRenderer):
    """Selected for ``Accept: text/event-stream`` (what EventSource sends).

    The stream itself is the GRIP response built by the view; this renderer only makes DRF's
    content negotiation accept the media type. The viewset renders DRF's own answers
    (errors, refusals) as JSON instead, so no error ever looks like a stream.
    """

    media_type = "text/event-stream"
    format = "text/event-stream"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, bytes):
            return data
        return str(data or "").encode(self.charset)


class BrowsableAPIEventStreamRenderer(BaseRenderer):
    """For browsers visiting the endpoint: a page that opens the stream and lists events.

    ``data`` is what the viewset gives: ``channels``, ``messages_types`` (the event types
    listed) and ``stream_url`` (the URL the page's EventSource opens). Override
    ``grip_eventstream/browsable.html`` in the project's templates, or set ``template_name``
    on a subclass, to render a page of the project's instead.
    """

    media_type = "text/html"
    format = "api_sse"
    charset = "utf-8"
    template_name = "grip_eventstream/browsable.html"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> str:
        context = dict(data or {})
        request = (renderer_context or {}).get("request")
        return render_to_string(self.template_name, context, request=request)

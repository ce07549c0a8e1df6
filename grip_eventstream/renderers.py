"""DRF renderers for event streams (needs ``djangorestframework``: the ``drf`` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.template.loader import render_to_string
from rest_framework.renderers import BaseRenderer


class SSEEventRenderer(BaseRenderer):
    """Selected for ``Accept: text/event-stream`` (what EventSource sends).

    The stream itself is the GRIP response built by the view; this renderer only makes DRF's
    content negotiation accept the media type.
    """

    media_type = "text/event-stream"
    format = "event-stream"
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
    """For browsers visiting the endpoint: a page that opens the stream and lists events."""

    media_type = "text/html"
    format = "api"
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

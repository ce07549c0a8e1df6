"""DRF renderers for event streams (needs ``djangorestframework``: the ``drf`` extra).

The names and ``format`` values are django-eventstream's: ``?format=text/event-stream``
asks for the stream and ``?format=api_sse`` for the page, whatever the ``Accept`` header
says (``?format=event-stream`` and ``?format=api`` are understood too).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.template import Context, Engine, Template
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


# The page, built in rather than loaded from the project's templates so that it works in
# projects without a DjangoTemplates backend. Values reach the script through json_script
# only: channel names and ?messages_types= come from the URL, and anything written into a
# <script> as text could close it.
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Event stream: {{ channels|join:", " }}</title>
<style>body{font-family:sans-serif;margin:2em}li{font-family:monospace;white-space:pre-wrap}</style>
</head><body>
<h1>Event stream</h1>
<p>Channels: <code>{{ channels|join:", " }}</code> &middot;
event types: <code>{{ messages_types|join:", " }}</code> &middot;
state: <span id="state">connecting</span></p>
<ol id="events"></ol>
{{ stream_url|json_script:"grip-eventstream-url" }}
{{ messages_types|json_script:"grip-eventstream-types" }}
<script>
  // Opens the stream (this URL with its query string, ?format=text/event-stream) and
  // lists the events of the types above as they arrive.
  const read = (id) => JSON.parse(document.getElementById(id).textContent);
  const source = new EventSource(read("grip-eventstream-url"));
  const state = document.getElementById("state");
  source.onopen = () => { state.textContent = "open"; };
  source.onerror = () => {
    state.textContent = source.readyState === 2 ? "closed" : "reconnecting";
  };
  for (const type of read("grip-eventstream-types")) {
    source.addEventListener(type, (e) => {
      const li = document.createElement("li");
      li.textContent = type + " " + e.lastEventId + "\\n" + e.data;
      document.getElementById("events").appendChild(li);
    });
  }
</script>
</body></html>
"""


@functools.cache
def _page() -> Template:
    return Engine().from_string(_PAGE)


class BrowsableAPIEventStreamRenderer(BaseRenderer):
    """For browsers visiting the endpoint: a page that opens the stream and lists events.

    ``data`` is what the viewset gives: ``channels``, ``messages_types`` (the event types
    listed) and ``stream_url`` (the URL the page's EventSource opens). Set
    ``template_name`` on a subclass to render a template of the project's instead.
    """

    media_type = "text/html"
    format = "api_sse"
    charset = "utf-8"
    template_name: str | None = None

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> str:
        context = dict(data or {})
        request = (renderer_context or {}).get("request")
        if self.template_name is not None:
            return render_to_string(self.template_name, context, request=request)
        return _page().render(Context(context))

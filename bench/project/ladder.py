"""The subscribe path cut into rungs, for bench/subscribe_cost.py.

Rung N runs the real subscribe's first N steps, with the package's own functions in the
order grip_eventstream.views.serve calls them, then answers like the hello view (the last
rung answers with the subscribe's response). Each rung is routed as the stream view is: an
include of three patterns shaped like grip_eventstream.urls, with the view's decorators.
The difference between two rungs is the cost of one step; the real subscribe after the last
rung leaves only what serve() adds around the steps (its error handling).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, include, path
from django.views.decorators.csrf import csrf_exempt

from grip_eventstream import views
from grip_eventstream.conf import conf
from grip_eventstream.cors import cors_headers
from grip_eventstream.registry import get_channel_manager, get_storage, stored_channels

# (rung, what it adds to the one before); rung 0 is the hello view at /hello/.
STEPS = [
    (1, "routing: an include like grip_eventstream.urls, the view's decorators"),
    (2, "reading the request: CORS settings, Grip-Sig check, channels from the query"),
    (3, "the user and the permission check"),
    (4, "the storage read (get_state: one query)"),
    (5, "the answer: presence check, StreamRequest, stream.answer, link token, headers"),
    (6, "the response: HttpResponse with the body and GRIP headers"),
]


def _hello() -> HttpResponse:
    return HttpResponse("hello world\n", content_type="text/plain")


def _rung(rung: int) -> Any:
    @csrf_exempt
    @transaction.non_atomic_requests
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if rung == 1:
            return _hello()
        meta = request.META
        cors = cors_headers(
            meta.get("HTTP_ORIGIN"),
            conf.EVENTSTREAM_ALLOW_ORIGINS,
            conf.EVENTSTREAM_ALLOW_CREDENTIALS,
        )
        views._check_proxy(request)
        channels = views.requested_channels(request, kwargs)
        if rung == 2:
            return _hello()
        user = get_channel_manager().get_user(request)
        if views._denied(user, channels):
            raise AssertionError("the bench's channels are readable by anyone")
        if rung == 3:
            return _hello()
        if rung == 4:
            get_storage().get_state(stored_channels(channels))  # type: ignore[union-attr]
            return _hello()
        answer = views._stream(request, channels, user, None)  # reads the storage itself
        if rung == 5:
            return _hello()
        return views._with_headers(views._stream_response(answer), cors)

    return view


def urlpatterns() -> list[Any]:
    patterns: list[Any] = []
    for rung, _ in STEPS:
        view = _rung(rung)
        shaped: list[URLPattern] = [
            path("", view),
            path("_link/<str:grip_link>/", view),
            path("_gone/<str:grip_gone>/", view),
        ]
        patterns.append(path(f"ladder/{rung}/", include(shaped)))
    return patterns

from django.http import HttpResponse
from django.urls import include, path

import grip_eventstream
from bench.project import ladder


def hello(request):
    return HttpResponse("hello world\n", content_type="text/plain")


def hold(request):
    """A stream's answer with no work behind it: what Pushpin's handling of a hold costs."""
    response = HttpResponse("", content_type="text/event-stream")
    response["Grip-Hold"] = "stream"
    response["Grip-Channel"] = "bench-static"
    return response


def refuse(request):
    """What an app-side guard answering a client's excess streams before any database
    access would cost (bench/burst.py --a-path /refuse/): no session, no query."""
    return HttpResponse("Too many streams.\n", status=429, content_type="text/plain")


urlpatterns = [
    path("hello/", hello),
    path("hold/", hold),
    path("refuse/", refuse),
    path("stream/", include(grip_eventstream.urls)),
    # After the routes bench/run.py measures, so that they resolve as they did before.
    *ladder.urlpatterns(),
]

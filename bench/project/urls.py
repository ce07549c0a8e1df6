from django.http import HttpResponse
from django.urls import include, path

import grip_eventstream


def hello(request):
    return HttpResponse("hello world\n", content_type="text/plain")


urlpatterns = [
    path("hello/", hello),
    path("stream/", include(grip_eventstream.urls)),
]

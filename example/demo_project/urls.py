from chat import CHANNEL
from django.urls import include, path

import grip_eventstream.urls

urlpatterns = [
    path("", include("chat.urls")),
    # The event stream. Browsers reach it through Pushpin (http://127.0.0.1:7999/events/);
    # the extra keyword argument fixes the channels this URL streams.
    path("events/", include(grip_eventstream.urls), {"channels": [CHANNEL]}),
]

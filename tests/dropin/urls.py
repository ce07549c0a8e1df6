from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path
from rest_framework import routers

import grip_eventstream
from grip_eventstream.viewsets import EventsViewSet, configure_events_view_set
from tests.dropin import views

router = routers.SimpleRouter()
router.register("drf/events", configure_events_view_set(channels=["news"]), basename="news")
router.register("drf/any", EventsViewSet, basename="any")
# django-eventstream's README example: fixed channels and the event types its page lists.
router.register(
    "drf/events1",
    configure_events_view_set(
        channels=["channel1", "channel2"], messages_types=["message", "info"]
    ),
    basename="events1",
)

urlpatterns = [
    path("events/", include(grip_eventstream.urls), {"channels": ["test"]}),
    path("stream/", include(grip_eventstream.urls)),
    path("page/", views.page),
    path("send/", views.send),
    path("login/", views.login_view),
    *router.urls,
    # gunicorn serves the static scripts here (a real deployment: collectstatic + whitenoise).
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
]

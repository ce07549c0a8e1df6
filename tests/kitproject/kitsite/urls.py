from django.urls import include, path

import grip_eventstream

from . import views

urlpatterns = [
    path("comments/", views.post_comment),
    path("events/", include(grip_eventstream.urls), {"channels": ["comments"]}),
    path("stream/", include(grip_eventstream.urls)),  # ?channel=inbox-<user id>
]

from django.contrib import admin
from django.urls import include, path

import grip_eventstream
from tests import drf, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("events/", include(grip_eventstream.urls), {"channels": ["test"]}),
    path("multi/", include(grip_eventstream.urls), {"channels": ["test", "room 1", "ünï"]}),
    path(
        "objects/<obj_id>/events/",
        include(grip_eventstream.urls),
        {"format-channels": ["object-{obj_id}"]},
    ),
    path("rooms/<channel>/events/", include(grip_eventstream.urls)),
    path("stream/", include(grip_eventstream.urls)),
    path("send/", views.send),
    path("login/", views.login_view),
    path("page/", views.page),
    path("htmx/", views.htmx_page),
    path("npm/<path:path>", views.npm_file),
    *drf.router.urls,
]

urlpatterns += [path("send-raw/", views.send_raw)]

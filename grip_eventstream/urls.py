"""Include with channels chosen in the kwargs, a <channel> path component, or ?channel=::

    path("events/", include(grip_eventstream.urls), {"channels": ["test"]})
    path("objects/<obj_id>/events/", include(grip_eventstream.urls),
         {"format-channels": ["object-{obj_id}"]})
    path("rooms/<channel>/events/", include(grip_eventstream.urls))

As everywhere in Django, the including pattern ends with "/": the next links that Pushpin
follows for gap repair live below it.
"""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.events, name="grip_eventstream-events"),
    # Next links Pushpin follows for gap repair and paging (tokens: links.py).
    path("_link/<str:grip_link>/", views.events, name="grip_eventstream-link"),
    # Gone notices Pushpin 1.41 sends when a presence stream ends (views.gone).
    path("_gone/<str:grip_gone>/", views.events, name="grip_eventstream-gone"),
]

"""bench/project's application with the subscribe's presence step taken out.

The stream view as it would be had presence never reached the subscribe path: the
contender against which bench/presence.py weighs what presence costs a stream on channels
without presence (views._presence is the only presence code such a subscribe runs).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.presence_settings")
application = get_wsgi_application()

from grip_eventstream import views  # noqa: E402


def _no_presence(request, channels, user_pk, link, features):
    return None, None


views._presence = _no_presence

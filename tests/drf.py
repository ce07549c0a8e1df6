"""DRF wiring for the tests: a viewset behind a token taken from the query string."""

from django.contrib.auth import get_user_model
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import SimpleRouter

from grip_eventstream.viewsets import configure_events_view_set


class QueryTokenAuthentication(BaseAuthentication):
    """?token=USERNAME: EventSource cannot set headers, so tokens travel in the query."""

    def authenticate(self, request):
        token = request.query_params.get("token")
        if not token:
            return None
        user = get_user_model().objects.filter(username=token).first()
        return (user, token) if user else None


router = SimpleRouter()
router.register(
    "drf/events",
    configure_events_view_set(
        channels=["private-drf"],
        messages_types=["message"],
        authentication_classes=[QueryTokenAuthentication],
        permission_classes=[IsAuthenticated],
    ),
    basename="drf-events",
)
router.register(
    "drf/any",
    configure_events_view_set(authentication_classes=[QueryTokenAuthentication]),
    basename="drf-any",
)

"""DRF wiring for the tests: a viewset behind a token taken from the query string, one with
any channels, one throttled, one with fixed event types."""

from django.contrib.auth import get_user_model
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import SimpleRouter
from rest_framework.throttling import AnonRateThrottle

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


class OncePerMinute(AnonRateThrottle):
    rate = "1/min"


router.register(
    "drf/throttled",
    configure_events_view_set(throttle_classes=[OncePerMinute]),
    basename="drf-throttled",
)
router.register(
    "drf/typed",
    configure_events_view_set(messages_types=["message", "update"]),
    basename="drf-typed",
)

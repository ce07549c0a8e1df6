"""grip_eventstream.viewsets: channel choice and content negotiation (no Pushpin here)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.test_views import call, channel_header, link_of

pytestmark = pytest.mark.django_db


def test_channels_query_in_django_eventstreams_form():
    response = call("/drf/any/?channels=a,b,,a")
    assert response.status_code == 200
    assert set(channel_header(response)) == {"a", "b"}


def test_channel_query_still_works():
    response = call("/drf/any/?channel=a&channel=b")
    assert set(channel_header(response)) == {"a", "b"}


def test_fixed_channels_refuse_a_channels_query():
    User.objects.create(username="u")
    response = call("/drf/events/?token=u&channels=other")
    assert response.status_code == 400
    assert b"fixed" in response.content


def test_htmx4_accept_header_gets_the_stream():
    # htmx 4 asks for "text/html, text/event-stream": the stream renderer comes first.
    response = call("/drf/any/?channels=a", Accept="text/html, text/event-stream")
    assert response["Content-Type"] == "text/event-stream"
    assert response["Grip-Hold"] == "stream"
    assert link_of(response).path.startswith("/drf/any/_link/")


def test_a_browser_gets_the_page():
    response = call("/drf/any/?channels=a", Accept="text/html")
    response.render()
    assert response["Content-Type"].startswith("text/html")

"""grip_eventstream.viewsets: channel choice and content negotiation (no Pushpin here)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User

from grip_eventstream.grip import pushpin_channel
from tests.test_views import body_events, call, channel_header, link_of, link_state, store

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


def rendered(response):
    """DRF answers are rendered by Django's handler, which a direct call skips."""
    if hasattr(response, "render"):
        response.render()
    return response


STREAM = {"Accept": "text/event-stream"}


# --- refusals are never event streams ---------------------------------------------------


@pytest.fixture
def throttle_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize(
    ("method", "path", "status", "detail"),
    [
        ("get", "/drf/events/", 403, "credentials were not provided"),  # IsAuthenticated
        ("post", "/drf/any/?channels=a", 405, 'Method \\"POST\\" not allowed'),
        ("delete", "/drf/any/a/", 405, 'Method \\"DELETE\\" not allowed'),
        ("get", "/drf/any/?channels=a&format=xml", 404, "Not found"),
    ],
    ids=["permission", "405-list", "405-path", "unknown-format"],
)
def test_drf_errors_for_an_event_source_are_json(method, path, status, detail):
    response = rendered(call(path, method, **STREAM))
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert detail in response.content.decode()
    assert "Grip-Hold" not in response


def test_not_acceptable_is_json():
    response = rendered(call("/drf/any/?channels=a", Accept="application/json"))
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"


def test_throttling_is_json_and_never_throttles_next_links(throttle_cache):
    first = call("/drf/throttled/?channels=a", **STREAM)
    assert first.status_code == 200
    throttled = rendered(call("/drf/throttled/?channels=a", **STREAM))
    assert throttled.status_code == 429
    assert throttled["Content-Type"] == "application/json"
    assert b"throttled" in throttled.content
    # Pushpin fetches every stream's next link from its own address: never throttled.
    link = link_of(first)
    assert link.path.startswith("/drf/throttled/_link/")
    for _ in range(3):
        again = call(link.path, **STREAM, **{"Grip-Last": f"{pushpin_channel('a')}; last-id=0"})
        assert again.status_code == 200


def test_the_channel_managers_refusals_stay_plain_text():
    response = rendered(call("/drf/any/?channels=private-x", **STREAM))
    assert response.status_code == 403
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_options_is_a_cors_preflight_even_where_drf_wants_credentials(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example"]
    for path in ("/drf/events/", "/drf/any/a/"):
        response = rendered(
            call(
                path,
                "options",
                sig=None,
                Origin="https://a.example",
                **STREAM,
                **{"Access-Control-Request-Method": "GET"},
            )
        )
        assert response.status_code == 204
        assert response.content == b""
        assert response["Access-Control-Allow-Origin"] == "https://a.example"
        assert response["Access-Control-Allow-Methods"] == "GET, OPTIONS"
        assert "event-stream" not in response.get("Content-Type", "")


# --- django-eventstream's <prefix>/<channel>/ route --------------------------------------


def test_channel_in_the_path():
    response = call("/drf/any/room.1/", **STREAM)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert set(channel_header(response)) == {pushpin_channel("room.1")}
    assert link_state(response).channels == ("room.1",)


def test_next_links_of_a_channel_in_the_path_are_below_it():
    store("room 1")
    response = call("/drf/any/room%201/", **STREAM)
    link = link_of(response)
    assert link.path.startswith("/drf/any/room%201/_link/")
    headers = {"Grip-Last": f"{pushpin_channel('room 1')}; last-id=0", **STREAM}
    again = call(link.path, **headers)
    assert again.status_code == 200
    [event], _ = body_events(again)
    assert event.data == "x"
    assert link_of(again).path.startswith("/drf/any/room%201/_link/")


def test_channel_in_the_path_needs_drf_permissions():
    response = rendered(call("/drf/events/news/", **STREAM))
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"


def test_fixed_channels_refuse_a_channel_in_the_path():
    User.objects.create(username="u")
    response = call("/drf/events/other/?token=u", **STREAM)
    assert response.status_code == 400
    assert b"fixed" in response.content


# --- ?format= ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text/event-stream", "event-stream"])
def test_format_query_streams_whatever_accept_says(fmt):
    response = call(f"/drf/any/?channels=a&format={fmt}", Accept="text/html")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Grip-Hold"] == "stream"


@pytest.mark.parametrize("fmt", ["api_sse", "api"])
def test_format_query_gives_the_page_whatever_accept_says(fmt):
    response = rendered(call(f"/drf/any/?channels=a&format={fmt}", **STREAM))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "Grip-Hold" not in response


# --- the page and ?messages_types= --------------------------------------------------------


def page(path: str):
    response = rendered(call(path, Accept="text/html"))
    assert response.status_code == 200, response.content
    html = response.content.decode()

    def script(name: str):
        found = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', html)
        assert found, html
        return json.loads(found.group(1))

    return html, script("grip-eventstream-url"), script("grip-eventstream-types")


def test_the_pages_stream_keeps_the_query_string():
    html, url, types = page("/drf/any/?channels=a,b&lastEventId=x")
    assert "new EventSource(" in html
    assert url == "/drf/any/?channels=a%2Cb&lastEventId=x&format=text%2Fevent-stream"
    assert types == ["message"]
    # What the page's EventSource then gets.
    response = call(url, **STREAM)
    assert response.status_code == 200
    assert set(channel_header(response)) == {"a", "b"}


def test_the_page_asked_for_with_format_opens_the_stream_format():
    _, url, _ = page("/drf/any/room/?format=api_sse")
    assert url == "/drf/any/room/?format=text%2Fevent-stream"
    assert call(url, Accept="text/html")["Grip-Hold"] == "stream"


def test_messages_types_query_chooses_what_the_page_lists():
    _, url, types = page("/drf/any/?channels=a&messages_types=update,%20info,,update")
    assert types == ["update", "info"]
    # The stream itself carries every event type of its channels.
    assert call(url, **STREAM).status_code == 200


def test_configured_messages_types_are_listed_and_refuse_the_query():
    assert page("/drf/typed/?channels=a")[2] == ["message", "update"]
    for accept in ("text/html", "text/event-stream"):
        response = call("/drf/typed/?channels=a&messages_types=x", Accept=accept)
        assert response.status_code == 400
        assert b"event types are fixed" in response.content


@pytest.mark.parametrize(
    "query",
    [
        "messages_types=",
        "messages_types=,,",
        "messages_types=a%0Ab",
        "messages_types=" + "x" * 256,
        "messages_types=" + ",".join(f"t{n}" for n in range(33)),
    ],
    ids=["empty", "commas", "line-break", "too-long", "too-many"],
)
def test_bad_messages_types_are_400(query):
    response = call(f"/drf/any/?channels=a&{query}", Accept="text/html")
    assert response.status_code == 400
    assert b"messages_types" in response.content


def test_the_page_cannot_be_scripted_through_the_query():
    hostile = "</script><script>alert(1)</script>"
    html, url, types = page(f"/drf/any/?channels={quote(hostile)}&messages_types={quote(hostile)}")
    assert "<script>alert(1)" not in html
    assert types == [hostile]
    assert hostile.replace(",", "%2C") not in url


@pytest.mark.parametrize("path", ["/drf/any/room/", "/drf/any/?channels=room"])
def test_channels_reach_the_channel_manager_as_django_eventstream_passes_them(settings, path):
    # A django-eventstream project's manager reads view_kwargs["channels"] only.
    settings.EVENTSTREAM_CHANNELMANAGER_CLASS = "tests.dropin.channelmanager.MyChannelManager"
    response = call(path, **STREAM)
    assert response.status_code == 200
    assert set(channel_header(response)) == {"room"}


def test_the_pages_stream_url_escapes_the_path():
    _, url, _ = page("/drf/any/a%23b%3Fc%20d/")
    assert url == "/drf/any/a%23b%3Fc%20d/?format=text%2Fevent-stream"
    response = call(url, **STREAM)
    assert link_state(response).channels == ("a#b?c d",)

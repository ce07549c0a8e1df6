"""The DRF viewset through a real Pushpin: token authentication, django-eventstream's route
and query parameters, the browsable page (in Chromium too), in this project and in the
django-eventstream-style project (tests/dropin)."""

import json
import re
import time
import uuid

import pytest
import requests
from django.contrib.auth.models import User

from grip_eventstream import send_event
from grip_eventstream.storage import DjangoModelStorage
from tests.conftest import Stack, start_stack, wait_events

pytestmark = pytest.mark.e2e


def test_token_authenticated_stream(stack):
    name = f"drf-{uuid.uuid4().hex[:8]}"
    User.objects.create(username=name)
    with stack.stream(f"/drf/events/?token={name}") as reader:
        assert reader.status == 200
        send_event("private-drf", "message", {"n": 1})
        wait_events(reader, 1)
        # A lost publish, repaired through the viewset's next link (no token there).
        DjangoModelStorage().append_event("private-drf", "message", '{"n": 2}', 3600)
        send_event("private-drf", "message", {"n": 3})
        got = wait_events(reader, 3, timeout=15)
    assert [json.loads(e.data)["n"] for e in got] == [1, 2, 3]


def test_unauthenticated_is_refused_by_drf(stack):
    with stack.stream("/drf/events/") as reader:
        assert reader.status in (401, 403)


def test_channels_from_the_query_and_replay_via_next_link(stack):
    channel = f"drf-{uuid.uuid4().hex[:8]}"
    with stack.stream(f"/drf/any/?channel={channel}") as reader:
        send_event(channel, "message", {"n": 1})
        [event] = wait_events(reader, 1)
    assert event.last_event_id
    send_event(channel, "message", {"n": 2})
    headers = {"Last-Event-ID": event.last_event_id}
    with stack.stream(f"/drf/any/?channel={channel}", headers=headers) as reader:
        [again] = wait_events(reader, 1)
    assert json.loads(again.data) == {"n": 2}


def test_browsable_page_for_browsers(stack):
    res = requests.get(
        f"{stack.url}/drf/any/?channel=x", headers={"Accept": "text/html"}, timeout=5
    )
    assert res.status_code == 200
    assert "new EventSource" in res.text
    assert "Grip-Hold" not in res.headers


def test_drf_errors_through_pushpin_are_json(stack):
    with stack.stream("/drf/events/") as reader:  # Accept: text/event-stream
        assert reader.status == 403
        assert reader.headers["Content-Type"] == "application/json"
        assert "Grip-Hold" not in reader.headers
    response = requests.post(f"{stack.url}/drf/any/?channels=x", timeout=5)
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "POST" not allowed.'}


# --- django-eventstream's route and query parameters, through Pushpin ----------------------


def test_channel_in_the_path_streams_and_repairs_gaps(stack):
    channel = f"drf.{uuid.uuid4().hex[:8]}"  # a dot, which django-eventstream's route refuses
    with stack.stream(f"/drf/any/{channel}/") as reader:
        assert reader.status == 200
        send_event(channel, "message", {"n": 1})
        wait_events(reader, 1)
        # A lost publish, repaired through the next link below /drf/any/<channel>/.
        DjangoModelStorage().append_event(channel, "message", '{"n": 2}', 3600)
        send_event(channel, "message", {"n": 3})
        got = wait_events(reader, 3, timeout=15)
    assert [json.loads(e.data)["n"] for e in got] == [1, 2, 3]
    send_event(channel, "message", {"n": 4})
    headers = {"Last-Event-ID": got[-1].last_event_id}
    with stack.stream(f"/drf/any/{channel}/", headers=headers) as reader:
        [again] = wait_events(reader, 1)
    assert json.loads(again.data) == {"n": 4}


def test_format_query_streams_for_a_browser_accept_header(stack):
    channel = f"drf-{uuid.uuid4().hex[:8]}"
    headers = {"Accept": "text/html"}
    url = f"/drf/any/?channels={channel}&format=text/event-stream"
    with stack.stream(url, headers=headers) as reader:
        assert reader.status == 200
        assert reader.headers["Content-Type"] == "text/event-stream"
        send_event(channel, "message", {"n": 1})
        [event] = wait_events(reader, 1)
    assert json.loads(event.data) == {"n": 1}


def page_stream_url(base: str, path: str) -> str:
    """The URL the browsable page's EventSource opens, read from the page."""
    res = requests.get(base + path, headers={"Accept": "text/html"}, timeout=5)
    assert res.status_code == 200, res.text
    found = re.search(r'<script id="grip-eventstream-url" type="application/json">(.*?)<', res.text)
    assert found, res.text
    return str(json.loads(found.group(1)))


def test_the_pages_stream_keeps_channels_and_messages_types(stack):
    a, b = f"drf-{uuid.uuid4().hex[:8]}", f"drf-{uuid.uuid4().hex[:8]}"
    url = page_stream_url(stack.url, f"/drf/any/?channels={a},{b}&messages_types=update")
    with stack.stream(url) as reader:
        assert reader.status == 200
        send_event(a, "update", {"n": 1})
        send_event(b, "message", {"n": 2})
        got = wait_events(reader, 2)
    # The stream carries every type; the page shows the listed ones.
    assert [(e.type, json.loads(e.data)) for e in got] == [
        ("update", {"n": 1}),
        ("message", {"n": 2}),
    ]


@pytest.mark.browser
def test_browsable_page_in_chromium(stack, driver):
    """The page a person sees: it opens its stream (with the page's query string) and lists
    the events of the types in ?messages_types= only."""
    from tests import browser

    if reason := browser.missing():
        pytest.skip(reason)

    def page_shows(script: str, done, what: str, timeout: float = 15):
        deadline = time.monotonic() + timeout
        while not done(value := driver.execute_script(script)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; page: {driver.page_source}")
            time.sleep(0.05)
        return value

    channel = f"drf-{uuid.uuid4().hex[:8]}"
    driver.get(f"{stack.url}/drf/any/?channels={channel}&messages_types=update,info")
    state = "return document.getElementById('state').textContent"
    page_shows(state, lambda value: value == "open", "open stream")
    send_event(channel, "message", {"n": 0})  # not listed
    send_event(channel, "update", {"n": 1})
    send_event(channel, "info", {"n": 2})
    items = "return [...document.querySelectorAll('#events li')].map(li => li.textContent)"
    shown = page_shows(items, lambda value: len(value) >= 2, "2 listed events")
    assert [text.split(" ", 1)[0] for text in shown] == ["update", "info"]
    assert [json.loads(text.split("\n", 1)[1]) for text in shown] == [{"n": 1}, {"n": 2}]


# --- the same in the django-eventstream-style project (tests/dropin) -------------------------


@pytest.fixture(scope="module")
def dropin_stack(test_db_name, tmp_path_factory, django_db_blocker):
    """tests/dropin behind Pushpin, with django_grip.GripMiddleware as django-eventstream
    projects have it."""
    stack = start_stack(
        tmp_path_factory.mktemp("dropin-drf"),
        test_db_name,
        project="tests.dropin",
        env={"GES_GRIP_MIDDLEWARE": "1"},
    )
    yield stack
    stack.stop()


@pytest.fixture
def dropin(dropin_stack, settings, transactional_db) -> Stack:
    """This process publishes to the drop-in project's Pushpin."""
    settings.GRIP_URL = dropin_stack.grip_url
    return dropin_stack


def test_dropin_channel_route(dropin):
    channel = f"dropin.{uuid.uuid4().hex[:8]}"
    with dropin.stream(f"/drf/any/{channel}/") as reader:
        assert reader.status == 200
        send_event(channel, "message", {"n": 1})
        [event] = wait_events(reader, 1)
    assert json.loads(event.data) == {"n": 1}
    # A viewset with fixed channels refuses a channel in the path, as django-eventstream's.
    with dropin.stream(f"/drf/events1/{channel}/") as reader:
        assert reader.status == 400


def test_dropin_format_query(dropin):
    channel = f"dropin-{uuid.uuid4().hex[:8]}"
    url = f"/drf/any/?channels={channel}&format=text/event-stream"
    with dropin.stream(url, headers={"Accept": "text/html"}) as reader:
        assert reader.headers["Content-Type"] == "text/event-stream"
        send_event(channel, "message", {"n": 1})
        [event] = wait_events(reader, 1)
    assert json.loads(event.data) == {"n": 1}


def test_dropin_messages_types(dropin):
    channel = f"dropin-{uuid.uuid4().hex[:8]}"
    url = page_stream_url(dropin.url, f"/drf/any/?channels={channel}&messages_types=info")
    with dropin.stream(url) as reader:
        send_event(channel, "info", {"n": 1})
        [event] = wait_events(reader, 1)
    assert (event.type, json.loads(event.data)) == ("info", {"n": 1})
    # Types fixed by configure_events_view_set: the query conflicts, as in django-eventstream.
    fixed = requests.get(
        f"{dropin.url}/drf/events1/?messages_types=x", headers={"Accept": "text/html"}, timeout=5
    )
    assert fixed.status_code == 400
    listed = requests.get(f"{dropin.url}/drf/events1/", headers={"Accept": "text/html"}, timeout=5)
    assert '["message", "info"]' in listed.text

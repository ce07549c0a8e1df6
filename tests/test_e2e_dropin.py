"""A django-eventstream project (tests/dropin) with only the module name changed, served by
gunicorn behind a real Pushpin, with and without django_grip.GripMiddleware."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from tests.conftest import Stack, events, start_stack, wait_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["with GripMiddleware", "without GripMiddleware"])
def dropin(request, test_db_name, tmp_path_factory, django_db_blocker):
    middleware = "1" if request.param.startswith("with ") else "0"
    stack = start_stack(
        tmp_path_factory.mktemp("dropin"),
        test_db_name,
        project="tests.dropin",
        env={"GES_GRIP_MIDDLEWARE": middleware},
    )
    yield stack
    stack.stop()


@pytest.fixture
def app(dropin, transactional_db) -> Stack:
    return dropin


def unique(prefix: str = "dropin") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def send(app: Stack, channel: str, data: dict, **options) -> None:
    body = {"channel": channel, "data": data, **options}
    response = requests.post(app.gunicorn.url + "/send/", data=json.dumps(body), timeout=10)
    response.raise_for_status()


def login(app: Stack, username: str) -> tuple[dict[str, str], str]:
    session = requests.Session()
    response = session.get(f"{app.url}/login/", params={"username": username}, timeout=10)
    response.raise_for_status()
    return {"Cookie": f"sessionid={session.cookies['sessionid']}"}, response.text


def numbers(evs) -> list[int]:
    return [json.loads(e.data)["n"] for e in evs]


def test_live_and_replayed_with_async_publish(app):
    channel = unique()
    with app.stream(f"/stream/?channel={channel}") as reader:
        for n in range(3):
            send(app, channel, {"n": n})  # async_publish=True inside gunicorn
        first = wait_events(reader, 3)
    assert numbers(first) == [0, 1, 2]
    for n in range(3, 6):
        send(app, channel, {"n": n}, **{"async": False})
    headers = {"Last-Event-ID": first[-1].last_event_id}
    with app.stream(f"/stream/?channel={channel}", headers=headers) as reader:
        assert numbers(wait_events(reader, 3)) == [3, 4, 5]


def test_skip_user_ids(app):
    channel = unique()
    cookie, user_pk = login(app, unique("user"))
    url = f"/stream/?channel={channel}"
    with app.stream(url, headers=cookie) as skipped, app.stream(url) as anonymous:
        send(app, channel, {"n": 1}, skip=[user_pk])
        send(app, channel, {"n": 2})
        assert numbers(wait_events(anonymous, 2)) == [1, 2]
        assert numbers(wait_events(skipped, 1)) == [2]


def test_settings_forms_give_cors(app):
    origin = "https://app.example.com"
    response = requests.options(app.url + "/events/", headers={"Origin": origin}, timeout=10)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    other = requests.options(
        app.url + "/events/", headers={"Origin": "https://x.example"}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize(
    ("name", "needle"),
    [("reconnecting-eventsource.js", "ReconnectingEventSource"), ("eventsource.min.js", "nothing")],
)
def test_static_scripts_are_served(app, name, needle):
    response = requests.get(f"{app.url}/static/grip_eventstream/{name}", timeout=10)
    assert response.status_code == 200
    assert needle in response.text


def test_private_channel_needs_a_login(app):
    channel = unique("_private")
    denied = requests.get(f"{app.url}/stream/?channel={channel}", timeout=10)
    assert denied.status_code == 403
    cookie, _ = login(app, unique("user"))
    with app.stream(f"/stream/?channel={channel}", headers=cookie) as reader:
        assert reader.status == 200
        send(app, channel, {"n": 7})
        assert numbers(wait_events(reader, 1)) == [7]


def test_drf_router_and_channels_query(app):
    a, b = unique(), unique()
    with app.stream(f"/drf/any/?channels={a},{b}") as reader:
        send(app, a, {"n": 1})
        send(app, b, {"n": 2})
        got = wait_events(reader, 2)
    assert sorted(numbers(got)) == [1, 2]
    with app.stream("/drf/events/") as reader:
        send(app, "news", {"n": 3})
        assert numbers(wait_events(reader, 1)) == [3]


def test_htmx4_accept_header_gets_the_stream(app):
    channel = unique()
    headers = {"Accept": "text/html, text/event-stream"}
    with app.stream(f"/drf/any/?channels={channel}", headers=headers) as reader:
        assert reader.headers["Content-Type"] == "text/event-stream"
        send(app, channel, {"n": 1})
        assert numbers(events(reader.wait_contains('"n": 1'))) == [1]


@pytest.mark.browser
def test_reconnecting_eventsource_page_in_chromium(app, driver):
    from tests import browser

    if reason := browser.missing():
        pytest.skip(reason)
    channel = unique()
    driver.get(f"{app.url}/page/?channel={channel}")
    browser.wait_until(driver, lambda: driver.execute_script("return window.opened"), "open")
    for n in range(3):
        send(app, channel, {"n": n})
    browser.wait_until(
        driver,
        lambda: driver.execute_script("return window.received.length") >= 3,
        "3 events",
        timeout=15,
    )
    assert driver.execute_script("return window.received") == [{"n": 0}, {"n": 1}, {"n": 2}]

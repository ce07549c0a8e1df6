"""send_event reaches a client through a real Pushpin, from this process and from others."""

import json

import pytest

from grip_eventstream import send_event
from tests.conftest import events, manage, wait_events

pytestmark = pytest.mark.e2e


def test_event_sent_in_process_arrives(stack):
    with stack.stream("/stream/?channel=volatile-a") as reader:
        assert reader.status == 200
        assert reader.headers["Content-Type"] == "text/event-stream"
        assert "Grip-Hold" not in reader.headers  # Pushpin strips its instructions
        send_event("volatile-a", "message", {"text": "hello world"})
        [event] = wait_events(reader, 1)
    assert event.type == "message"
    assert json.loads(event.data) == {"text": "hello world"}


def test_event_sent_from_manage_py_shell_arrives(stack, test_db_name):
    with stack.stream("/events/") as reader:
        manage(
            "shell",
            "-c",
            "from grip_eventstream import send_event; "
            "send_event('test', 'message', {'text': 'from the shell'})",
            env={"GRIP_URL": stack.grip_url, "GES_DB_NAME": test_db_name},
        )
        [event] = wait_events(reader, 1)
    assert json.loads(event.data) == {"text": "from the shell"}
    assert event.last_event_id  # stored: the stream's cursor


def test_event_sent_from_a_gunicorn_worker_arrives(stack):
    with stack.stream("/rooms/room%201/events/") as reader:
        stack.send_via_app("room 1", {"n": 1})
        [event] = wait_events(reader, 1)
    assert json.loads(event.data) == {"n": 1}


def test_direct_request_is_refused_at_once(stack):
    import requests

    res = requests.get(stack.gunicorn.url + "/events/", timeout=5)
    assert res.status_code == 400
    assert "GRIP proxy" in res.text


@pytest.mark.stack_env(GES_KEEP_ALIVE="1")
def test_keep_alive_comments_arrive_on_a_quiet_stream(private_stack):
    with private_stack.stream("/stream/?channel=volatile-quiet") as reader:
        text = reader.wait_text(lambda t: t.count(":\n\n") >= 2, timeout=10, what="keep-alives")
    assert events(text) == []  # comments fire no event


@pytest.mark.stack_env(GES_CORS="1")
def test_cors_preflight_and_stream_through_pushpin(private_stack):
    stack = private_stack
    import requests

    origin = {"Origin": "https://app.example"}
    res = requests.options(
        f"{stack.url}/events/",
        headers={**origin, "Access-Control-Request-Headers": "last-event-id"},
        timeout=5,
    )
    assert res.status_code == 204
    assert res.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert res.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Last-Event-ID" in res.headers["Access-Control-Allow-Headers"]
    with stack.stream("/events/", headers=origin) as reader:
        assert reader.headers["Access-Control-Allow-Origin"] == "https://app.example"
    with stack.stream("/events/", headers={"Origin": "https://evil.example"}) as reader:
        assert "Access-Control-Allow-Origin" not in reader.headers

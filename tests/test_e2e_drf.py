"""The DRF viewset through a real Pushpin, with token authentication."""

import json
import uuid

import pytest
import requests
from django.contrib.auth.models import User

from grip_eventstream import send_event
from grip_eventstream.storage import DjangoModelStorage
from tests.conftest import wait_events

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

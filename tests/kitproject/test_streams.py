"""The project's tests of its own streams, written as the README's "Testing your project" says."""

import pytest
from django.contrib.auth.models import User

from grip_eventstream import send_event


@pytest.mark.django_db
def test_a_comment_is_announced(client, eventstream_outbox, django_capture_on_commit_callbacks):
    # The test runs in a transaction that never commits, and events are published when
    # their transaction commits: run those callbacks as a commit would.
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/comments/", {"text": "50% off"})
    (event,) = eventstream_outbox.on("comments")
    assert (event.event_type, event.json()) == ("comment", {"text": "50% off"})


def test_a_comment_reaches_an_open_stream(client, eventstream_pushpin):
    with eventstream_pushpin.stream("/events/") as stream:
        assert stream.status == 200
        client.post("/comments/", {"text": "hello"})
        event = stream.next(timeout=10)
    assert (event.type, event.json()) == ("comment", {"text": "hello"})


def test_a_reconnecting_client_gets_what_it_missed(eventstream_pushpin):
    with eventstream_pushpin.stream("/events/") as stream:
        send_event("comments", "comment", {"n": 1})
        seen = stream.next(timeout=10)
    send_event("comments", "comment", {"n": 2})
    send_event("comments", "comment", {"n": 3})
    with eventstream_pushpin.stream("/events/", last_event_id=seen.last_event_id) as stream:
        assert [event.json() for event in stream.wait(2, timeout=10)] == [{"n": 2}, {"n": 3}]


def test_an_inbox_is_private(client, eventstream_pushpin):
    alice = User.objects.create_user("alice")
    with eventstream_pushpin.stream(f"/stream/?channel=inbox-{alice.pk}") as stream:
        assert stream.status == 403
        assert "Permission denied" in stream.wait_contains("anonymous users", timeout=10)
    client.force_login(alice)
    with eventstream_pushpin.stream(f"/stream/?channel=inbox-{alice.pk}", client=client) as stream:
        client.post("/comments/", {"text": "mine"})
        assert stream.next(timeout=10).json() == {"echo": "mine"}

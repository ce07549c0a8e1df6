"""grip_eventstream.testing: the eventstream_outbox fixture, used as a project would."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from grip_eventstream import channel_permission_changed, send_event, send_events
from grip_eventstream.grip import user_meta
from grip_eventstream.models import Event


@pytest.mark.django_db(transaction=True)
def test_outbox_records_what_is_sent(eventstream_outbox):
    send_event("news", "update", {"text": "50% off"})
    send_event("volatile-x", "message", "<li>x</li>", json_encode=False)
    send_events([("news", "message", {"n": 1}), ("other", "message", {"n": 2})])
    send_event("news", "message", {"n": 3}, skip_user_ids=[7], async_publish=True)
    first, fragment, *_ = eventstream_outbox
    assert (first.channel, first.event_type, first.json(), first.seq) == (
        "news",
        "update",
        {"text": "50% off"},
        1,
    )
    assert (fragment.data, fragment.seq, fragment.event_type) == ("<li>x</li>", None, "message")
    assert [e.json() for e in eventstream_outbox.on("news")] == [
        {"text": "50% off"},
        {"n": 1},
        {"n": 3},
    ]
    assert eventstream_outbox.on("news")[-1].skip_user_ids == (user_meta(7),)
    assert Event.objects.count() == 4  # stored as usual


@pytest.mark.django_db
def test_outbox_waits_for_the_commit(eventstream_outbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        send_event("news", "message", {"n": 1})
        assert eventstream_outbox == []
    assert [e.json() for e in eventstream_outbox] == [{"n": 1}]


@pytest.mark.django_db
def test_hints_are_not_events(eventstream_outbox):
    user = User.objects.create(username="u")
    channel_permission_changed(user, "members-staff")  # not in the group: a hint is sent
    assert eventstream_outbox == []
    assert eventstream_outbox.hints == 1


def test_multiline_data_and_odd_names(eventstream_outbox, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    send_event("room 1", "ty%pe", "a\nb", json_encode=False)
    (event,) = eventstream_outbox
    assert (event.channel, event.event_type, event.data) == ("room 1", "ty%pe", "a\nb")

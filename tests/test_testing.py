"""grip_eventstream.testing: the fixtures, used as a project would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.django_db
def test_a_long_batch_is_recorded_event_by_event(
    eventstream_outbox, django_capture_on_commit_callbacks
):
    count = 101  # more than Pushpin holds of a channel out of order
    with django_capture_on_commit_callbacks(execute=True):
        send_events([("news", "message", {"n": n}) for n in range(count)])
    assert [e.json()["n"] for e in eventstream_outbox] == list(range(count))
    assert [e.seq for e in eventstream_outbox] == list(range(1, count + 1))
    assert eventstream_outbox.hints == 0


def test_multiline_data_and_odd_names(eventstream_outbox, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    send_event("room 1", "ty%pe", "a\nb", json_encode=False)
    (event,) = eventstream_outbox
    assert (event.channel, event.event_type, event.data) == ("room 1", "ty%pe", "a\nb")


KIT_PROJECT = Path(__file__).resolve().parent / "kitproject"


@pytest.mark.e2e
def test_a_user_project_tests_its_streams_with_the_kit():
    # tests/kitproject is a small project with its own pytest.ini, settings and tests, which
    # use eventstream_outbox and eventstream_pushpin (a real Pushpin in front of
    # live_server): run as the user would, in its directory, without this suite's settings.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"],
        cwd=KIT_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"^test_streams\.py::(\w+) PASSED", result.stdout, re.MULTILINE)
    assert passed == [
        "test_a_comment_is_announced",
        "test_a_comment_reaches_an_open_stream",
        "test_a_reconnecting_client_gets_what_it_missed",
        "test_an_inbox_is_private",
    ], result.stdout


@pytest.fixture
def many_proxies(settings):
    settings.GRIP_PROXIES = [{"control_uri": "http://127.0.0.1:9/", "key": "k" * 32}]


@pytest.mark.e2e
def test_eventstream_pushpin_replaces_the_configured_proxies(many_proxies, eventstream_pushpin):
    from django.conf import settings

    assert not hasattr(settings, "GRIP_PROXIES")  # else send_event would publish there too
    assert settings.GRIP_URL.startswith(eventstream_pushpin.control_url)
    with eventstream_pushpin.stream("/stream/?channel=kit-proxies") as stream:
        send_event("kit-proxies", "message", {"n": 1})
        assert stream.next(timeout=10).json() == {"n": 1}
    assert "publish channel=kit-proxies receivers=1" in eventstream_pushpin.log.read_text()

"""pytest fixtures for projects that use grip_eventstream (a pytest plugin).

Enable it in the project's ``conftest.py`` with ``pytest_plugins = ["grip_eventstream.testing"]``
(it needs pytest and pytest-django), then::

    def test_comment_is_announced(eventstream_outbox):
        post_comment("hello")
        (event,) = eventstream_outbox.on("comments")
        assert event.event_type == "comment"
        assert event.json() == {"text": "hello"}

``eventstream_outbox`` records what ``send_event`` / ``send_events`` publish, as Django's
``mail.outbox`` records mail: nothing reaches a proxy, events are still stored when storage
is enabled, and an event sent in a transaction is recorded when it commits (use
``django_capture_on_commit_callbacks`` or a transactional test for those).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from . import grip


@dataclass(frozen=True)
class SentEvent:
    channel: str
    event_type: str
    data: str  # as sent: JSON text unless json_encode=False
    seq: int | None  # the stored event's number; None when not stored
    skip_user_ids: tuple[str, ...]  # encoded as Pushpin sees them (grip.user_meta)

    def json(self) -> Any:
        return json.loads(self.data)


class Outbox(list[SentEvent]):
    """The events sent; ``hints`` counts the hints (channel_permission_changed) published."""

    hints = 0

    def on(self, channel: str) -> list[SentEvent]:
        """The events sent on ``channel``, in order."""
        return [event for event in self if event.channel == channel]


def _decode(item: dict[str, Any]) -> SentEvent | None:
    """An event back from a publish item (None for hints, which carry no event)."""
    stream = item["formats"]["http-stream"]
    if "content" not in stream:
        return None
    filtered = "build-id" in stream.get("content-filters", ())
    event_type, data = "message", []
    for line in stream["content"].split("\n"):
        field, _, value = line.partition(": ")
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
    text = "\n".join(data)
    if filtered:
        text, event_type = text.replace("%%", "%"), event_type.replace("%%", "%")
    channel = grip.channel_from_pushpin(item["channel"]) or item["channel"]
    skip = item.get("meta", {}).get("skip_users", "")
    return SentEvent(
        channel,
        event_type,
        text,
        int(item["id"]) if "id" in item else None,
        tuple(filter(None, skip.split(","))),
    )


class _Recorder:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def publish(self, items: Sequence[dict[str, Any]], *, channel: str = "") -> None:
        for item in items:
            event = _decode(item)
            if event is None:
                self.outbox.hints += 1
            else:
                self.outbox.append(event)

    def submit(self, items: list[dict[str, Any]], *, channel: str = "") -> None:
        self.publish(items, channel=channel)


@pytest.fixture
def eventstream_outbox(monkeypatch: pytest.MonkeyPatch) -> Outbox:
    """What send_event publishes during the test, without any proxy."""
    outbox = Outbox()
    recorder = _Recorder(outbox)
    monkeypatch.setattr("grip_eventstream.eventstream.get_publisher", lambda: recorder)
    monkeypatch.setattr("grip_eventstream.eventstream.get_background_publisher", lambda: recorder)
    return outbox

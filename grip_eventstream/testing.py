"""pytest fixtures for projects that use grip_eventstream (a pytest plugin).

Enable it in the project's ``conftest.py`` with ``pytest_plugins = ["grip_eventstream.testing"]``
(it needs pytest and pytest-django: the ``testing`` extra), then::

    import pytest

    @pytest.mark.django_db(transaction=True)  # the event is stored, then recorded on commit
    def test_comment_is_announced(eventstream_outbox):
        post_comment("hello")
        (event,) = eventstream_outbox.on("comments")
        assert event.event_type == "comment"
        assert event.json() == {"text": "hello"}

``eventstream_outbox`` records what ``send_event`` / ``send_events`` publish, as Django's
``mail.outbox`` records mail: nothing reaches a proxy (the test settings need no
``GRIP_URL``), events are still stored when storage is enabled, and an event sent in a
transaction is recorded when it commits (use ``django_capture_on_commit_callbacks`` or a
transactional test for those).

``eventstream_pushpin`` runs a real Pushpin in front of pytest-django's ``live_server`` and
points ``GRIP_URL`` at it for the test, so that streams work end to end::

    from grip_eventstream import send_event

    def test_chat_stream(eventstream_pushpin):
        # A stream URL of the project's, here one that takes ?channel=.
        with eventstream_pushpin.stream("/events/?channel=chat") as stream:
            send_event("chat", "message", {"text": "hi"})
            assert stream.next().json() == {"text": "hi"}

The documentation's "Testing your project" page has the complete examples.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from . import buildid, grip
from .pushpin import PushpinConfig, PushpinProcess, free_ports, wait_proxied
from .sseclient import EventStream

if TYPE_CHECKING:
    from django.test import Client
    from pytest_django.live_server_helper import LiveServer


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
    filtered = buildid.FILTER in stream.get("content-filters", ())
    event_type, data = "message", []
    for line in stream["content"].split("\n"):
        field, _, value = line.partition(": ")
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
    text = "\n".join(data)
    if filtered:
        text, event_type = buildid.unescape(text), buildid.unescape(event_type)
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


@dataclass(frozen=True)
class LivePushpin:
    """A running Pushpin in front of the test's ``live_server``."""

    url: str  # where clients connect, e.g. http://127.0.0.1:43121
    control_url: str  # its control port; GRIP_URL points here during the test
    log: Path  # Pushpin's log, for when a stream does not behave

    def stream(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        client: Client | None = None,
        last_event_id: str = "",
        timeout: float = 10,
    ) -> EventStream:
        """Open ``path`` through Pushpin; the subscription is live when this returns.

        ``client``: a Django test ``Client`` whose cookies go with the request, e.g. after
        ``client.force_login(user)`` for a private channel. ``last_event_id`` resumes as a
        reconnecting browser does.
        """
        cookies = {name: morsel.value for name, morsel in client.cookies.items()} if client else {}
        return EventStream(
            self.url + path,
            headers=headers,
            cookies=cookies,
            last_event_id=last_event_id,
            timeout=timeout,
        )


@dataclass(frozen=True)
class _Running:
    config: PushpinConfig
    log: Path


@pytest.fixture(scope="session")
def _eventstream_pushpin_process(
    live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Running]:
    # One Pushpin per test session, like live_server. Its key is random: the test's
    # GRIP_URL carries it, so Grip-Sig is checked as in production.
    address = urlsplit(live_server.url)
    host = "127.0.0.1" if address.hostname == "localhost" else address.hostname
    http_port, control_port = free_ports(2)
    workdir = tmp_path_factory.mktemp("eventstream_pushpin")
    # Pushpin's ipc sockets live in the run directory: a short path keeps them under the
    # 107-byte limit of a socket path, wherever pytest's temporary directory is.
    rundir = Path(tempfile.mkdtemp(prefix="ges-pp-"))
    config = PushpinConfig(
        target=f"{host}:{address.port}",
        rundir=rundir,
        http_port=http_port,
        control_port=control_port,
        sig_key=secrets.token_urlsafe(32),
    )
    process = PushpinProcess(config, workdir, log=workdir / "pushpin.log")
    try:
        process.start()
        wait_proxied(config.url + "/")
        yield _Running(config, workdir / "pushpin.log")
    finally:
        process.stop()
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.fixture
def eventstream_pushpin(
    _eventstream_pushpin_process: _Running,
    settings: Any,  # pytest-django's settings fixture; its class was renamed in 4.11
) -> LivePushpin:
    """A real Pushpin in front of ``live_server``; ``send_event`` publishes to it."""
    config = _eventstream_pushpin_process.config
    settings.GRIP_URL = f"{config.control_url}?iss={config.sig_iss}&key={config.sig_key}"
    if hasattr(settings, "GRIP_PROXIES"):
        del settings.GRIP_PROXIES
    # Pushpin passes on the Host its client used.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    return LivePushpin(config.url, config.control_url, _eventstream_pushpin_process.log)

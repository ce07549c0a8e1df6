"""Scale-out with real processes: several Pushpins (GRIP_PROXIES) in front of one app, and
several gunicorn servers behind one Pushpin route, on the same database."""

from __future__ import annotations

import json
import uuid

import pytest

from grip_eventstream import get_current_event_id, send_event
from grip_eventstream.exceptions import PublishError
from grip_eventstream.pushpin import wait_proxied
from grip_eventstream.sseclient import EventStream
from tests.conftest import ROOT, SIG_KEY, wait_events
from tests.gunicorn_process import Gunicorn
from tests.pushpin_process import Pushpin

pytestmark = pytest.mark.e2e


def unique(prefix: str = "scale") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def numbers(evs) -> list[int]:
    return [json.loads(e.data)["n"] for e in evs]


def proxies_setting(*pushpins: Pushpin) -> list[dict[str, str]]:
    return [
        {"control_uri": p.control_url, "control_iss": "pushpin", "key": SIG_KEY} for p in pushpins
    ]


def gunicorn_for(workdir, db_name: str, **env: str) -> Gunicorn:
    return Gunicorn(
        "tests.wsgi:application",
        workdir,
        cwd=ROOT,
        env={
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "GES_DB_NAME": db_name,
            "PYTHONPATH": str(ROOT),
            **env,
        },
        workers=1,
        threads=4,
    )


@pytest.fixture
def two_pushpins(test_db_name, settings, transactional_db, tmp_path):
    app = gunicorn_for(tmp_path / "app", test_db_name)
    first = Pushpin(app.address, tmp_path / "p1", sig_key=SIG_KEY)
    second = Pushpin(app.address, tmp_path / "p2", sig_key=SIG_KEY)
    setting = proxies_setting(first, second)
    app.env["GES_GRIP_PROXIES"] = json.dumps(setting)
    settings.GRIP_PROXIES = setting
    settings.EVENTSTREAM_PUBLISH_TIMEOUT = 2
    try:
        first.start()
        second.start()
        app.start(ready_path="/send/")
        for pushpin in (first, second):
            wait_proxied(pushpin.url + "/stream/?channel=volatile-ready", want_status=200)
        yield first, second
    finally:
        app.stop()
        first.stop()
        second.stop()


def test_every_proxy_delivers_and_a_stopped_one_is_named(two_pushpins):
    first, second = two_pushpins
    channel = unique()
    url = f"/stream/?channel={channel}"
    with EventStream(first.url + url) as on_first, EventStream(second.url + url) as on_second:
        send_event(channel, "message", {"n": 0})
        assert numbers(wait_events(on_first, 1)) == [0]
        assert numbers(wait_events(on_second, 1)) == [0]
        last_on_first = wait_events(on_first, 1)[-1].last_event_id
        first.stop()
        on_first.wait_ended()
        with pytest.raises(PublishError) as info:
            send_event(channel, "message", {"n": 1})
        assert [uri for uri, _ in info.value.failures] == [first.control_url]
        assert first.control_url in str(info.value)
        assert second.control_url not in str(info.value)
        assert numbers(wait_events(on_second, 2)) == [0, 1]  # the other keeps delivering
        send_event_anyway = {"n": 2}
        with pytest.raises(PublishError):
            send_event(channel, "message", send_event_anyway)
        assert numbers(wait_events(on_second, 3)) == [0, 1, 2]
    # The stopped proxy comes back: its client resumes with its Last-Event-ID.
    first.start()
    wait_proxied(first.url + "/stream/?channel=volatile-ready", want_status=200)
    with EventStream(first.url + url, last_event_id=last_on_first) as again:
        send_event(channel, "message", {"n": 3})
        assert numbers(wait_events(again, 3)) == [1, 2, 3]  # nothing lost or repeated


@pytest.fixture
def two_apps(test_db_name, settings, transactional_db, tmp_path):
    one = gunicorn_for(tmp_path / "a1", test_db_name)
    two = gunicorn_for(tmp_path / "a2", test_db_name)
    pushpin = Pushpin(
        one.address,
        tmp_path / "p",
        sig_key=SIG_KEY,
        extra_routes=[f"* {one.address} {two.address}"],
    )
    grip_url = f"{pushpin.control_url}?iss=pushpin&key={SIG_KEY}"
    one.env["GRIP_URL"] = two.env["GRIP_URL"] = settings.GRIP_URL = grip_url
    try:
        pushpin.start()
        one.start(ready_path="/send/")
        two.start(ready_path="/send/")
        wait_proxied(pushpin.url + "/stream/?channel=volatile-ready", want_status=200)
        yield pushpin, one, two
    finally:
        one.stop()
        two.stop()
        pushpin.stop()


def test_two_app_servers_behind_one_route_give_the_same_streams(two_apps):
    """Pushpin 1.36 tries a route's targets in order (failover, not balancing): with the
    first server stopped, subscribes, replays and next links land on the second."""
    from grip_eventstream.storage import DjangoModelStorage

    pushpin, one, two = two_apps
    channel = unique()
    cursor = get_current_event_id([channel])
    for n in range(5):
        send_event(channel, "message", {"n": n})
    url = f"{pushpin.url}/stream/?channel={channel}"
    with EventStream(f"{url}&lastEventId={cursor}") as reader:
        assert numbers(wait_events(reader, 5)) == [0, 1, 2, 3, 4]
    with EventStream(url) as reader:  # opened on the first server
        one.stop()
        # A stored but unpublished event: its gap is repaired by a next link on the second.
        DjangoModelStorage().append_event(channel, "message", json.dumps({"n": 5}), 3600)
        send_event(channel, "message", {"n": 6})
        assert numbers(wait_events(reader, 2, timeout=15)) == [5, 6]
    with EventStream(f"{url}&lastEventId={cursor}") as reader:  # a replay on the second
        assert numbers(wait_events(reader, 7)) == [0, 1, 2, 3, 4, 5, 6]
    served = [g.log_path.read_text().count(f"channel={channel}") for g in (one, two)]
    links = two.log_path.read_text().count("/_link/")
    assert served[0] >= 2, served
    assert served[1] >= 1, served
    assert links >= 1

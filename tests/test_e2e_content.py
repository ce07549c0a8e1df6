"""Any content through a real Pushpin: "%" in data, types and channel names, big backlogs,
commas in paths, next-link tokens, and who may sign a Grip-Sig.

Each test checks what the subscriber receives against what was sent, on both a fresh
replay (reconnect with Last-Event-ID) and gap repair on an open stream.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote

import pytest
import requests
from django.core import signing
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from grip_eventstream import get_current_event_id, links, send_event
from grip_eventstream.storage import DjangoModelStorage
from tests.conftest import events, start_stack, wait_events

pytestmark = pytest.mark.e2e

AWKWARD = ["50% off", "100 %% done", "%I", "%(x)s", "%", "%%%", "a%20b", "%s%d"]


def unique(prefix: str = "ch") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def texts(evs) -> list[str]:
    return [json.loads(e.data)["text"] for e in evs]


def store_unpublished(channel: str, data: dict, event_type: str = "message") -> None:
    """Stored but never published, as when a process dies between commit and publish."""
    DjangoModelStorage().append_event(channel, event_type, json.dumps(data), 3600)


def test_percent_in_data_type_and_channel_is_replayed_on_reconnect(stack):
    channel = unique("50%-off")
    url = f"/rooms/{quote(channel)}/events/"
    with stack.stream(url) as reader:
        send_event(channel, "ev%t", {"text": "live 50%"})
        (first,) = wait_events(reader, 1)
    assert (first.type, texts([first])) == ("ev%t", ["live 50%"])
    for text in AWKWARD:
        send_event(channel, "ev%t", {"text": text})
    with stack.stream(url, headers={"Last-Event-ID": first.last_event_id}) as reader:
        replayed = wait_events(reader, len(AWKWARD))
        send_event(channel, "message", {"text": "after 100%"})  # and the stream lives on
        after = wait_events(reader, len(AWKWARD) + 1)
    assert texts(replayed) == AWKWARD
    assert {e.type for e in replayed} == {"ev%t"}
    assert texts(after)[-1] == "after 100%"


def test_percent_is_repaired_into_an_open_stream(stack):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        send_event(channel, "message", {"text": "first"})
        wait_events(reader, 1)
        for text in AWKWARD:
            store_unpublished(channel, {"text": text}, "ty%pe")
        send_event(channel, "message", {"text": "reveals the gap"})
        got = wait_events(reader, len(AWKWARD) + 2, timeout=15)
        send_event(channel, "message", {"text": "still open"})
        got = wait_events(reader, len(AWKWARD) + 3)
    assert texts(got) == ["first", *AWKWARD, "reveals the gap", "still open"]
    assert [e.type for e in got[1:-2]] == ["ty%pe"] * len(AWKWARD)


def test_reset_naming_a_percent_channel_keeps_the_stream(stack):
    channel = unique("100%")
    url = f"/rooms/{quote(channel)}/events/"
    with stack.stream(url, headers={"Last-Event-ID": "garbage"}) as reader:
        text = reader.wait_contains("stream-reset")
        send_event(channel, "message", {"text": "live"})
        live = wait_events(reader, 1)
    (reset,) = events(text, skip=("message",))
    assert json.loads(reset.data) == {"channels": [channel], "reason": "invalid-cursor"}
    assert texts(live) == ["live"]


def test_a_megabyte_backlog_pages_on_reconnect_and_in_gap_repair(stack):
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        send_event(channel, "message", {"text": "start"})
        (start,) = wait_events(reader, 1)
        # 200 events of 5 KB with "%" (10 KB escaped), never published: Pushpin finds the
        # gap at the next live event and fetches it in pages, with the stream open.
        backlog = [f"{n:03d} 50% " + "%" * 5000 for n in range(200)]
        for text in backlog:
            store_unpublished(channel, {"text": text})
        send_event(channel, "message", {"text": "end"})
        repaired = wait_events(reader, 202, timeout=60)
    assert texts(repaired) == ["start", *backlog, "end"]
    # The same backlog replayed from scratch on a reconnect.
    url = f"/stream/?channel={channel}"
    with stack.stream(url, headers={"Last-Event-ID": start.last_event_id}) as reader:
        replayed = wait_events(reader, 201, timeout=60)
    assert texts(replayed) == [*backlog, "end"]


def test_a_comma_in_the_path_streams_and_repairs(stack):
    channel = unique("a,b")
    url = f"/rooms/{channel}/events/"
    with stack.stream(url) as reader:
        assert reader.status == 200
        send_event(channel, "message", {"text": "one"})
        wait_events(reader, 1)
        store_unpublished(channel, {"text": "two"})
        send_event(channel, "message", {"text": "three"})
        got = wait_events(reader, 3, timeout=15)
    assert texts(got) == ["one", "two", "three"]


def test_too_big_events_are_refused_and_nothing_breaks(stack):
    channel = unique()
    with pytest.raises(ValueError, match="EVENTSTREAM_MAX_EVENT_BYTES"):
        send_event(channel, "message", {"text": "x" * 1_000_000})
    cursor = get_current_event_id([channel])
    send_event(channel, "message", {"text": "small"})
    with stack.stream(f"/stream/?channel={channel}", headers={"Last-Event-ID": cursor}) as r:
        assert texts(wait_events(r, 1)) == ["small"]


# --- next-link tokens ---------------------------------------------------------------------


def link_path(channel: str, state: links.LinkState) -> str:
    return links.link_url(f"/rooms/{channel}/events/", state)


def test_a_link_read_from_a_log_is_refused_to_clients(stack):
    """A client requesting a held stream's next link through Pushpin: no Grip-Last."""
    channel = unique("private")
    path = link_path(channel, links.LinkState((channel,), "1", filtered=True))
    response = requests.get(stack.url + path, timeout=10)
    assert response.status_code == 403
    assert "fetched once by the GRIP proxy" in response.text


def test_an_old_link_ends_at_once(stack, monkeypatch):
    channel = unique()
    old = time.time() - 3600
    monkeypatch.setattr("django.core.signing.time.time", lambda: old)
    path = link_path(channel, links.LinkState((channel,), None))
    monkeypatch.undo()
    response = requests.get(stack.url + path, timeout=10)
    assert (response.status_code, response.text) == (200, "")
    assert signing.loads(path.split("/")[-2], salt=links.SALT) == {"c": [channel], "u": None}


# --- Grip-Sig issuers ----------------------------------------------------------------------


def test_a_proxy_signing_as_another_issuer_is_refused(test_db_name, settings, tmp_path, db):
    stack = start_stack(tmp_path / "stack", test_db_name, sig_iss="not-pushpin", ready_status=403)
    try:
        response = requests.get(stack.url + "/stream/?channel=volatile-x", timeout=10)
        assert response.status_code == 403
        assert "Grip-Sig header did not verify" in response.text
    finally:
        stack.stop()


# --- fuzz through Pushpin ----------------------------------------------------------------

# Printable header values: requests refuses leading whitespace, and Pushpin closes the
# connection on control characters before anything reaches the app.
header_text = st.text(
    st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=40
).filter(lambda v: v == v.lstrip())


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    channel=st.text(min_size=1, max_size=20).filter(lambda c: "/" not in c),
    in_path=st.booleans(),
    last_event_id=st.none() | header_text | st.sampled_from(["garbage", "abcdefg.aaaaaa-1"]),
    link=st.none() | st.text(max_size=60),
)
def test_fuzzed_requests_through_pushpin_never_fail(stack, channel, in_path, last_event_id, link):
    if link is not None:
        path = f"/events/_link/{quote(link, safe='')}/"
    elif in_path:
        path = f"/rooms/{quote(channel, safe='')}/events/"
    else:
        path = f"/stream/?channel={quote(channel, safe='')}"
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with requests.get(stack.url + path, headers=headers, stream=True, timeout=10) as response:
        # 200 (a stream) or a clear 4xx: never a 5xx from the app or from Pushpin.
        assert response.status_code < 500, (path, headers, response.status_code)
        event(f"status {response.status_code}")

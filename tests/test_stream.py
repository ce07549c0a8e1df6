"""grip_eventstream.stream: every answer to Pushpin, without Django.

The truth table of the build-id filter (who filters which body, on which Pushpin) is checked
case by case against tests/pushpin_model.py, the model of what Pushpin does to a filtered
body; tests/test_e2e_pushpin_versions.py checks the same behaviour against both real
Pushpins.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from grip_eventstream import grip, stream
from grip_eventstream.cursor import format_cursor
from grip_eventstream.sseclient import SSEParser
from grip_eventstream.stream import LinkState, StreamRequest
from tests.pushpin_model import pushpin_build_id
from tests.test_replay import EPOCH, Memory

PUSHPIN_1_36 = frozenset({"status", "session", "link:next", "filter:build-id"})
PUSHPIN_1_41 = PUSHPIN_1_36 | {"link:gone"}
nonces = itertools.count()


def link_url(state: LinkState) -> str:
    # The view signs the state into the URL; here the state is kept readable.
    fields = (state.channels, state.user_pk, state.resume, int(state.filtered), state.nonce)
    return "/s/_link/" + "|".join(map(str, (*fields, state.stream))) + "/"


def answer(memory: Memory, request: StreamRequest, *, stored: bool = True) -> stream.Answer:
    state = (EPOCH, memory.current(list(request.reliable))) if stored else None
    return stream.answer(request, state, memory, link_url, lambda: f"n{next(nonces)}")


def channels_held(response: stream.Answer) -> dict[str, str | None]:
    """{pushpin channel: prev-id} from Grip-Channel."""
    held = {}
    for part in response.headers["Grip-Channel"].split(", "):
        name, *params = part.split("; ")
        held[name] = dict(p.split("=", 1) for p in params if "=" in p).get("prev-id")
    return held


def data_received(response: stream.Answer) -> list[str]:
    """The events' data as the client sees them, after Pushpin's filter if one runs."""
    body = pushpin_build_id(response.body, "ID") if response.filtered else response.body
    return [e.data for e in SSEParser().feed(body.encode())]


@pytest.fixture
def memory() -> Memory:
    memory = Memory()
    for i in range(5):
        memory.add("a", f"{i} is 50% off")
    return memory


def resume_from(position: int) -> str:
    return format_cursor(EPOCH, {"a": position}, ["a"])


# --- hold or page, and who filters the body ----------------------------------------------------


@pytest.mark.parametrize("features", [PUSHPIN_1_36, PUSHPIN_1_41], ids=["1.36", "1.41"])
def test_a_subscribe_holds_and_its_body_is_filtered(memory, features):
    request = StreamRequest(["a"], ["a"], None, cursor=resume_from(3), features=features)
    response = answer(memory, request)
    assert response.holds
    assert response.filtered  # the hold has a build-id channel on every version
    assert "%%" in response.body
    assert data_received(response) == ["3 is 50% off", "4 is 50% off"]
    assert channels_held(response) == {"a": "5"}
    assert response.headers["Grip-Hold"] == "stream"


@pytest.mark.parametrize("features", [PUSHPIN_1_36, PUSHPIN_1_41], ids=["1.36", "1.41"])
def test_a_subscribe_page_is_not_filtered(memory, features):
    request = StreamRequest(
        ["a"], ["a"], None, cursor=resume_from(0), features=features, replay_limit=2
    )
    response = answer(memory, request)
    assert not response.holds
    assert not response.filtered
    assert "Grip-Hold" not in response.headers
    assert data_received(response) == ["0 is 50% off", "1 is 50% off"]
    link = response.headers["Grip-Link"]
    assert "|0|n" in link  # a page link: not filtered, with a nonce
    assert link.endswith("; rel=next")  # fetched at once: no timeout


# (proxy, old hold filtered, response complete) -> Pushpin filters the link response's body
LINK_TABLE = {
    ("1.36", True, True): True,  # the old hold had build-id
    ("1.36", True, False): True,
    ("1.36", False, True): False,  # the old hold was a page: no channels, no filter
    ("1.36", False, False): False,
    ("1.41", True, True): True,  # the response's own hold has build-id
    ("1.41", True, False): False,  # a page has no hold of its own
    ("1.41", False, True): True,
    ("1.41", False, False): False,
}


@pytest.mark.parametrize(("case", "filtered"), LINK_TABLE.items(), ids=str)
def test_link_response_bodies_follow_the_proxys_filter(memory, case, filtered):
    version, old_filtered, complete = case
    features = PUSHPIN_1_41 if version == "1.41" else PUSHPIN_1_36
    link = LinkState(("a",), None, filtered=old_filtered)
    request = StreamRequest(
        ["a"],
        ["a"],
        None,
        link=link,
        grip_last="a; last-id=1",
        features=features,
        replay_limit=5 if complete else 2,
    )
    response = answer(memory, request)
    assert response.holds == complete
    assert response.filtered == filtered
    # What the client reads is the stored text either way: the escaping matched the filter.
    expected = ["1 is 50% off", "2 is 50% off", "3 is 50% off", "4 is 50% off"]
    assert data_received(response) == (expected if complete else expected[:2])


def test_a_page_link_resumes_from_its_cursor_not_grip_last(memory):
    link = LinkState(("a",), None, resume=resume_from(3), nonce="n")
    request = StreamRequest(["a"], ["a"], None, link=link, grip_last="a; last-id=0")
    assert data_received(answer(memory, request)) == ["3 is 50% off", "4 is 50% off"]


def _link_timeout(response: stream.Answer) -> int | None:
    params = dict(p.split("=", 1) for p in response.headers["Grip-Link"].split("; ")[1:])
    return int(params["timeout"]) if "timeout" in params else None


@pytest.mark.parametrize(("configured", "settled"), [(120, 3), (2, 2), (0, 3)])
def test_a_next_link_that_found_events_is_fetched_again_shortly(memory, configured, settled):
    link = LinkState(("a",), None, filtered=True)
    found = StreamRequest(
        ["a"], ["a"], None, link=link, grip_last="a; last-id=3", link_timeout=configured
    )
    assert data_received(answer(memory, found)) == ["3 is 50% off", "4 is 50% off"]
    assert _link_timeout(answer(memory, found)) == settled
    nothing_new = dataclasses.replace(found, grip_last="a; last-id=5")
    assert data_received(answer(memory, nothing_new)) == []
    assert _link_timeout(answer(memory, nothing_new)) == (configured or None)
    # A subscribe's replay is no repair: the usual timeout.
    subscribe = StreamRequest(["a"], ["a"], None, cursor=resume_from(3), link_timeout=configured)
    assert _link_timeout(answer(memory, subscribe)) == (configured or None)


def test_only_a_subscribe_opens_with_the_retry(memory):
    retry = "retry: 4000\n\n"
    subscribe = StreamRequest(["a"], ["a"], None, cursor=resume_from(5), retry=retry)
    assert answer(memory, subscribe).body.startswith(retry)
    link = StreamRequest(["a"], ["a"], None, link=LinkState(("a",), None), retry=retry)
    assert "retry:" not in answer(memory, link).body


# --- channels held ----------------------------------------------------------------------------


def test_unstored_channels_hold_the_link_proof_channel(memory):
    response = answer(memory, StreamRequest(["v"], [], None), stored=False)
    assert channels_held(response) == {"v": None, grip.LINK_PROOF_CHANNEL: "0"}
    assert response.body == ""
    assert not response.filtered


def test_stored_channels_need_no_link_proof_channel(memory):
    response = answer(memory, StreamRequest(["a", "v"], ["a"], None))
    assert channels_held(response) == {"v": None, "a": "5"}


def test_a_presence_stream_always_holds_the_link_proof_channel(memory):
    request = StreamRequest(["a"], ["a"], None, presence_stream="p1", gone_url="/s/_gone/t/")
    response = answer(memory, request)
    assert channels_held(response) == {"a": "5", grip.LINK_PROOF_CHANNEL: "0"}
    assert response.headers["Grip-Link"].endswith(", </s/_gone/t/>; rel=gone")
    assert "|p1/" in response.headers["Grip-Link"]  # the next link carries the stream


def test_a_logged_in_stream_holds_its_users_control_channel(memory):
    response = answer(memory, StreamRequest(["a"], ["a"], "42"))
    assert grip.user_control_channel("42") in channels_held(response)
    assert f'user="{grip.user_meta("42")}"' in response.headers["Grip-Set-Meta"]


# --- the other answers ------------------------------------------------------------------------


@pytest.mark.parametrize("filtered", [False, True])
def test_forbidden_ends_the_stream_with_the_reason(filtered):
    response = stream.forbidden("7", ["50%"], filtered=filtered)
    assert not response.holds
    assert response.headers == {}
    body = pushpin_build_id(response.body, "ID") if filtered else response.body
    (event,) = SSEParser().feed(body.encode())
    assert event.type == "stream-error"
    assert event.json()["channels"] == ["50%"]
    assert "this user may no longer read 50%" in event.json()["text"]


def test_end_is_an_empty_answer_without_hold():
    assert stream.end() == stream.Answer("", {}, holds=False)


def test_unavailable_carries_its_retry_on_an_event_nobody_listens_to():
    response = stream.unavailable(2500)
    parser = SSEParser()
    (event,) = parser.feed(response.body.encode())
    assert parser.retry == 2500
    assert (event.type, event.last_event_id) == ("stream-unavailable", "")
    assert not response.holds


def test_only_pushpin_1_41_sends_gone_notices():
    assert grip.sends_gone_notices(PUSHPIN_1_41)
    assert not grip.sends_gone_notices(PUSHPIN_1_36)


def test_a_link_token_outlives_the_link_timeout_by_the_margin():
    assert stream.link_max_age(30) == 30 + stream.LINK_MARGIN
    # 0: Grip-Link gives no timeout and Pushpin uses its own.
    assert stream.link_max_age(0) == stream.PUSHPIN_LINK_TIMEOUT + stream.LINK_MARGIN


@pytest.mark.parametrize(
    ("nonce", "grip_last", "fresh", "copied"),
    [
        (None, True, True, None),
        (None, False, True, "next link without Grip-Last"),
        ("n1", False, True, None),  # a page's link: no hold yet, so no Grip-Last
        ("n1", True, False, "page link fetched a second time"),
    ],
)
def test_a_copied_link_is_told_from_the_proxy_s_own(nonce, grip_last, fresh, copied):
    spent: list[str] = []

    def use_nonce(value: str) -> bool:
        spent.append(value)
        return fresh

    link = LinkState(("a",), None, nonce=nonce)
    assert stream.copied_link(link, grip_last_sent=grip_last, use_nonce=use_nonce) == copied
    # The nonce is spent only by a page link, whatever Grip-Last says.
    assert spent == ([] if nonce is None else [nonce])


def test_the_retry_spreads_reconnects_over_the_configured_seconds():
    bounds: list[tuple[int, int]] = []

    def choose(low: int, high: int) -> int:
        bounds.append((low, high))
        return high

    assert stream.retry(10, choose) == "retry: 10000\n\n"
    assert bounds == [(1000, 10000)]
    assert stream.retry(1, choose) == ""
    assert stream.retry(0, choose) == ""
    assert len(bounds) == 1


def test_an_outage_answers_a_subscribe_200_with_a_retry_and_a_link_503():
    def lowest(low: int, high: int) -> int:
        return high

    subscribe = stream.outage(link=False, spread=0, choose=lowest)
    assert subscribe.status == 200
    assert not subscribe.holds
    # At least OUTAGE_MIN_SPREAD seconds, even with the spread turned off.
    assert subscribe.body.startswith(f"retry: {stream.OUTAGE_MIN_SPREAD * 1000}\n")
    assert stream.outage(link=False, spread=30, choose=lowest).body.startswith("retry: 30000\n")
    link = stream.outage(link=True, spread=10, choose=lowest)
    assert (link.status, link.holds, link.headers) == (503, False, {})
    assert "unavailable" in link.body

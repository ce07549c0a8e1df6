"""grip_eventstream.views: the GRIP answers of the stream view, with RequestFactory.

No Pushpin here: requests carry the Grip-Sig Pushpin would add, and the responses' GRIP
headers are checked as Pushpin would read them. Channels (tests/channelmanagers.py):
volatile-* are not stored, private-* need a logged-in user, members-G membership of G.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import pytest
from django.contrib.auth.models import Group, User
from django.core import signing
from django.test import Client, RequestFactory
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, given
from hypothesis import event as hypothesis_event
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from grip_eventstream import grip, links
from grip_eventstream.conf import conf
from grip_eventstream.cursor import channel_key, format_cursor, parse_cursor
from grip_eventstream.eventstream import get_current_event_id
from grip_eventstream.models import Event
from grip_eventstream.sseclient import SSEParser
from grip_eventstream.storage import DjangoModelStorage
from tests.pushpin_model import pushpin_build_id

pytestmark = pytest.mark.django_db

KEY = "grip-eventstream-test-key-0123456789abcdef"
rf = RequestFactory()
LINK = re.compile(r"<(?P<url>[^>]*)>; rel=next(?:; timeout=(?P<timeout>\d+))?")


def make_sig(key: str = KEY, *, expires_in: int = 3600, iss: str = "pushpin") -> str:
    return jwt.encode({"iss": iss, "exp": int(time.time()) + expires_in}, key, "HS256")


@pytest.fixture(autouse=True)
def signed_grip_url(settings):
    """Django verifies Grip-Sig with the key, as with Pushpin's sig_key."""
    settings.GRIP_URL = f"http://127.0.0.1:5561?iss=pushpin&key={KEY}"


def call(path: str, method: str = "get", *, user=None, sig: str | None = "valid", **headers):
    """Route ``path`` as Django would and call the view; headers by their HTTP names."""
    if sig == "valid":
        sig = make_sig()
    if sig is not None:
        headers["Grip-Sig"] = sig
    request = getattr(rf, method)(path, headers=headers)
    if user is not None:
        request.user = user
    match = resolve(request.path_info)
    return match.func(request, *match.args, **match.kwargs)


def store(channel: str, data: str = "x", event_type: str = "message"):
    return DjangoModelStorage().append_event(channel, event_type, data, 3600)


def body_events(response):
    parser = SSEParser()
    return parser.feed(response.content), parser


def channel_header(response) -> dict[str, str | None]:
    """Grip-Channel as {pushpin name: prev-id or None}; build-id filter where prev-id.

    The link-proof channel is left out: it is held exactly when no channel has a prev-id.
    """
    result = {}
    proof = False
    for part in response["Grip-Channel"].split(", "):
        if part.startswith(grip.LINK_PROOF_CHANNEL + ";"):
            assert part == f"{grip.LINK_PROOF_CHANNEL}; prev-id=0", part
            proof = True
            continue
        name, *params = part.split("; ")
        pairs = [p.split("=", 1) for p in params]
        values = dict(pairs)
        filters = [v for k, v in pairs if k == "filter"]
        assert ("prev-id" in values) == ("build-id" in filters), part
        # Every channel but the reserved user channel allows publishes that skip users.
        assert ("skip-users" in filters) == (not name.startswith("~~")), part
        result[name] = values.get("prev-id")
    assert proof == all(prev_id is None for prev_id in result.values()), response["Grip-Channel"]
    return result


@dataclass
class Link:
    url: str
    timeout: int | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)


def link_state(response) -> links.LinkState:
    token = resolve(link_of(response).path).kwargs["grip_link"]
    return links.read_token(token, max_age=300, max_channels=18)


def link_of(response) -> Link:
    # The next link; a presence stream's first response also carries its gone link.
    match = LINK.fullmatch(response["Grip-Link"].split(", <")[0])
    assert match, response["Grip-Link"]
    timeout = match.group("timeout")
    return Link(match.group("url"), int(timeout) if timeout else None)


def position(event, channel: str) -> int | None:
    """The position of ``channel`` in the cursor an event carries as its id."""
    parsed = parse_cursor(event.last_event_id)
    assert parsed is not None, event
    return parsed.position(channel)


def epoch() -> str:
    return DjangoModelStorage().get_epoch()


def cursor_for(positions: dict[str, int], order=None) -> str:
    return format_cursor(epoch(), positions, order or sorted(positions))


def assert_plain_stream_headers(response):
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"


# --- the proxy check --------------------------------------------------------------------


def test_no_grip_sig_is_400(caplog):
    response = call("/events/", sig=None)
    assert "did not come through a GRIP proxy" in caplog.text
    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert b"must be reached through a GRIP proxy" in response.content
    assert b"7999" in response.content


@pytest.mark.parametrize(
    "sig",
    [
        make_sig(expires_in=-10),
        make_sig("another-key-of-enough-length-0123456789"),
        "not-a-jwt",
        jwt.encode({"iss": "pushpin"}, KEY, "HS256"),  # no exp
        make_sig(iss="someone-else"),
        jwt.encode({"exp": int(time.time()) + 60}, KEY, "HS256"),  # no iss
        jwt.encode({"iss": "pushpin", "exp": "tomorrow"}, KEY, "HS256"),
        jwt.encode({"iss": "pushpin", "exp": None}, KEY, "HS256"),
    ],
    ids=[
        "expired",
        "wrong-key",
        "garbage",
        "no-exp",
        "wrong-iss",
        "no-iss",
        "str-exp",
        "null-exp",
    ],
)
def test_bad_grip_sig_is_403(sig, caplog):
    response = call("/events/", sig=sig)
    assert response.status_code == 403
    assert b"Grip-Sig header did not verify" in response.content
    # The reason goes to the server log only.
    assert "Grip-Sig did not verify" in caplog.text


def test_the_publish_token_is_not_a_grip_sig():
    from grip_eventstream.proxies import control_auth_header
    from grip_eventstream.registry import get_proxies

    header = control_auth_header(get_proxies()[0])
    assert header is not None
    assert call("/events/", sig=header.removeprefix("Bearer ")).status_code == 403


def test_a_configured_issuer_replaces_pushpin(settings):
    settings.GRIP_URL = (
        f"http://127.0.0.1:5561?iss=pushpin&key={KEY}&verify-iss=edge&verify-key={KEY}"
    )
    assert call("/events/", sig=make_sig(iss="edge")).status_code == 200
    assert call("/events/", sig=make_sig(iss="pushpin")).status_code == 403


def test_valid_grip_sig_streams():
    assert call("/events/").status_code == 200


def test_without_a_key_any_grip_sig_is_accepted(settings):
    settings.GRIP_URL = "http://127.0.0.1:5561"
    assert call("/events/", sig="anything").status_code == 200
    assert call("/events/", sig=None).status_code == 400


def test_fanout_style_verify_iss(settings):
    settings.GRIP_URL = (
        f"https://api.fastly.com/service/S?verify-iss=fastly:S&verify-key={KEY}&key=T"
    )
    assert call("/events/", sig=make_sig(iss="fastly:S")).status_code == 200
    assert call("/events/", sig=make_sig(iss="pushpin")).status_code == 403


def test_any_configured_proxy_key_verifies(settings):
    other = "the-other-pushpin-key-0123456789abcdef"
    settings.GRIP_PROXIES = [
        {"control_uri": "http://a:5561", "control_iss": "pushpin", "key": KEY},
        {"control_uri": "http://b:5561", "control_iss": "pushpin", "key": other},
    ]
    assert call("/events/", sig=make_sig(other)).status_code == 200
    assert call("/events/", sig=make_sig(KEY)).status_code == 200
    assert call("/events/", sig=make_sig("a-third-key-0123456789abcdef0123456")).status_code == 403


# --- methods and CORS -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch", "head"])
def test_other_methods_are_405(method):
    response = call("/events/", method, sig=None)
    assert response.status_code == 405
    assert response["Allow"] == "GET, OPTIONS"


def test_no_cors_headers_without_origin_or_settings(settings):
    assert "Access-Control-Allow-Origin" not in call("/events/")
    settings.EVENTSTREAM_ALLOW_ORIGINS = []
    assert "Access-Control-Allow-Origin" not in call("/events/", Origin="https://a.example")


def test_cors_exact_origin(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example"]
    response = call("/events/", Origin="https://a.example")
    assert response["Access-Control-Allow-Origin"] == "https://a.example"
    assert response["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in response


def test_cors_star(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["*"]
    response = call("/events/", Origin="https://anything.example")
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in response


@pytest.mark.parametrize("allowed", [["*"], ["https://a.example"]])
def test_cors_credentials_echo_the_origin(settings, allowed):
    settings.EVENTSTREAM_ALLOW_ORIGINS = allowed
    settings.EVENTSTREAM_ALLOW_CREDENTIALS = True
    response = call("/events/", Origin="https://a.example")
    assert response["Access-Control-Allow-Origin"] == "https://a.example"
    assert response["Vary"] == "Origin"
    assert response["Access-Control-Allow-Credentials"] == "true"


def test_cors_disallowed_origin(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example"]
    settings.EVENTSTREAM_ALLOW_CREDENTIALS = True
    response = call("/events/", Origin="https://evil.example")
    assert response.status_code == 200
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_preflight(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example"]
    settings.EVENTSTREAM_ALLOW_HEADERS = ["last-event-id", "Authorization", "authorization", "X-A"]
    response = call(
        "/events/",
        "options",
        sig=None,
        Origin="https://a.example",
        **{
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response["Access-Control-Allow-Origin"] == "https://a.example"
    assert response["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert response["Access-Control-Allow-Headers"] == (
        "Last-Event-ID, Cache-Control, Authorization, X-A"
    )
    assert response["Access-Control-Max-Age"] == "86400"


def test_cors_with_django_eventstreams_setting_forms(settings):
    settings.EVENTSTREAM_ALLOW_ORIGIN = "https://a.example"
    settings.EVENTSTREAM_ALLOW_HEADERS = "Authorization, X-Custom"
    response = call("/events/", "options", sig=None, Origin="https://a.example")
    assert response["Access-Control-Allow-Origin"] == "https://a.example"
    assert response["Access-Control-Allow-Headers"] == (
        "Last-Event-ID, Cache-Control, Authorization, X-Custom"
    )
    assert "Access-Control-Allow-Origin" not in call("/events/", Origin="https://b.example")


def test_preflight_default_headers(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["*"]
    response = call("/events/", "options", sig=None, Origin="https://a.example")
    assert response["Access-Control-Allow-Headers"] == "Last-Event-ID, Cache-Control"


def test_preflight_disallowed_origin(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example"]
    response = call("/events/", "options", sig=None, Origin="https://evil.example")
    assert response.status_code == 204
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_cors_headers_on_refusals(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example"]
    for response in (
        call("/events/", sig=None, Origin="https://a.example"),
        call("/events/", "post", Origin="https://a.example"),
        call("/rooms/private-x/events/", Origin="https://a.example"),
    ):
        assert response.status_code in (400, 403, 405)
        assert response["Access-Control-Allow-Origin"] == "https://a.example"


# --- which channels ---------------------------------------------------------------------


def test_no_channel_is_400():
    response = call("/stream/")
    assert response.status_code == 400
    assert b"No channel selected" in response.content


def test_too_many_channels_is_400(settings):
    query = "&".join(f"channel=c{i}" for i in range(11))
    response = call(f"/stream/?{query}")
    assert response.status_code == 400
    assert b"11 channels requested; a stream carries at most 10" in response.content
    settings.EVENTSTREAM_MAX_CHANNELS = 2
    assert call("/stream/?channel=a&channel=b").status_code == 200
    assert call("/stream/?channel=a&channel=b&channel=c").status_code == 400


@pytest.mark.parametrize(
    ("query", "reason"),
    [("channel=a%0Ab", b"control character U+000A"), ("channel=" + "a" * 129, b"limit is 128")],
)
def test_invalid_channel_name_is_400(query, reason):
    response = call(f"/stream/?{query}")
    assert response.status_code == 400
    assert response.content.startswith(b"Invalid channel name:")
    assert reason in response.content


def test_private_channel_anonymous_is_403():
    response = call("/rooms/private-x/events/")
    assert response.status_code == 403
    assert response.content == b"Permission denied: anonymous users may not read private-x.\n"


def test_private_channel_other_user_is_refused():
    user = User.objects.create(username="u")
    response = call("/rooms/members-staff/events/", user=user)
    assert response.status_code == 403
    assert b"this user may not read members-staff" in response.content


def test_channels_from_format_channels_and_path():
    assert channel_header(call("/objects/42/events/")) == {"object-42": "0"}
    assert channel_header(call("/rooms/volatile-x/events/")) == {"volatile-x": None}


# --- unreliable streams -----------------------------------------------------------------


def test_unreliable_only_stream():
    response = call("/stream/?channel=volatile-a&channel=volatile-b")
    assert_plain_stream_headers(response)
    assert response["Grip-Hold"] == "stream"
    assert channel_header(response) == {"volatile-a": None, "volatile-b": None}
    assert response["Grip-Keep-Alive"] == "OgoK; format=base64; timeout=20"
    assert "Grip-Set-Meta" not in response
    assert response.content == b""  # no id-only block: nothing to resume


def test_unreliable_only_link_has_no_query_and_rechecks():
    response = call("/stream/?channel=volatile-a")
    link = link_of(response)
    assert link.query == {}
    assert link.timeout == 120
    again = call(link.url, **{"Grip-Last": "~~link; last-id=0"})
    assert again["Grip-Hold"] == "stream"
    assert channel_header(again) == {"volatile-a": None}
    assert link_state(again) == link_state(response)
    assert again.content == b""


def test_storage_disabled_makes_every_channel_unreliable(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    response = call("/multi/")
    assert response["Grip-Hold"] == "stream"
    assert set(channel_header(response).values()) == {None}
    assert "Grip-Set-Meta" not in response
    assert response.content == b""


def test_keep_alive_setting(settings):
    settings.EVENTSTREAM_KEEP_ALIVE = 0
    assert "Grip-Keep-Alive" not in call("/events/")
    settings.EVENTSTREAM_KEEP_ALIVE = 7
    assert call("/events/")["Grip-Keep-Alive"] == "OgoK; format=base64; timeout=7"


# --- reliable streams -------------------------------------------------------------------


def test_reliable_stream_new_channel():
    response = call("/events/")
    assert_plain_stream_headers(response)
    assert response["Grip-Hold"] == "stream"
    assert channel_header(response) == {"test": "0"}
    events, parser = body_events(response)
    assert events == []
    current = get_current_event_id(["test"])
    assert parser.id_updates() == [current]
    assert response.content == f"id: {current}\n\n".encode()


def test_reliable_stream_headers():
    for _ in range(3):
        store("test")
    store("room 1")
    response = call("/multi/")
    e = epoch()
    assert channel_header(response) == {
        grip.pushpin_channel("room 1"): "1",
        "test": "3",
        grip.pushpin_channel("ünï"): "0",
    }
    order = ["room 1", "test", "ünï"]
    template = ".".join([e] + [f"{channel_key(c)}-%({grip.pushpin_channel(c)})s" for c in order])
    assert response["Grip-Set-Meta"] == f'id_format="{template}"'
    link = link_of(response)
    assert link.timeout == 120
    assert link.path.startswith("/multi/_link/")
    assert link.path.endswith("/")
    assert link.query == {}
    match = resolve(link.path)
    assert match.url_name == "grip_eventstream-link"
    payload = signing.loads(match.kwargs["grip_link"], salt=links.SALT)
    assert payload == {"c": order, "u": None, "f": 1}
    (_, parser) = body_events(response)
    assert parser.id_updates() == [cursor_for({"room 1": 1, "test": 3, "ünï": 0}, order)]


def test_link_timeout_setting(settings):
    settings.EVENTSTREAM_LINK_TIMEOUT = 0
    assert link_of(call("/events/")).timeout is None


def test_mixed_reliable_and_unreliable():
    store("test")
    response = call("/stream/?channel=test&channel=volatile-a")
    assert channel_header(response) == {"volatile-a": None, "test": "1"}
    assert f"{channel_key('test')}-%(test)s" in response["Grip-Set-Meta"]
    assert channel_key("volatile-a") not in response["Grip-Set-Meta"]


def test_logged_in_stream_subscribes_to_its_user_channel():
    user = User.objects.create(username="u")
    response = call("/rooms/private-x/events/", user=user)
    assert response.status_code == 200
    header = channel_header(response)
    assert header == {grip.user_control_channel(user.pk): None, "private-x": "0"}
    token = resolve(link_of(response).path).kwargs["grip_link"]
    assert signing.loads(token, salt=links.SALT) == {"c": ["private-x"], "u": str(user.pk), "f": 1}


# --- replay on reconnect ----------------------------------------------------------------


def test_replay_missed_events_oldest_first_across_channels():
    channels = ["test", "room 1", "ünï"]
    store("test", "before")
    cursor = get_current_event_id(channels)
    sent = [
        store("room 1", '{"n": 1}'),
        store("test", "two", "update"),
        store("ünï", "three\nlines"),
        store("test", "4"),
    ]
    response = call("/multi/", **{"Last-Event-ID": cursor})
    events, parser = body_events(response)
    assert [(e.type, e.data) for e in events] == [
        ("message", '{"n": 1}'),
        ("update", "two"),
        ("message", "three\nlines"),
        ("message", "4"),
    ]
    expected = {"test": 1, "room 1": 0, "ünï": 0}
    for event, stored in zip(events, sent, strict=True):
        expected[stored.channel] = stored.seq
        parsed = parse_cursor(event.last_event_id)
        assert parsed is not None
        assert parsed.epoch == epoch()
        assert {c: parsed.position(c) for c in channels} == expected
    # The id-only block repeats the final cursor, and the hold starts where replay ended.
    assert parser.last_event_id == events[-1].last_event_id
    assert channel_header(response) == {
        grip.pushpin_channel("room 1"): "1",
        "test": "3",
        grip.pushpin_channel("ünï"): "1",
    }
    assert parser.last_event_id == get_current_event_id(channels)


def test_replay_from_query_parameter():
    cursor = get_current_event_id(["test"])
    store("test", "a")
    events, _ = body_events(call(f"/events/?lastEventId={cursor}"))
    assert [e.data for e in events] == ["a"]


def test_header_wins_over_query():
    early = get_current_event_id(["test"])
    store("test", "a")
    late = get_current_event_id(["test"])
    store("test", "b")
    events, _ = body_events(call(f"/events/?lastEventId={early}", **{"Last-Event-ID": late}))
    assert [e.data for e in events] == ["b"]


def test_empty_header_falls_back_to_query():
    early = get_current_event_id(["test"])
    store("test", "a")
    events, _ = body_events(call(f"/events/?lastEventId={early}", **{"Last-Event-ID": ""}))
    assert [e.data for e in events] == ["a"]


def test_cursor_without_a_channel_starts_that_channel_now():
    store("room 1", "old")
    cursor = get_current_event_id(["test"])
    store("test", "new")
    events, _ = body_events(call("/multi/", **{"Last-Event-ID": cursor}))
    assert [e.data for e in events] == ["new"]


def test_percent_and_unicode_data_replayed_verbatim():
    cursor = get_current_event_id(["test"])
    store("test", "100% ünï 🎉 %I %%", "ev%t")
    response = call("/events/", **{"Last-Event-ID": cursor})
    # Pushpin runs its build-id filter over the body of a hold with a reliable channel.
    delivered = pushpin_build_id(response.content.decode(), "unused")
    (event,) = SSEParser().feed(delivered.encode())
    assert (event.type, event.data) == ("ev%t", "100% ünï 🎉 %I %%")


def resets(response):
    events, _ = body_events(response)
    found = [e for e in events if e.type == "stream-reset"]
    return [json.loads(e.data) for e in found], events


@pytest.mark.parametrize(
    "last_event_id",
    ["not a cursor", "x" * 5000, "abcdefg.zzzzzz-01", "\u00e9\u00e9", "abcdefg:1"],
)
def test_garbage_cursor_resets(last_event_id):
    store("test", "old")
    response = call("/multi/", **{"Last-Event-ID": last_event_id})
    assert response.status_code == 200
    found, events = resets(response)
    assert found == [{"channels": ["room 1", "test", "ünï"], "reason": "invalid-cursor"}]
    assert len(events) == 1  # nothing replayed
    assert position(events[0], "test") == 1


def test_other_epoch_resets():
    store("test", "old")
    other = "aaaaaaa" if epoch() != "aaaaaaa" else "bbbbbbb"
    found, events = resets(
        call("/events/", **{"Last-Event-ID": f"{other}.{channel_key('test')}-0"})
    )
    assert found == [{"channels": ["test"], "reason": "epoch-changed"}]
    assert len(events) == 1


def test_future_position_resets():
    store("test")
    store("room 1")
    cursor = cursor_for({"test": 5, "room 1": 1})
    found, events = resets(call("/multi/", **{"Last-Event-ID": cursor}))
    assert found == [{"channels": ["test"], "reason": "unknown-position"}]
    assert position(events[0], "test") == 1


def test_trimmed_events_reset():
    cursor = get_current_event_id(["test", "room 1", "ünï"])
    for i in range(3):
        store("test", f"t{i}")
    store("room 1", "r")
    store("ünï", "u1")
    store("ünï", "u2")
    Event.objects.filter(channel="test", seq__lte=2).delete()
    Event.objects.filter(channel="ünï").delete()
    found, events = resets(call("/multi/", **{"Last-Event-ID": cursor}))
    assert found == [{"channels": ["test", "ünï"], "reason": "expired"}]
    # The expired channels start from now; the others replay.
    assert [e.data for e in events if e.type != "stream-reset"] == ["r"]


def test_one_reset_event_per_reason():
    store("test")
    other_epoch_for_room = None  # one cursor has one epoch: combine expired + unknown-position
    del other_epoch_for_room
    cursor = cursor_for({"test": 0, "room 1": 9})
    store("test")
    Event.objects.filter(channel="test", seq=1).delete()
    found, events = resets(call("/multi/", **{"Last-Event-ID": cursor}))
    assert found == [
        {"channels": ["room 1"], "reason": "unknown-position"},
        {"channels": ["test"], "reason": "expired"},
    ]
    assert [e.type for e in events] == ["stream-reset", "stream-reset"]


# --- paging -----------------------------------------------------------------------------


def test_paged_replay(settings):
    settings.EVENTSTREAM_REPLAY_LIMIT = 3
    cursor = get_current_event_id(["test"])
    for i in range(7):
        store("test", str(i))
    response = call("/events/", **{"Last-Event-ID": cursor})
    received = []
    pages = 0
    while "Grip-Hold" not in response:
        pages += 1
        assert response.status_code == 200
        assert "Grip-Channel" not in response
        link = link_of(response)
        assert link.timeout is None  # fetched at once
        assert link.query == {}
        resume = link_state(response).resume
        events, parser = body_events(response)
        assert parser.id_updates() == [e.last_event_id for e in events]
        assert resume == events[-1].last_event_id
        received += [e.data for e in events]
        response = call(link.url)
        assert pages < 10
    assert pages == 2
    events, parser = body_events(response)
    received += [e.data for e in events]
    assert received == [str(i) for i in range(7)]
    # The last page holds, has no id-only block (ids came with the events), links on.
    assert parser.id_updates() == [e.last_event_id for e in events]
    assert channel_header(response) == {"test": "7"}
    assert link_of(response).query == {}
    assert link_state(response) == links.LinkState(("test",), None, filtered=True)


def test_paging_across_channels(settings):
    settings.EVENTSTREAM_REPLAY_LIMIT = 2
    cursor = get_current_event_id(["test", "room 1", "ünï"])
    order = ["test", "room 1", "test", "ünï", "room 1"]
    for i, channel in enumerate(order):
        store(channel, str(i))
    response = call("/multi/", **{"Last-Event-ID": cursor})
    received = []
    while "Grip-Hold" not in response:
        received += [e.data for e in body_events(response)[0]]
        response = call(link_of(response).url)
    received += [e.data for e in body_events(response)[0]]
    assert received == ["0", "1", "2", "3", "4"]


def test_exactly_the_limit_is_one_page(settings):
    settings.EVENTSTREAM_REPLAY_LIMIT = 3
    cursor = get_current_event_id(["test"])
    for i in range(3):
        store("test", str(i))
    response = call("/events/", **{"Last-Event-ID": cursor})
    assert response["Grip-Hold"] == "stream"
    assert len(body_events(response)[0]) == 3


# --- next-link requests (gap repair) ----------------------------------------------------


def test_link_request_with_grip_last():
    response = call("/events/")
    link = link_of(response)
    for i in range(4):
        store("test", str(i))
    again = call(link.url, **{"Grip-Last": "test; last-id=1"})
    assert again.status_code == 200
    events, parser = body_events(again)
    assert [e.data for e in events] == ["1", "2", "3"]
    assert parser.id_updates() == [e.last_event_id for e in events]  # no id-only block
    assert [position(e, "test") for e in events] == [2, 3, 4]
    assert again["Grip-Hold"] == "stream"
    assert channel_header(again) == {"test": "4"}
    assert link_state(again) == links.LinkState(("test",), None, filtered=True)
    # It found missed events: fetched again shortly (stream.SETTLE_LINK_TIMEOUT).
    assert link_of(again).timeout == 3
    assert "Grip-Set-Meta" in again


def test_link_request_up_to_date_is_empty():
    store("test")
    link = link_of(call("/events/"))
    again = call(link.url, **{"Grip-Last": "test; last-id=1"})
    assert again.content == b""
    assert channel_header(again) == {"test": "1"}
    assert link_of(again).timeout == 120  # the usual timeout again


def test_link_request_with_encoded_names_in_grip_last():
    link = link_of(call("/multi/"))
    store("room 1", "r1")
    store("ünï", "u1")
    store("ünï", "u2")
    grip_last = ", ".join(
        f"{grip.pushpin_channel(c)}; last-id={n}"
        for c, n in [("room 1", 0), ("test", 0), ("ünï", 1)]
    )
    events, _ = body_events(call(link.url, **{"Grip-Last": grip_last}))
    assert [e.data for e in events] == ["r1", "u2"]


def test_link_request_grip_last_beats_last_event_id():
    link = link_of(call("/events/"))
    store("test", "a")
    store("test", "b")
    events, _ = body_events(
        call(link.url, **{"Grip-Last": "test; last-id=1", "Last-Event-ID": "garbage"})
    )
    assert [e.data for e in events] == ["b"]


@pytest.mark.parametrize("grip_last", ["test; last-id=9", "other; last-id=1", "test; last-id=x"])
def test_link_request_unknown_grip_last_resets(grip_last):
    store("test")
    link = link_of(call("/events/"))
    found, events = resets(call(link.url, **{"Grip-Last": grip_last}))
    assert found == [{"channels": ["test"], "reason": "unknown-position"}]
    assert len(events) == 1


@pytest.mark.parametrize("last_id", ["\u00b2", "9" * 5000])
def test_link_request_odd_digits_reset(last_id):
    store("test")
    link = link_of(call("/events/"))
    found, _ = resets(call(link.url, **{"Grip-Last": f"test; last-id={last_id}"}))
    assert found == [{"channels": ["test"], "reason": "unknown-position"}]


def test_resume_wins_over_grip_last(settings):
    settings.EVENTSTREAM_REPLAY_LIMIT = 1
    cursor = get_current_event_id(["test"])
    store("test", "a")
    store("test", "b")
    page = call("/events/", **{"Last-Event-ID": cursor})
    url = link_of(page).url
    events, _ = body_events(call(url, **{"Grip-Last": "test; last-id=0"}))
    assert [e.data for e in events] == ["b"]


def test_tampered_link_token_is_400():
    link = link_of(call("/events/"))
    token = resolve(link.path).kwargs["grip_link"]
    tampered = link.path.replace(token, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    response = call(tampered)
    assert response.status_code == 400
    assert response.content == b"Invalid, expired or tampered next-link token.\n"


@pytest.mark.parametrize(
    "payload",
    [
        {"c": [""], "u": None},
        {"c": ["a\nb"], "u": None},
        {"c": 5, "u": None},
        {"c": ["test"]},
        ["test"],
        {"c": [5], "u": None},
    ],
)
def test_signed_but_invalid_link_payload_is_400(payload):
    token = signing.dumps(payload, salt=links.SALT, compress=True)
    assert call(f"/events/_link/{token}/").status_code == 400


def test_link_token_from_another_salt_is_400():
    token = signing.dumps({"c": ["test"], "u": None}, compress=True)
    assert call(f"/events/_link/{token}/").status_code == 400


def test_link_request_needs_grip_sig_too():
    link = link_of(call("/events/"))
    assert call(link.url, sig=None).status_code == 400
    assert call(link.url, sig=make_sig(expires_in=-5)).status_code == 403


def test_link_request_user_comes_from_the_token():
    user = User.objects.create(username="u")
    link = link_of(call("/rooms/private-x/events/", user=user))
    store("private-x", "secret")
    # Pushpin's request has no cookies: no request.user at all.
    again = call(link.url, **{"Grip-Last": "private-x; last-id=0"})
    assert again.status_code == 200
    assert [e.data for e in body_events(again)[0]] == ["secret"]
    assert grip.user_control_channel(user.pk) in channel_header(again)


def test_link_request_after_permission_loss_ends_the_stream():
    user = User.objects.create(username="u")
    staff = Group.objects.create(name="staff")
    user.groups.add(staff)
    link = link_of(call("/rooms/members-staff/events/", user=user))
    store("members-staff", "hidden")
    user.groups.remove(staff)
    response = call(link.url, **{"Grip-Last": "members-staff; last-id=0"})
    assert response.status_code == 200
    assert "Grip-Hold" not in response
    assert "Grip-Link" not in response
    (event,), _ = body_events(response)
    assert event.type == "stream-error"
    assert json.loads(event.data) == {
        "condition": "forbidden",
        "text": "Permission denied: this user may no longer read members-staff.",
        "channels": ["members-staff"],
    }


@pytest.mark.parametrize("change", ["deactivate", "delete"])
def test_link_request_for_a_gone_user(change):
    user = User.objects.create(username="u")
    link = link_of(call("/rooms/private-x/events/", user=user))
    if change == "delete":
        user.delete()
    else:
        User.objects.filter(pk=user.pk).update(is_active=False)
    response = call(link.url, **{"Grip-Last": "private-x; last-id=0"})
    (event,), _ = body_events(response)
    assert event.type == "stream-error"
    assert "anonymous users may no longer read private-x" in json.loads(event.data)["text"]


# --- through the test client (URLconf + middleware) -------------------------------------


def test_full_stack_with_client():
    client = Client()
    user = User.objects.create(username="u")
    client.force_login(user)
    cursor = get_current_event_id(["private-x"])
    store("private-x", "hello")
    response = client.get(
        "/rooms/private-x/events/", headers={"Grip-Sig": make_sig(), "Last-Event-ID": cursor}
    )
    assert response.status_code == 200
    assert [e.data for e in body_events(response)[0]] == ["hello"]
    link = link_of(response)
    # Pushpin's next-link request: no cookies, Grip-Last.
    headers = {"Grip-Sig": make_sig(), "Grip-Last": "private-x; last-id=1"}
    anonymous = Client().get(link.url, headers=headers)
    assert anonymous.status_code == 200
    assert anonymous["Grip-Hold"] == "stream"


# --- bugs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/rooms/room%201/events/", "/rooms/%C3%BCn%C3%AF/events/", "/rooms/%E6%97%A5/events/"]
)
def test_link_path_is_percent_encoded(path):
    response = call(path)
    assert response.status_code == 200
    url = link_of(response).url
    assert url.startswith(path)
    assert re.fullmatch(r"[A-Za-z0-9/_.~%:@!$&'()*+=?-]+", url)


@dataclass
class UUIDUser:
    pk: uuid.UUID
    is_authenticated: bool = True
    is_active: bool = True


def test_uuid_user_pk():
    user = UUIDUser(uuid.UUID("12345678-1234-5678-1234-567812345678"))
    response = call("/rooms/private-x/events/", user=user)
    assert response.status_code == 200
    assert link_of(response).path.startswith("/rooms/private-x/events/_link/")


# --- any content, any channel name (issue: replay of any content) -----------------------


def delivered_events(response, *, filtered: bool):
    """What the client receives: Pushpin runs build-id over filtered bodies."""
    body = response.content.decode()
    if filtered:
        body = pushpin_build_id(body, "unused")
    return SSEParser().feed(body.encode())


def test_a_comma_in_the_path_is_encoded_in_grip_link():
    response = call("/rooms/a,b/events/")
    assert response.status_code == 200
    link = link_of(response)
    assert link.path.startswith("/rooms/a%2Cb/events/_link/")
    assert "," not in response["Grip-Link"].split(">")[0]
    assert link_state(response).channels == ("a,b",)
    again = call(link.path, **{"Grip-Last": f"{grip.pushpin_channel('a,b')}; last-id=0"})
    assert again.status_code == 200
    assert link_of(again).path.startswith("/rooms/a%2Cb/events/_link/")


def test_garbage_last_event_id_is_an_invalid_cursor():
    found, _ = resets(call("/events/?lastEventId=garbage"))
    assert found == [{"channels": ["test"], "reason": "invalid-cursor"}]


def test_reset_of_a_percent_channel_survives_the_filter():
    response = call("/rooms/50%25/events/", **{"Last-Event-ID": "garbage"})
    assert b"50%%" in response.content
    (event,) = delivered_events(response, filtered=True)
    assert json.loads(event.data) == {"channels": ["50%"], "reason": "invalid-cursor"}


def test_pages_before_the_hold_are_not_escaped_and_links_after_it_are(settings):
    settings.EVENTSTREAM_REPLAY_LIMIT = 1
    cursor = get_current_event_id(["test"])
    store("test", "50% a")
    store("test", "50% b")
    page = call("/events/", **{"Last-Event-ID": cursor})
    assert "Grip-Hold" not in page
    assert link_state(page).filtered is False  # Pushpin does not filter a page
    assert [e.data for e in delivered_events(page, filtered=False)] == ["50% a"]
    last = call(link_of(page).path)
    assert last["Grip-Hold"] == "stream"
    assert [e.data for e in delivered_events(last, filtered=False)] == ["50% b"]
    # Later next links of the held stream are filtered.
    store("test", "50% c")
    gap = call(link_of(last).path, **{"Grip-Last": "test; last-id=2"})
    assert link_state(last).filtered is True
    assert [e.data for e in delivered_events(gap, filtered=True)] == ["50% c"]


def test_stream_error_on_a_filtered_stream_is_escaped():
    user = User.objects.create(username="u")
    group = Group.objects.create(name="50%")
    user.groups.add(group)
    link = link_of(call("/rooms/members-50%25/events/", user=user))
    user.groups.remove(group)
    response = call(link.url, **{"Grip-Last": f"{grip.pushpin_channel('members-50%')}; last-id=0"})
    assert b"members-50%%" in response.content
    (event,) = delivered_events(response, filtered=True)
    assert event.type == "stream-error"
    assert json.loads(event.data)["channels"] == ["members-50%"]


def test_expired_link_token_ends_the_stream(monkeypatch):
    """The browser then reconnects with Last-Event-ID; a 4xx would make Pushpin retry."""
    link = link_of(call("/events/"))
    later = time.time() + 120 + 61
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    response = call(link.url, **{"Grip-Last": "test; last-id=0"})
    assert response.status_code == 200
    assert response.content == b""
    assert "Grip-Hold" not in response
    assert "Grip-Link" not in response


def test_a_client_cannot_open_the_link_of_a_reliable_stream():
    """Pushpin strips Grip-Last from client requests, and always sends it on its own."""
    link = link_of(call("/events/"))
    response = call(link.url)
    assert response.status_code == 403
    assert b"fetched once by the GRIP proxy" in response.content


@pytest.mark.parametrize("logged_in", [False, True])
def test_a_client_cannot_open_the_link_of_a_stream_without_stored_channels(logged_in, caplog):
    """The link-proof channel makes Pushpin send Grip-Last on those streams' links too."""
    user = User.objects.create(username=f"u{uuid.uuid4().hex[:8]}") if logged_in else None
    response = call("/stream/?channel=volatile-a", user=user)
    assert "~~link; prev-id=0" in response["Grip-Channel"]
    link = link_of(response)
    copied = call(link.url)
    assert copied.status_code == 403
    assert "Grip-Hold" not in copied
    assert "next link without Grip-Last" in caplog.text
    assert call(link.url, **{"Grip-Last": "~~link; last-id=0"})["Grip-Hold"] == "stream"


def test_a_page_link_is_answered_once(settings, caplog):
    settings.EVENTSTREAM_REPLAY_LIMIT = 2
    cursor = get_current_event_id(["test"])
    for i in range(5):
        store("test", str(i))
    first = call("/events/", **{"Last-Event-ID": cursor})
    assert "Grip-Hold" not in first  # a page
    page_link = link_of(first)
    assert link_state(first).nonce is not None
    second = call(page_link.url)
    assert [e.data for e in body_events(second)[0]] == ["2", "3"]
    replayed = call(page_link.url)
    assert replayed.status_code == 403
    assert replayed.content.startswith(b"This link is fetched once")
    assert "page link fetched a second time" in caplog.text
    # Each page has its own nonce: the next page is answered, once.
    third = call(link_of(second).url)
    assert [e.data for e in body_events(third)[0]] == ["4"]
    assert call(link_of(second).url).status_code == 403


def test_used_page_nonces_are_cleared_once_expired(monkeypatch):
    from grip_eventstream.models import UsedPageLink

    now = time.time()
    assert links.use_page_nonce("old", max_age=10)
    assert not links.use_page_nonce("old", max_age=10)
    monkeypatch.setattr("time.time", lambda: now + 11)
    assert links.use_page_nonce("new", max_age=10)
    assert list(UsedPageLink.objects.values_list("nonce", flat=True)) == ["new"]


def test_a_page_link_during_an_outage_is_503_and_can_be_fetched_later(settings, monkeypatch):
    from django.db import OperationalError

    from grip_eventstream.models import UsedPageLink

    settings.EVENTSTREAM_REPLAY_LIMIT = 1
    cursor = get_current_event_id(["test"])
    store("test", "a")
    store("test", "b")
    page_link = link_of(call("/events/", **{"Last-Event-ID": cursor}))

    def unreachable(self, *args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(UsedPageLink, "save", unreachable)
        assert call(page_link.url).status_code == 503
    assert [e.data for e in body_events(call(page_link.url))[0]] == ["b"]


def test_link_token_lifetime_follows_the_link_timeout(settings, monkeypatch):
    settings.EVENTSTREAM_LINK_TIMEOUT = 10
    link = link_of(call("/events/"))
    now = time.time()
    grip_last = {"Grip-Last": "test; last-id=0"}
    monkeypatch.setattr("django.core.signing.time.time", lambda: now + 65)
    assert call(link.url, **grip_last)["Grip-Hold"] == "stream"
    monkeypatch.setattr("django.core.signing.time.time", lambda: now + 75)
    assert "Grip-Hold" not in call(link.url, **grip_last)


def test_big_backlog_pages_by_bytes(settings):
    cursor = get_current_event_id(["test"])
    for i in range(40):
        store("test", f"{i:03d}" + "x" * 5000)
    response = call("/events/", **{"Last-Event-ID": cursor})
    received = []
    pages = 0
    while "Grip-Hold" not in response:
        assert len(response.content) <= conf.EVENTSTREAM_REPLAY_MAX_BYTES
        received += [e.data[:3] for e in body_events(response)[0]]
        response = call(link_of(response).path)
        pages += 1
    received += [e.data[:3] for e in delivered_events(response, filtered=True)]
    assert received == [f"{i:03d}" for i in range(40)]
    assert pages == 3  # 200 KB in pages of at most 64 KiB


@pytest.mark.parametrize(
    "token", ["x", "a" * 500, "eJyrVkrOz1WyUkrOLypRqgUAJJoEkQ:1:2", "%00", "..", "~"]
)
def test_odd_link_tokens_are_400(token):
    assert call(f"/events/_link/{quote(token, safe='')}/").status_code in (400, 404)


# --- fuzz: every request input, never a 500 ---------------------------------------------

header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def odd_sig(draw_claims: dict) -> str:
    return jwt.encode(draw_claims, KEY, "HS256")


claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(["pushpin", ""]) | json_values.filter(lambda v: isinstance(v, str)),
        "exp": st.sampled_from([int(time.time()) + 600, -1, 0, 10**30]) | json_values,
        "nbf": json_values,
        "iat": json_values,
        "aud": json_values,
        "grip-eventstream-use": json_values,
    },
)


@st.composite
def stream_requests(draw):
    channel = draw(st.text(max_size=20))
    kind = draw(st.sampled_from(["path", "query", "multi", "link", "signed-link", "drf"]))
    if kind == "path":
        path = f"/rooms/{quote(channel, safe='')}/events/"
    elif kind == "query":
        path = f"/stream/?channel={quote(channel, safe='')}&lastEventId={quote(draw(header_text))}"
    elif kind == "multi":
        path = "/multi/"
    elif kind == "link":
        path = f"/events/_link/{quote(draw(st.text(max_size=80)), safe='')}/"
    elif kind == "signed-link":
        payload = draw(
            st.fixed_dictionaries(
                {},
                optional={"c": json_values, "u": json_values, "r": json_values, "f": json_values},
            )
            | json_values
        )
        path = f"/events/_link/{signing.dumps(payload, salt=links.SALT, compress=True)}/"
    else:
        path = f"/drf/any/?channel={quote(channel, safe='')}"
    headers = {}
    for name in ("Last-Event-ID", "Grip-Last", "Origin"):
        if draw(st.booleans()):
            headers[name] = draw(header_text)
    # Mostly valid signatures, so that the other inputs reach the stream code.
    odd = st.sampled_from([None]) | header_text | claims.map(odd_sig)
    sig = "valid" if draw(st.integers(0, 3)) else draw(odd)
    return path, sig, headers


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream_requests())
def test_no_request_input_gives_a_500(request_input):
    path, sig, headers = request_input
    store("test", "100% %I")
    try:
        response = call(path, sig=sig, **headers)
    except Resolver404:  # "/" in a channel name: not a stream URL at all
        return
    assert response.status_code in (200, 400, 403), (path, response.content)
    hypothesis_event(f"status {response.status_code}")


def test_link_token_lifetime_with_pushpins_default_timeout(settings, monkeypatch):
    settings.EVENTSTREAM_LINK_TIMEOUT = 0  # no timeout in Grip-Link: Pushpin uses 120 s
    link = link_of(call("/events/"))
    now = time.time()
    monkeypatch.setattr("django.core.signing.time.time", lambda: now + 175)
    assert call(link.url, **{"Grip-Last": "test; last-id=0"})["Grip-Hold"] == "stream"


# --- queries per request -----------------------------------------------------------------


def test_queries_per_request(django_assert_num_queries):
    cursor = get_current_event_id(["test"])
    with django_assert_num_queries(1):  # the epoch and the channels' numbers, together
        call("/events/", **{"Last-Event-ID": cursor})
    for i in range(10):
        store("test", str(i))
    with django_assert_num_queries(2):  # + one bounded range of missed events
        response = call("/events/", **{"Last-Event-ID": cursor})
    assert len(body_events(response)[0]) == 10
    with django_assert_num_queries(2):  # a next link: the same
        call(link_of(response).url, **{"Grip-Last": "test; last-id=5"})
    with django_assert_num_queries(0):  # a stream without stored channels needs no query
        call("/stream/?channel=volatile-x")


# --- reconnect spread ----------------------------------------------------------------------


def test_subscribes_tell_the_browser_a_random_reconnect_delay(settings):
    settings.EVENTSTREAM_RECONNECT_SPREAD = 10
    delays = set()
    for _ in range(20):
        response = call("/events/")
        parser = SSEParser()
        assert parser.feed(response.content) == []  # no event is dispatched
        match = re.match(rb"retry: (\d+)\n\n", response.content)
        assert match, response.content
        delays.add(int(match.group(1)))
        assert parser.retry is not None
        assert 1000 <= parser.retry <= 10_000
    assert len(delays) > 1
    link = link_of(response)
    assert b"retry:" not in call(link.url, **{"Grip-Last": "test; last-id=0"}).content


@pytest.mark.parametrize("spread", [0, 1])
def test_no_retry_line_when_the_spread_is_off(settings, spread):
    settings.EVENTSTREAM_RECONNECT_SPREAD = spread
    assert b"retry:" not in call("/events/").content


# --- database outages -------------------------------------------------------------------


@dataclass
class Database:
    down: bool = True


@pytest.fixture
def database_down(monkeypatch):
    """Reads of the event storage fail, as with the database server stopped, while ``down``."""
    from django.db import OperationalError

    from grip_eventstream import views

    database = Database()
    get_state = DjangoModelStorage.get_state

    def maybe_fail(self, channels):
        if database.down:
            raise OperationalError("connection refused")
        return get_state(self, channels)

    monkeypatch.setattr(DjangoModelStorage, "get_state", maybe_fail)
    monkeypatch.setattr(views, "_outage_logged", False)
    return database


def test_a_subscribe_during_an_outage_is_a_200_retry_without_hold(database_down, caplog):
    response = call("/events/", **{"Last-Event-ID": "whatever"})
    assert_plain_stream_headers(response)
    assert "Grip-Hold" not in response
    assert "Grip-Channel" not in response
    assert "Grip-Link" not in response
    events, parser = body_events(response)
    # The retry rides on an event no client listens to (htmx 4 ignores a bare retry:),
    # which leaves the client's last event id as it was.
    assert [(e.type, e.json(), e.last_event_id) for e in events] == [
        ("stream-unavailable", {"condition": "database-unavailable"}, "")
    ]
    assert 1000 <= parser.retry <= max(conf.EVENTSTREAM_RECONNECT_SPREAD, 5) * 1000


def test_a_next_link_during_an_outage_is_503_so_pushpin_retries_it(database_down):
    token = links.make_token(links.LinkState(("test",), None, filtered=True))
    response = call(f"/events/_link/{token}/", **{"Grip-Last": "test; last-id=1"})
    assert response.status_code == 503
    assert "Grip-Hold" not in response


def test_an_outage_is_logged_once_and_its_end_once(database_down, caplog):
    with caplog.at_level("WARNING", logger="grip_eventstream"):
        for _ in range(3):
            assert "Grip-Hold" not in call("/events/")
        database_down.down = False
        for _ in range(2):
            assert call("/events/")["Grip-Hold"] == "stream"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == ["ERROR", "WARNING"], messages
    assert "database is unavailable" in messages[0][1]
    assert "OperationalError: connection refused" in messages[0][1]
    assert "reachable again" in messages[1][1]


def test_a_user_lookup_during_an_outage_is_a_retry_too(monkeypatch):
    """The session and the user are read from the database too, before the events."""
    from django.db import OperationalError

    from tests.channelmanagers import TestChannelManager

    def fail(self, request):
        raise OperationalError("connection refused")

    monkeypatch.setattr(TestChannelManager, "get_user", fail)
    response = call("/events/?channel=private-1")
    assert_plain_stream_headers(response)
    assert "Grip-Hold" not in response
    assert body_events(response)[1].retry >= 1000


# --- presence -----------------------------------------------------------------------------

GONE = re.compile(r"<(?P<url>[^>]*)>; rel=gone")
FEATURES_1_41 = "status, session, link:next, link:gone, filter:build-id, filter:skip-users"
FEATURES_1_36 = "status, session, link:next, filter:build-id, filter:skip-users"


def gone_url(response) -> str:
    match = GONE.search(response["Grip-Link"])
    assert match, response["Grip-Link"]
    return match.group("url")


def has_gone_link(response) -> bool:
    return GONE.search(response["Grip-Link"]) is not None


@pytest.mark.django_db(transaction=True)
def test_a_presence_stream_behind_1_41_is_recorded_with_a_gone_link():
    from grip_eventstream import get_presence

    user = User.objects.create(username="ann")
    response = call("/stream/?channel=presence-a", user=user, **{"Grip-Feature": FEATURES_1_41})
    assert response["Grip-Hold"] == "stream"
    assert gone_url(response).startswith("/stream/_gone/")
    # The never-published channel keeps the link timer running (refreshes), stored or not.
    assert f"{grip.LINK_PROOF_CHANNEL}; prev-id=0" in response["Grip-Channel"]
    presence = get_presence("presence-a")
    assert presence.exact
    assert [(m.user_pk, m.streams) for m in presence.members] == [(str(user.pk), 1)]
    assert link_state(response).stream is not None


@pytest.mark.django_db(transaction=True)
def test_a_presence_stream_behind_1_36_has_no_gone_link_and_is_not_exact():
    from grip_eventstream import get_presence

    response = call("/stream/?channel=presence-a", **{"Grip-Feature": FEATURES_1_36})
    assert not has_gone_link(response)
    presence = get_presence("presence-a")
    assert not presence.exact
    assert presence.stale_within > 0
    assert [(m.user_pk, m.streams) for m in presence.members] == [(None, 1)]


@pytest.mark.django_db(transaction=True)
def test_the_gone_notice_ends_the_stream_once(caplog):
    from grip_eventstream import get_presence
    from grip_eventstream.signals import presence_left

    left = []

    def on_left(sender, **kwargs):
        left.append((kwargs["channel"], kwargs["user_pk"]))

    presence_left.connect(on_left)
    try:
        user = User.objects.create(username="bob")
        headers = {"Grip-Feature": FEATURES_1_41}
        first = call("/stream/?channel=presence-a", user=user, **headers)
        second = call("/stream/?channel=presence-a", user=user, **headers)
        assert get_presence("presence-a").members[0].streams == 2
        assert call(gone_url(first), "post").status_code == 200
        assert get_presence("presence-a").members[0].streams == 1
        assert left == []
        assert call(gone_url(first), "post").status_code == 200  # replayed: no change
        assert get_presence("presence-a").members[0].streams == 1
        response = call(gone_url(second), "post")
        assert (response.status_code, response.content) == (200, b"")
        assert get_presence("presence-a").members == []
        assert left == [("presence-a", str(user.pk))]
    finally:
        presence_left.disconnect(on_left)


@pytest.mark.django_db(transaction=True)
def test_gone_notices_only_count_from_the_proxy():
    from grip_eventstream import get_presence

    url = gone_url(call("/stream/?channel=presence-a", **{"Grip-Feature": FEATURES_1_41}))
    assert call(url, "get").status_code == 405
    assert call(url, "post", sig=None).status_code == 400  # straight to Django
    wrong_key = make_sig("wrong-key-0123456789abcdef0123456789")
    assert call(url, "post", sig=wrong_key).status_code == 403
    forged = url.replace("/_gone/", "/_gone/x")
    assert call(forged, "post").status_code == 400
    assert get_presence("presence-a").members[0].streams == 1


@pytest.mark.django_db(transaction=True)
def test_next_links_refresh_a_presence_stream(monkeypatch):
    from grip_eventstream.models import PresenceStream

    response = call("/stream/?channel=presence-a", **{"Grip-Feature": FEATURES_1_41})
    from datetime import UTC, datetime

    before = PresenceStream.objects.get().expires
    later = time.time() + 30
    monkeypatch.setattr("django.utils.timezone.now", lambda: datetime.fromtimestamp(later, UTC))
    again = call(link_of(response).url, **{"Grip-Last": "~~link; last-id=0"})
    assert again["Grip-Hold"] == "stream"
    assert not has_gone_link(again)  # Pushpin takes the gone link from the first response only
    assert link_state(again).stream == link_state(response).stream
    assert PresenceStream.objects.get().expires > before


def test_a_stream_without_presence_channels_records_nothing(django_assert_num_queries):
    from grip_eventstream.models import PresenceStream

    get_current_event_id(["test"])
    with django_assert_num_queries(1):  # the subscribe's one query, as without presence
        response = call("/events/", **{"Grip-Feature": FEATURES_1_41})
    assert not has_gone_link(response)
    assert grip.LINK_PROOF_CHANNEL not in response["Grip-Channel"]
    assert link_state(response).stream is None
    assert not PresenceStream.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_clients_status_check_is_not_a_presence_stream():
    """GripEventSource marks the request it aborts once it knows the status."""
    from grip_eventstream.models import PresenceStream

    response = call("/stream/?channel=presence-a&grip-check=1", **{"Grip-Feature": FEATURES_1_41})
    assert response["Grip-Hold"] == "stream"  # answered as any subscribe
    assert not has_gone_link(response)
    assert not PresenceStream.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_next_link_after_the_gone_notice_does_not_bring_the_stream_back():
    """Pushpin may fetch a link while the client leaves: the notice can come first."""
    from grip_eventstream import get_presence

    response = call("/stream/?channel=presence-a", **{"Grip-Feature": FEATURES_1_41})
    assert call(gone_url(response), "post").status_code == 200
    again = call(link_of(response).url, **{"Grip-Last": "~~link; last-id=0"})
    assert again.status_code == 200
    assert get_presence("presence-a").members == []

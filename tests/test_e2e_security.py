"""Permissions, revocation, Grip-Sig trust and hostile input, through a real Pushpin."""

import base64
import json
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import Group, User

from grip_eventstream import channel_permission_changed, get_current_event_id, send_event
from tests.conftest import SIG_KEY, events, start_stack, wait_events

pytestmark = pytest.mark.e2e


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def login(stack, username, groups=()):
    session = requests.Session()
    res = session.get(
        f"{stack.url}/login/", params={"username": username, "groups": ",".join(groups)}, timeout=10
    )
    res.raise_for_status()
    return {"Cookie": f"sessionid={session.cookies['sessionid']}"}


def test_private_channel_anonymous_denied_logged_in_allowed(stack):
    channel = unique("private")
    with stack.stream(f"/stream/?channel={channel}") as reader:
        assert reader.status == 403
        reader.wait_ended(timeout=5)
        assert "anonymous" in reader.text()
    cookie = login(stack, unique("user"))  # session cookie set and sent through Pushpin
    with stack.stream(f"/stream/?channel={channel}", headers=cookie) as reader:
        assert reader.status == 200
        send_event(channel, "message", {"n": 1})
        [event] = wait_events(reader, 1)
    assert json.loads(event.data) == {"n": 1}


def test_revocation_cuts_only_the_revoked_users_stream(stack):
    group = unique("g")
    channel = f"members-{group}"
    alice, bob = unique("alice"), unique("bob")
    alice_cookie, bob_cookie = login(stack, alice, [group]), login(stack, bob, [group])
    url = f"/stream/?channel={channel}"
    with stack.stream(url, headers=alice_cookie) as a, stack.stream(url, headers=bob_cookie) as b:
        send_event(channel, "message", {"n": 0})
        wait_events(a, 1)
        wait_events(b, 1)
        user = User.objects.get(username=alice)
        user.groups.remove(Group.objects.get(name=group))
        started = time.monotonic()
        channel_permission_changed(user, channel)
        a.wait_ended(timeout=10)
        text = a.text()
        elapsed = time.monotonic() - started
        send_event(channel, "message", {"n": 1})
        assert [json.loads(e.data)["n"] for e in wait_events(b, 2)] == [0, 1]
    [error] = [e for e in events(text, skip=()) if e.type == "stream-error"]
    assert json.loads(error.data)["condition"] == "forbidden"
    assert json.loads(error.data)["channels"] == [channel]
    assert '"n": 1' not in text
    print(f"revocation closed the stream after {elapsed:.2f} s")
    with stack.stream(url, headers=alice_cookie) as again:  # the browser's reconnect
        assert again.status == 403


def test_permission_kept_leaves_streams_untouched(stack):
    group = unique("g")
    channel = f"members-{group}"
    name = unique("carol")
    cookie = login(stack, name, [group])
    with stack.stream(f"/stream/?channel={channel}", headers=cookie) as reader:
        channel_permission_changed(User.objects.get(username=name), channel)  # still allowed
        send_event(channel, "message", {"n": 0})
        wait_events(reader, 1)
        assert not reader.ended


def forged(key, algorithm="HS256", **claims):
    claims = {"iss": "pushpin", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda: forged("another-key-that-is-long-enough-0123456789"), id="wrong-key"),
        pytest.param(lambda: forged(SIG_KEY, exp=int(time.time()) - 10), id="expired"),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
    ],
)
def test_direct_request_with_forged_hs256_signature_gets_no_hold(stack, signature):
    res = requests.get(
        f"{stack.gunicorn.url}/events/", headers={"Grip-Sig": signature()}, timeout=5
    )
    assert res.status_code == 403
    assert not any(h.lower().startswith("grip-") for h in res.headers)
    assert "id:" not in res.text


def _es256_pair(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "es256.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, private, public


def test_es256_signing_proxy_like_fanout(test_db_name, settings, transactional_db, tmp_path):
    # A Pushpin that signs with ES256 as Fastly Fanout does; the app knows its public key.
    key, private_path, public_pem = _es256_pair(tmp_path)
    verify_key = "base64:" + base64.b64encode(public_pem).decode()

    def grip_url(pushpin):
        return f"{pushpin.control_url}?verify-iss=fanout-test&verify-key={verify_key}"

    stack = start_stack(
        tmp_path / "stack",
        test_db_name,
        grip_url=grip_url,
        sig_key=f"file:{private_path}",
        sig_iss="fanout-test",
    )
    try:
        settings.GRIP_URL = grip_url(stack.pushpin)
        with stack.stream("/stream/?channel=volatile-es") as reader:
            assert reader.status == 200
            send_event("volatile-es", "message", {"n": 1})
            wait_events(reader, 1)
        (tmp_path / "other").mkdir()
        other, _, _ = _es256_pair(tmp_path / "other")
        for signature in (
            forged(other, "ES256", iss="fanout-test"),  # right issuer, wrong key
            forged(key, "ES256", iss="someone-else"),  # right key, wrong issuer
            forged(key, "ES256", iss="fanout-test", exp=int(time.time()) - 5),  # expired
        ):
            res = requests.get(
                f"{stack.gunicorn.url}/events/", headers={"Grip-Sig": signature}, timeout=5
            )
            assert res.status_code == 403, res.text
            assert "Grip-Hold" not in res.headers
        good = forged(key, "ES256", iss="fanout-test")
        res = requests.get(f"{stack.gunicorn.url}/events/", headers={"Grip-Sig": good}, timeout=5)
        assert res.headers.get("Grip-Hold") == "stream", (res.status_code, res.text)
    finally:
        stack.stop()


# Over MAX_CURSOR_LENGTH; Pushpin 1.36 drops request lines over ~4 KB before Django sees them.
HOSTILE_CURSORS = ["", "\u00e9\u00e8", "a" * 3000, "x.y.z", "%00", "1\r\n", "k3x9a2q.mf6ua3--1"]


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS)
def test_hostile_last_event_id_query_never_500s(stack, cursor):
    res = requests.get(
        f"{stack.url}/events/", params={"lastEventId": cursor}, stream=True, timeout=5
    )
    with res:
        assert res.status_code == 200
        first = next(res.iter_content(None))
    assert b"\r" not in first.replace(b"\r\n", b"")  # no field injection into the stream


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("channel=", 400),
        ("channel=" + "c" * 200, 400),
        ("channel=a%01b", 400),
        ("channel=a%0d%0aevent:%20x", 400),
        ("channel=" + "&channel=".join(f"c{i}" for i in range(11)), 400),
        ("channel=a,b;c%22d", 200),
        ("channel=room%201", 200),
        ("channel=%E2%9C%93", 200),
    ],
)
def test_hostile_channel_names_never_500(stack, query, status):
    res = requests.get(f"{stack.url}/stream/?{query}", stream=True, timeout=5)
    with res:
        assert res.status_code == status, res.text if status != 200 else ""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused(stack, method):
    res = requests.request(method, f"{stack.url}/events/", timeout=5)
    assert res.status_code == 405
    assert res.headers["Allow"] == "GET, OPTIONS"


def test_lone_cr_in_data_cannot_inject_fields(stack):
    with stack.stream("/stream/?channel=volatile-cr") as reader:
        send_event("volatile-cr", "message", "a\rid: evil\revent: evil\r\rb", json_encode=False)
        [event] = wait_events(reader, 1)
    assert event.type == "message"
    assert event.data == "a\nid: evil\nevent: evil\n\nb"
    assert event.last_event_id == ""


def test_event_type_with_newline_is_rejected_before_anything_is_stored(stack):
    from grip_eventstream.models import Event

    with pytest.raises(ValueError, match="event"):
        send_event("test", "message\nid: 1", {"x": 1})
    assert not Event.objects.filter(channel="test").exists()


# --- links copied from the access log ---------------------------------------------------


def logged_links(stack, marker: str) -> list[str]:
    """Link paths (next links and pages) that gunicorn's access log shows for ``marker``."""
    import re
    from urllib.parse import unquote

    text = stack.gunicorn.log_path.read_text(errors="replace")
    paths = re.findall(r'"GET (/\S*/_link/\S+/) HTTP', text)
    return [p for p in paths if marker in unquote(p)]


@pytest.mark.parametrize(
    ("channel_prefix", "logged_in"),
    [("volatile-private", True), ("volatile", False), ("private", True), ("public", False)],
    ids=["unstored-logged-in", "unstored-anonymous", "stored-logged-in", "stored-anonymous"],
)
def test_a_next_link_from_the_access_log_gives_nothing(stack, channel_prefix, logged_in):
    """Pushpin fetches every stream's next link about 1 s after the subscribe (its check for
    publishes that raced the subscription), so its URL is in the access log at once."""
    channel = unique(channel_prefix)
    headers = login(stack, unique("owner")) if logged_in else {}
    with stack.stream(f"/rooms/{channel}/events/", headers=headers) as owner:
        assert owner.status == 200
        deadline = time.monotonic() + 10
        while not (copied := logged_links(stack, f"/rooms/{channel}/")):
            assert time.monotonic() < deadline, "Pushpin fetched no next link"
            time.sleep(0.1)
        # Through Pushpin, as a client would: it signs the request, but strips Grip-Last.
        with stack.stream(copied[0]) as thief:
            assert thief.status == 403
            thief.wait_ended(timeout=5)
            assert thief.text().startswith("This link is fetched once")
        send_event(channel, "message", {"n": 1})
        [event] = wait_events(owner, 1)  # the owner's stream is untouched
    assert json.loads(event.data) == {"n": 1}


@pytest.mark.stack_env(GES_REPLAY_LIMIT="10")
def test_page_links_from_the_access_log_give_nothing(private_stack):
    stack = private_stack
    channel = unique("private")
    headers = login(stack, unique("owner"))
    cursor = get_current_event_id([channel])
    for n in range(35):
        send_event(channel, "message", {"n": n})
    resume = {**headers, "Last-Event-ID": cursor}
    with stack.stream(f"/rooms/{channel}/events/", headers=resume) as owner:
        received = wait_events(owner, 35)
    assert [json.loads(e.data)["n"] for e in received] == list(range(35))
    # 35 events at 10 a page: three link requests after the subscribe. gunicorn writes an
    # access-log line once its response is sent, so the last one may still be on its way.
    deadline = time.monotonic() + 10
    while len(pages := logged_links(stack, f"/rooms/{channel}/")) < 3:
        assert time.monotonic() < deadline, pages
        time.sleep(0.1)
    for page in pages:
        with stack.stream(page) as thief:
            assert thief.status == 403, page
            thief.wait_ended(timeout=5)
            assert thief.text().startswith("This link is fetched once")

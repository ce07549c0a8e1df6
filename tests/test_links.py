"""grip_eventstream.links: next-link tokens (signed, short-lived, strictly checked)."""

from __future__ import annotations

import time

import pytest
from django.core import signing

from grip_eventstream import links
from grip_eventstream.links import InvalidLink, LinkState, make_token, read_token


def read(token: str, max_age: int = 180) -> LinkState:
    return read_token(token, max_age=max_age, max_channels=10)


@pytest.mark.parametrize(
    "state",
    [
        LinkState(("a",), None),
        LinkState(("a", "b c", "ü%"), "42", resume="abcdefg.aaaaaa-1", filtered=True, nonce="n-1_"),
        LinkState(("a",), "0f8fad5b-d9cb-469f-a165-70867728950e"),
    ],
)
def test_round_trip(state):
    assert read(make_token(state)) == state


def test_tokens_expire(monkeypatch):
    token = make_token(LinkState(("a",), "1"))
    later = time.time() + 181
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    with pytest.raises(InvalidLink, match="expired"):
        read(token, max_age=180)


def test_another_secret_key_is_refused(settings):
    token = make_token(LinkState(("a",), None))
    settings.SECRET_KEY = "another-secret-key-for-this-test-0123456789"
    with pytest.raises(InvalidLink, match="bad signature"):
        read(token)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"c": [], "u": None}, "channel list"),
        ({"c": ["a"] * 11, "u": None}, "channel list"),
        ({"c": "a", "u": None}, "channel list"),
        ({"c": [""], "u": None}, "invalid channel"),
        ({"c": [5], "u": None}, "invalid channel"),
        ({"c": ["a"], "u": 5}, "user id"),
        ({"c": ["a"], "u": ["1"]}, "user id"),
        ({"c": ["a"], "u": None, "r": 5}, "resume"),
        ({"c": ["a"], "u": None, "f": True}, "filter flag"),
        ({"c": ["a"], "u": None, "f": 2}, "filter flag"),
        ({"c": ["a"]}, "unexpected payload"),
        ({"c": ["a"], "u": None, "x": 1}, "unexpected payload"),
        (["a"], "unexpected payload"),
        ("a", "unexpected payload"),
    ],
)
def test_signed_but_malformed_payloads(payload, reason):
    token = signing.dumps(payload, salt=links.SALT, compress=True)
    with pytest.raises(InvalidLink, match=reason):
        read(token)


@pytest.mark.parametrize("token", ["", "x", "a:b:c", "eJx:1:2", "." * 50])
def test_garbage_tokens(token):
    with pytest.raises(InvalidLink):
        read(token)


def test_link_url_and_base_path():
    state = LinkState(("a,b",), None)
    url = links.link_url("/rooms/a,b/events/", state)
    assert url.startswith("/rooms/a%2Cb/events/_link/")
    token = url.removeprefix("/rooms/a%2Cb/events/_link/").removesuffix("/")
    assert read(token) == state
    # Django decodes the path again: the base path is found from the decoded form.
    assert links.base_path(f"/rooms/a,b/events/_link/{token}/", token) == "/rooms/a,b/events/"


def test_a_token_made_twice_in_a_second_is_reused(monkeypatch):
    state = LinkState(("a",), "1")
    monkeypatch.setattr("django.core.signing.time.time", lambda: 1_000_000.2)
    first = make_token(state)
    monkeypatch.setattr("django.core.signing.time.time", lambda: 1_000_000.9)
    assert make_token(state) is first
    monkeypatch.setattr("django.core.signing.time.time", lambda: 1_000_001.0)
    later = make_token(state)
    assert later != first
    assert read(later, max_age=10**9) == state


def test_a_new_secret_key_signs_anew(settings):
    state = LinkState(("a",), None)
    first = make_token(state)
    settings.SECRET_KEY = "another-secret-key-for-this-test-0123456789"
    assert read(make_token(state)) == state
    assert make_token(state) != first

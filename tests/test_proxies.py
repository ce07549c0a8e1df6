"""grip_eventstream.proxies: GRIP_URL / GRIP_PROXIES, control-port auth, Grip-Sig checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from grip_eventstream.proxies import (
    CONTROL_CLAIM,
    DEFAULT_SIG_ISSUER,
    InvalidSignature,
    ProxyConfig,
    ProxyConfigError,
    control_auth_header,
    is_public_key,
    parse_proxies,
    verification_keys,
    verify_grip_sig,
)

KEY = "grip-eventstream-test-key-0123456789abcdef"


# --- parse_proxies ----------------------------------------------------------------------


def test_parse_proxies_none():
    assert parse_proxies(None, None) == []
    assert parse_proxies("", []) == []


def test_parse_proxies_plain_url_trailing_slash():
    assert parse_proxies("http://localhost:5561/", None) == [ProxyConfig("http://localhost:5561")]


def test_parse_proxies_url_with_everything():
    (proxy,) = parse_proxies(
        "https://api.example.com/svc/?iss=me&key=secret&verify-iss=fastly:svc&verify-key=pub",
        None,
    )
    assert proxy == ProxyConfig(
        control_uri="https://api.example.com/svc",
        control_iss="me",
        key="secret",
        verify_iss="fastly:svc",
        verify_key="pub",
    )


def test_parse_proxies_base64_key():
    raw = b"\x00\x01binary-key-0123456789abcdef0123"
    (proxy,) = parse_proxies(
        "http://localhost:5561?iss=pushpin&key=base64:" + base64.b64encode(raw).decode(), None
    )
    assert proxy.key == raw
    assert proxy.signature_key == raw


def test_parse_proxies_grip_proxies_win_over_url():
    proxies = parse_proxies(
        "http://ignored:1",
        [
            {"control_uri": "http://a:5561/", "control_iss": "pushpin", "key": KEY},
            {"control_uri": "http://b:5561", "verify_iss": "x", "verify_key": "vk"},
        ],
    )
    assert proxies == [
        ProxyConfig("http://a:5561", "pushpin", KEY),
        ProxyConfig("http://b:5561", verify_iss="x", verify_key="vk"),
    ]


@pytest.mark.parametrize(
    "entries", [[{}], [{"control_uri": ""}], [{"key": "k"}], ["http://a:5561"], [None]]
)
def test_parse_proxies_bad_entries(entries):
    with pytest.raises(ProxyConfigError, match="'control_uri'"):
        parse_proxies(None, entries)


# --- ProxyConfig.signature_key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        (ProxyConfig("u"), None),
        (ProxyConfig("u", "pushpin", "k"), "k"),  # Pushpin: sig_key is the publish key
        (ProxyConfig("u", key="k"), "k"),
        (ProxyConfig("u", key="token", verify_iss="fastly:s"), None),  # Fanout API token
        (ProxyConfig("u", key="token", verify_iss="fastly:s", verify_key="pub"), "pub"),
        (ProxyConfig("u", key="k", verify_key="vk"), "vk"),
        (ProxyConfig("u", verify_key=b"vk"), b"vk"),
    ],
)
def test_signature_key(proxy, expected):
    assert proxy.signature_key == expected


def test_publish_url_keeps_the_query():
    assert ProxyConfig("http://a:5561/x?y=1").publish_url == "http://a:5561/x/publish/?y=1"
    assert ProxyConfig("http://a:5561").publish_url == "http://a:5561/publish/"


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        (ProxyConfig("u", "pushpin", "k"), DEFAULT_SIG_ISSUER),
        (ProxyConfig("u", "someone-else", "k"), DEFAULT_SIG_ISSUER),  # control iss != sig_iss
        (ProxyConfig("u", key="t", verify_iss="fastly:S", verify_key="pub"), "fastly:S"),
    ],
)
def test_signature_issuer(proxy, expected):
    assert proxy.signature_issuer == expected


def test_verification_keys_skip_proxies_without_a_key():
    proxies = [ProxyConfig("a", "pushpin", "k"), ProxyConfig("b"), ProxyConfig("c", verify_key="v")]
    assert verification_keys(proxies) == [("k", "pushpin"), ("v", "pushpin")]


@pytest.mark.parametrize(
    ("key", "expected"),
    [("-----BEGIN PUBLIC KEY-----\n...", True), (b"  -----BEGIN EC", True), ("secret", False)],
)
def test_is_public_key(key, expected):
    assert is_public_key(key) is expected


# --- control_auth_header ----------------------------------------------------------------


def test_control_auth_none_without_key():
    assert control_auth_header(ProxyConfig("u", "pushpin")) is None


def test_control_auth_bearer_for_a_key_alone():
    assert control_auth_header(ProxyConfig("u", key=b"tok")) == "Bearer tok"


def test_control_auth_jwt_is_marked_and_expires():
    header = control_auth_header(ProxyConfig("u", "pushpin", KEY), now=1_000_000)
    assert header is not None
    claims = jwt.decode(
        header.removeprefix("Bearer "), KEY, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims == {"iss": "pushpin", "exp": 1_003_600, CONTROL_CLAIM: "publish"}


# --- verify_grip_sig --------------------------------------------------------------------

KEYS = [(KEY, "pushpin")]


def sig(claims: dict[str, object], key: str = KEY, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, alg)


def valid_claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {"iss": "pushpin", "exp": int(time.time()) + 3600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_valid_signature_passes():
    verify_grip_sig(sig(valid_claims()), KEYS)


def test_any_of_several_proxies_may_sign():
    verify_grip_sig(sig(valid_claims(iss="edge")), [("other-key" * 4, "pushpin"), (KEY, "edge")])


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (sig(valid_claims(iss="intruder")), "InvalidIssuerError"),
        (sig(valid_claims(iss=None)), "MissingRequiredClaimError"),
        (sig(valid_claims(exp=None)), "MissingRequiredClaimError"),
        (sig(valid_claims(exp="tomorrow")), "DecodeError"),
        (sig(valid_claims(exp=[1])), "DecodeError"),
        # PyJWT converts these with int() and lets them pass; they are refused here.
        (sig(valid_claims(exp="9999999999")), "exp claim must be an integer, got str"),
        (sig(valid_claims(exp=9999999999.5)), "exp claim must be an integer, got float"),
        (sig(valid_claims(exp=True)), "ExpiredSignatureError"),
        (sig(valid_claims(iat="1")), "iat claim must be an integer, got str"),
        (sig(valid_claims(iat=1.5)), "iat claim must be an integer, got float"),
        (sig(valid_claims(iat=[1])), "InvalidIssuedAtError"),
        (sig(valid_claims(nbf="1")), "nbf claim must be an integer, got str"),
        (sig(valid_claims(nbf=False)), "nbf claim must be an integer, got bool"),
        (sig(valid_claims(nbf={"a": 1})), "DecodeError"),
        (sig(valid_claims(exp=int(time.time()) - 60)), "ExpiredSignatureError"),
        (sig(valid_claims(), key="another-key-that-is-long-enough-000"), "InvalidSignatureError"),
        (jwt.encode(valid_claims(), "", "none"), "InvalidAlgorithmError"),
        ("not.a.jwt", "DecodeError"),
        ("", "DecodeError"),
        (sig(valid_claims(**{CONTROL_CLAIM: "publish"})), "control-port publish token"),
    ],
)
def test_invalid_signatures_are_refused_with_a_reason(token, reason):
    with pytest.raises(InvalidSignature) as info:
        verify_grip_sig(token, KEYS)
    assert reason in info.value.reason


def test_the_control_token_is_never_a_grip_sig():
    proxy = ProxyConfig("u", "pushpin", KEY)
    header = control_auth_header(proxy)
    assert header is not None
    with pytest.raises(InvalidSignature, match="control-port"):
        verify_grip_sig(header.removeprefix("Bearer "), verification_keys([proxy]))


def test_no_keys_refuses():
    with pytest.raises(InvalidSignature, match="no verification key"):
        verify_grip_sig(sig(valid_claims()), [])


def test_public_keys_accept_es256_only_from_their_key():
    crypto = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    from cryptography.hazmat.primitives import serialization

    private = crypto.generate_private_key(crypto.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys = [(public_pem, "fastly:S")]
    verify_grip_sig(jwt.encode(valid_claims(iss="fastly:S"), private, "ES256"), keys)

    # An HS256 token "signed" with the public key's text must not pass (algorithm confusion).
    # PyJWT will not even encode that, so it is built by hand.
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = (
        b64(b'{"alg":"HS256","typ":"JWT"}')
        + b"."
        + b64(json.dumps(valid_claims(iss="fastly:S")).encode())
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    with pytest.raises(InvalidSignature, match="InvalidAlgorithmError"):
        verify_grip_sig((signing_input + b"." + b64(mac)).decode(), keys)


# --- SignatureVerifier ------------------------------------------------------------------


def test_verifier_remembers_tokens_that_passed_until_they_expire(monkeypatch):
    from grip_eventstream import proxies
    from grip_eventstream.proxies import SignatureVerifier

    calls = []
    real = proxies.verify_grip_sig

    def counting(token, keys):
        calls.append(token)
        return real(token, keys)

    monkeypatch.setattr(proxies, "verify_grip_sig", counting)
    verifier = SignatureVerifier(KEYS)
    token = sig(valid_claims(exp=int(time.time()) + 100))
    verifier.verify(token)
    verifier.verify(token)
    assert calls == [token]
    # After its exp the token is verified again (PyJWT then refuses it on its own clock).
    verifier.verify(token, now=time.time() + 200)
    assert calls == [token, token]


def test_verifier_never_remembers_a_refusal():
    from grip_eventstream.proxies import SignatureVerifier

    verifier = SignatureVerifier(KEYS)
    bad = sig(valid_claims(iss="intruder"))
    for _ in range(2):
        with pytest.raises(InvalidSignature):
            verifier.verify(bad)


def test_verifier_memory_is_bounded():
    from grip_eventstream.proxies import SignatureVerifier

    verifier = SignatureVerifier(KEYS, size=3)
    for n in range(10):
        verifier.verify(sig(valid_claims(exp=int(time.time()) + 100 + n)))
    assert len(verifier._passed) <= 3


# A numeric string exp passed PyJWT, was remembered as a str, and its next use compared it
# with the clock: TypeError, a 500 from the view.
WRONGLY_TYPED = [
    valid_claims(exp=str(int(time.time()) + 3600)),
    valid_claims(exp=float(int(time.time()) + 3600)),
    valid_claims(iat=str(int(time.time()) - 10)),
    valid_claims(nbf=str(int(time.time()) - 10)),
    valid_claims(exp=True),
]


@pytest.mark.parametrize(
    "claims", WRONGLY_TYPED, ids=["str-exp", "float-exp", "str-iat", "str-nbf", "bool-exp"]
)
def test_verifier_refuses_wrongly_typed_time_claims_on_every_use(claims):
    from grip_eventstream.proxies import SignatureVerifier

    verifier = SignatureVerifier(KEYS)
    token = sig(claims)
    for _ in range(3):
        with pytest.raises(InvalidSignature):
            verifier.verify(token)
    assert verifier._passed == {}


def test_a_string_exp_is_a_403_from_the_view_on_first_use_and_reuse(db, settings):
    from tests.test_views import call

    settings.GRIP_URL = f"http://127.0.0.1:5561?iss=pushpin&key={KEY}"
    token = sig(valid_claims(exp="9999999999"))
    assert [call("/events/", sig=token).status_code for _ in range(3)] == [403, 403, 403]
    # The same request with an integer exp streams.
    assert call("/events/", sig=sig(valid_claims(exp=9999999999))).status_code == 200


ABSENT = object()
NOW = int(time.time())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children)
    ),
    max_leaves=4,
)


def time_like(low: int, high: int) -> st.SearchStrategy[object]:
    """A time claim between low and high in every JSON shape PyJWT's int() accepts, and junk."""
    number = st.integers(low, high)
    return st.one_of(
        number,
        number.map(float),
        number.map(str),
        number.map(lambda n: f" {n} "),
        st.floats(low, high),
        st.booleans(),
        json_values,
    )


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    exp=time_like(NOW + 600, NOW + 10**8),
    iat=time_like(0, NOW - 600) | st.just(ABSENT),
    nbf=time_like(0, NOW - 600) | st.just(ABSENT),
)
def test_any_time_claims_are_accepted_or_refused_never_an_error(exp, iat, nbf):
    from grip_eventstream.proxies import SignatureVerifier

    claims = {"iss": "pushpin", "exp": exp}
    claims.update({name: v for name, v in (("iat", iat), ("nbf", nbf)) if v is not ABSENT})
    token = sig(claims)  # json.dumps writes NaN and Infinity, which PyJWT reads back
    verifier = SignatureVerifier(KEYS)
    for _ in range(2):  # the second use reads the verifier's memory
        try:
            verifier.verify(token)
        except InvalidSignature:
            continue
        assert type(exp) is int
        assert all(type(v) is int for v in (iat, nbf) if v is not ABSENT)

"""GRIP proxies: what ``GRIP_URL`` / ``GRIP_PROXIES`` describe, how publishes to them are
authenticated, and how their ``Grip-Sig`` is verified. Pure: no Django import.

A proxy signs every request it forwards with a ``Grip-Sig`` JWT: Pushpin with HS256 and its
``sig_key`` (issuer ``sig_iss``, ``"pushpin"`` unless configured otherwise), Fastly Fanout
with ES256 (issuer ``fastly:<service id>``). The same key may also sign the JWT that
authenticates publishes to the control port (``GRIP_URL``'s ``iss`` + ``key``); such a
token is marked with a private claim so that it can never pass as a ``Grip-Sig``.

PyJWT is called directly rather than through ``gripcontrol.validate_sig``, which raises
``TypeError`` on a non-numeric ``exp``, accepts HS256, RS256 and ES256 for any key, and has
no way to refuse the control token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from gripcontrol import parse_grip_uri

# Pushpin's default sig_iss: the issuer a Pushpin Grip-Sig carries unless verify-iss says.
DEFAULT_SIG_ISSUER = "pushpin"
# Present in every control-port JWT this library signs, never in a proxy's Grip-Sig.
CONTROL_CLAIM = "grip-eventstream-use"
CONTROL_TOKEN_LIFETIME = 3600
_PUBLIC_KEY_ALGORITHMS = ["ES256", "RS256"]


class ProxyConfigError(ValueError):
    """GRIP_URL / GRIP_PROXIES cannot be understood (reported by system check E002).

    ``problems`` lists each (message, hint); the message of the exception joins them.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__(" ".join(message for message, _ in problems))
        self.problems = list(problems)


class InvalidSignature(Exception):
    """A ``Grip-Sig`` did not verify; ``reason`` says why, for the server log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProxyConfig:
    """One GRIP proxy, as described by ``GRIP_URL`` or an entry of ``GRIP_PROXIES``."""

    control_uri: str
    control_iss: str | None = None
    key: str | bytes | None = None
    verify_iss: str | None = None
    verify_key: str | bytes | None = None

    @property
    def publish_url(self) -> str:
        """``control_uri`` + ``/publish/``, keeping any query string after the path."""
        parts = urlsplit(self.control_uri)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/publish/"))

    @property
    def signature_key(self) -> str | bytes | None:
        """The key that verifies this proxy's ``Grip-Sig`` (Pushpin: the shared sig_key)."""
        if self.verify_key is not None:
            return self.verify_key
        # Pushpin signs with its sig_key, which GRIP_URL carries as ``key``. With
        # ``verify-iss`` (Fastly Fanout) ``key`` is an API token instead, not a signing key.
        if self.verify_iss is None:
            return self.key
        return None

    @property
    def signature_issuer(self) -> str:
        """The ``iss`` every Grip-Sig of this proxy must carry."""
        return self.verify_iss if self.verify_iss is not None else DEFAULT_SIG_ISSUER


def parse_proxies(grip_url: object, grip_proxies: object) -> list[ProxyConfig]:
    """Turn GRIP_URL / GRIP_PROXIES into proxy configs (GRIP_PROXIES wins when both are set).

    The one validation of both settings: raises ProxyConfigError listing every problem
    (system check E002 reports them; at run time they are an ImproperlyConfigured).
    """
    entries: list[Any]
    if grip_proxies:
        if not isinstance(grip_proxies, Sequence) or isinstance(grip_proxies, str):
            raise ProxyConfigError([_bad_proxies(grip_proxies)])
        entries = list(grip_proxies)
        if not all(isinstance(e, Mapping) and e.get("control_uri") is not None for e in entries):
            raise ProxyConfigError([_bad_proxies(grip_proxies)])
    elif grip_url:
        if not isinstance(grip_url, str):
            raise ProxyConfigError([_not_a_url(grip_url)])
        entries = [parse_grip_uri(grip_url)] if _url_problem(grip_url) is None else [grip_url]
    else:
        return []
    problems = []
    proxies = []
    for entry in entries:
        uri = entry if isinstance(entry, str) else entry["control_uri"]
        problem = _url_problem(uri)
        if problem is not None:
            problems.append(problem)
            continue
        proxies.append(
            ProxyConfig(
                control_uri=str(uri).rstrip("/"),
                control_iss=entry.get("control_iss"),
                key=entry.get("key"),
                verify_iss=entry.get("verify_iss"),
                verify_key=entry.get("verify_key"),
            )
        )
    if problems:
        raise ProxyConfigError(problems)
    return proxies


def _url_problem(uri: object) -> tuple[str, str] | None:
    if uri == "":
        return (
            "A GRIP_PROXIES entry has an empty 'control_uri': every entry needs the control "
            "URI of its proxy.",
            "Give the control port's URL, e.g. http://localhost:5561.",
        )
    parsed = urlsplit(uri) if isinstance(uri, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        return _not_a_url(uri)
    if parsed.path.rstrip("/").endswith("/publish"):
        return (
            f"GRIP proxy control URI {uri!r} ends with /publish/: publishes would go to "
            ".../publish/publish/.",
            "Give the control port's base URL, e.g. http://localhost:5561; /publish/ is "
            "added to it.",
        )
    return None


def _not_a_url(uri: object) -> tuple[str, str]:
    return (
        f"GRIP proxy control URI {uri!r} is not an http(s) URL.",
        "Give the control port's URL, e.g. http://localhost:5561.",
    )


def _bad_proxies(value: object) -> tuple[str, str]:
    return (
        f"GRIP_PROXIES must be a list of dicts with a 'control_uri'; got {value!r}.",
        "GRIP_PROXIES = [{'control_uri': 'http://localhost:5561'}]",
    )


def is_public_key(key: str | bytes) -> bool:
    """A PEM key (ES256 / RS256, as Fanout uses) rather than an HS256 shared secret."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return raw.lstrip().startswith(b"-----BEGIN")


def control_auth_header(proxy: ProxyConfig, now: float | None = None) -> str | None:
    """The ``Authorization`` header of publishes to ``proxy``, or None.

    pubcontrol's rule: a key with an issuer signs a JWT, a key alone is a Bearer token
    (Fastly's API token). The JWT carries :data:`CONTROL_CLAIM`, so it is refused as a
    Grip-Sig even where the control issuer and key equal the proxy's sig_iss and sig_key.
    """
    if proxy.key is None:
        return None
    if proxy.control_iss is None:
        token = proxy.key if isinstance(proxy.key, str) else proxy.key.decode()
        return f"Bearer {token}"
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": proxy.control_iss,
        "exp": issued + CONTROL_TOKEN_LIFETIME,
        CONTROL_CLAIM: "publish",
    }
    return "Bearer " + jwt.encode(claims, proxy.key, algorithm="HS256")


def verification_keys(proxies: Sequence[ProxyConfig]) -> list[tuple[str | bytes, str]]:
    """``(key, issuer)`` of every proxy whose Grip-Sig can be verified."""
    return [
        (proxy.signature_key, proxy.signature_issuer)
        for proxy in proxies
        if proxy.signature_key is not None
    ]


def verify_grip_sig(token: str, keys: Sequence[tuple[str | bytes, str]]) -> dict[str, Any]:
    """The claims if ``token`` is a Grip-Sig of one of the proxies; InvalidSignature if not.

    A valid Grip-Sig is a JWT signed with the proxy's key (HS256 for a shared secret,
    ES256 / RS256 for a public key), with an integer ``exp`` in the future (``iat`` and
    ``nbf``, when present, integers too, not in the future) and ``iss`` equal to the
    proxy's issuer, and without this library's control-token claim. Whatever the token
    holds, the only exception raised is InvalidSignature.
    """
    reasons = []
    for key, issuer in keys:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=_PUBLIC_KEY_ALGORITHMS if is_public_key(key) else ["HS256"],
                issuer=issuer,
                options={"require": ["exp", "iss"]},
            )
        # PyJWTError covers signatures, claims and malformed tokens; ValueError and
        # TypeError what key loading raises for hostile headers ("alg", "kid"...).
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            reasons.append(f"{type(exc).__name__}: {exc}")
            continue
        if CONTROL_CLAIM in claims:
            reasons.append("a control-port publish token is not a Grip-Sig")
            continue
        wrong = _wrongly_typed_time_claim(claims)
        if wrong is not None:
            reasons.append(wrong)
            continue
        return claims
    raise InvalidSignature("; ".join(reasons) or "no verification key is configured")


# The JWT time claims (RFC 7519 "NumericDate") this module reads or PyJWT checks.
_TIME_CLAIMS = ("exp", "iat", "nbf")


def _wrongly_typed_time_claim(claims: Mapping[str, Any]) -> str | None:
    """Why a time claim of verified ``claims`` is refused, or None when all are integers.

    PyJWT converts these claims with ``int()`` before comparing, so it accepts a string
    ``"9999999999"``, ``true`` or a float; such a token would then be remembered with an
    ``exp`` that cannot be compared with the clock (a 500 on its next use). Pushpin and
    Fanout sign integers, so anything else is refused.
    """
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int):
            return f"the {name} claim must be an integer, got {type(value).__name__}"
    return None


class SignatureVerifier:
    """:func:`verify_grip_sig` that remembers the tokens that passed, until they expire.

    Pushpin signs every request forwarded in the same second with the same token, so in a
    burst of subscribes (a reconnect storm) each token is verified once, not once per
    request. Only tokens that fully verified are remembered, with their ``exp``, which is
    checked again on every use; the memory is bounded and belongs to one set of keys.
    """

    def __init__(self, keys: Sequence[tuple[str | bytes, str]], size: int = 256) -> None:
        self.keys = list(keys)
        self.size = size
        self._passed: dict[str, float] = {}

    def verify(self, token: str, now: float | None = None) -> None:
        """Return if ``token`` is a valid Grip-Sig; raise InvalidSignature if not."""
        now = time.time() if now is None else now
        expires = self._passed.get(token)
        if expires is not None and now < expires:
            return
        claims = verify_grip_sig(token, self.keys)
        if len(self._passed) >= self.size:
            self._passed.clear()
        # An int: verify_grip_sig refuses any other type of exp.
        self._passed[token] = claims["exp"]

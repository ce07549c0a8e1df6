"""Publishing items to every configured GRIP proxy (Pushpin's control port, Fanout).

Built on pubcontrol's ``PubControlClient`` (URI handling and JWT / Bearer auth), with two
of its behaviours replaced:

* its HTTP call has no timeout, so a proxy that accepts the connection and never answers
  would block ``send_event`` forever: every request here is bounded by
  ``EVENTSTREAM_PUBLISH_TIMEOUT``, and its retry adapter (which would double that bound) is
  dropped;
* its default publish is asynchronous on a daemon thread that drops errors: here a publish
  is synchronous, every proxy is tried, and failures are raised together as one
  :class:`~grip_eventstream.exceptions.PublishError`.

``gripcontrol.GripPubControl`` is not used because it stops at the first failing client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from django.core.exceptions import ImproperlyConfigured
from gripcontrol import parse_grip_uri
from pubcontrol import PubControlClient

from .exceptions import PublishError

logger = logging.getLogger("grip_eventstream")


@dataclass(frozen=True)
class ProxyConfig:
    """One GRIP proxy, as described by ``GRIP_URL`` or an entry of ``GRIP_PROXIES``."""

    control_uri: str
    control_iss: str | None = None
    key: str | bytes | None = None
    verify_iss: str | None = None
    verify_key: str | bytes | None = None

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


def parse_proxies(
    grip_url: str | None, grip_proxies: Sequence[Mapping[str, Any]] | None
) -> list[ProxyConfig]:
    """Turn GRIP_URL / GRIP_PROXIES into proxy configs (GRIP_PROXIES wins when both are set)."""
    entries: list[Mapping[str, Any]]
    if grip_proxies:
        entries = list(grip_proxies)
    elif grip_url:
        entries = [parse_grip_uri(grip_url)]
    else:
        return []
    proxies = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("control_uri"):
            raise ImproperlyConfigured(
                f"every GRIP_PROXIES entry needs a 'control_uri', e.g. "
                f"{{'control_uri': 'http://localhost:5561'}}; got {entry!r}"
            )
        proxies.append(
            ProxyConfig(
                control_uri=str(entry["control_uri"]).rstrip("/"),
                control_iss=entry.get("control_iss"),
                key=entry.get("key"),
                verify_iss=entry.get("verify_iss"),
                verify_key=entry.get("verify_key"),
            )
        )
    return proxies


class _BoundedClient(PubControlClient):  # type: ignore[misc]
    def __init__(self, proxy: ProxyConfig, timeout: float) -> None:
        claim, jwt_key, bearer = None, None, None
        if proxy.key is not None:
            # Same rule as pubcontrol's apply_config: a key with an issuer signs a JWT,
            # a key alone is a Bearer token (Fastly's API token).
            if proxy.control_iss is not None:
                claim, jwt_key = {"iss": proxy.control_iss}, proxy.key
            else:
                bearer = proxy.key if isinstance(proxy.key, str) else proxy.key.decode()
        super().__init__(proxy.control_uri, claim, jwt_key, auth_bearer=bearer)
        self.timeout = timeout
        self.requests_session = requests.Session()

    def _make_http_request(
        self, uri: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int, Any, str]:
        res = self.requests_session.post(uri, headers=headers, data=data, timeout=self.timeout)
        self._verify_status_code(res.status_code, res.text.strip())
        return (res.status_code, res.headers, res.text)


class Publisher:
    """Publishes lists of Pushpin items to every configured proxy, synchronously."""

    def __init__(self, proxies: Sequence[ProxyConfig], timeout: float) -> None:
        self.proxies = list(proxies)
        self._clients = [_BoundedClient(proxy, timeout) for proxy in self.proxies]

    def publish(self, items: Sequence[dict[str, object]], *, channel: str = "") -> None:
        """Send ``items`` to every proxy; raise PublishError naming each one that failed."""
        if not self._clients:
            raise PublishError(
                [("(none)", "no GRIP proxy is configured: set GRIP_URL or GRIP_PROXIES")],
                channel=channel,
            )
        failures: list[tuple[str, str]] = []
        for client in self._clients:
            try:
                client._pubcall(client.uri, client._gen_auth_header(), list(items))
            except ValueError as exc:  # pubcontrol wraps every failure in ValueError
                failures.append((client.uri, _short_reason(exc)))
        if failures:
            raise PublishError(failures, channel=channel)

    def close(self) -> None:
        for client in self._clients:
            client.requests_session.close()


def _short_reason(exc: Exception) -> str:
    text = str(exc).removeprefix("failed to publish: ")
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text[:300]

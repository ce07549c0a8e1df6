"""CORS headers of stream responses, from EVENTSTREAM_ALLOW_ORIGINS / _CREDENTIALS / _HEADERS.

Written here rather than with django-cors-headers so that streams work cross-origin without
another app, and because a stream needs exactly this: GET, its preflight, and the headers
an EventSource sends (``Last-Event-ID``, ``Cache-Control``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# What EventSource itself may send; EVENTSTREAM_ALLOW_HEADERS adds to these.
_ALWAYS_ALLOWED = ("Last-Event-ID", "Cache-Control")


def cors_headers(origin: str | None, allowed: Sequence[str], credentials: bool) -> dict[str, str]:
    """The CORS headers for a request from ``origin`` (its ``Origin`` header)."""
    if not origin or not allowed:
        return {}
    headers: dict[str, str] = {}
    if "*" in allowed and not credentials:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin in allowed or "*" in allowed:
        # Browsers reject "*" with credentials, so the origin is echoed instead.
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    else:
        return {}
    if credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def preflight_headers(cors: Mapping[str, str], extra_headers: Sequence[str]) -> dict[str, str]:
    """The headers a preflight (OPTIONS) answer adds to ``cors``."""
    if not cors:
        return {}
    names = list(_ALWAYS_ALLOWED)
    for name in extra_headers:
        if name.lower() not in (n.lower() for n in names):
            names.append(name)
    return {
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(names),
        "Access-Control-Max-Age": "86400",
    }

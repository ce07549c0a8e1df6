"""System checks for grip_eventstream's settings (ids grip_eventstream.E0xx / W0xx).

An id keeps its meaning forever; a check that changes level gets a new id. Retired: E001
(no GRIP_URL / GRIP_PROXIES), now the warning W008, so that a project whose test settings
have no proxy can still run ``manage.py test``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import MAX_CHANNELS_LIMIT, MAX_REPLAY_BYTES_LIMIT, PUSHPIN_INSTRUCT_LIMIT, conf
from .proxies import ProxyConfig, ProxyConfigError, is_public_key, parse_proxies


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    grip_messages = _check_grip()
    messages += grip_messages
    if not grip_messages:
        messages += _check_trust()
    messages += _check_classes()
    messages += _check_numbers()
    messages += _check_cors()
    messages += _check_foreign_settings()
    if conf.EVENTSTREAM_PUBLISH_ERRORS not in ("raise", "log"):
        messages.append(
            Error(
                f"EVENTSTREAM_PUBLISH_ERRORS is {conf.EVENTSTREAM_PUBLISH_ERRORS!r}.",
                hint='Use "raise" (the default) or "log".',
                id="grip_eventstream.E007",
            )
        )
    messages += _check_sqlite()
    if "django.middleware.gzip.GZipMiddleware" in getattr(settings, "MIDDLEWARE", ()):
        messages.append(
            Warning(
                "GZipMiddleware compresses the first response of an event stream, which "
                "Pushpin then extends with uncompressed events: clients see garbage.",
                hint="Remove GZipMiddleware, or compress in a front proxy that skips "
                "text/event-stream responses.",
                id="grip_eventstream.W002",
            )
        )
    return messages


def _check_sqlite() -> list[CheckMessage]:
    if not conf.EVENTSTREAM_STORAGE_CLASS:
        return []
    from django.db import router

    from .models import Event

    alias = router.db_for_write(Event)
    database: dict[str, Any] = settings.DATABASES.get(alias, {})
    if "sqlite3" not in str(database.get("ENGINE", "")):
        return []
    options: dict[str, Any] = database.get("OPTIONS", {})
    if str(options.get("transaction_mode", "")).upper() == "IMMEDIATE":
        return []
    return [
        Warning(
            f"Events are stored in SQLite database {alias!r} without immediate transactions: "
            "concurrent send_event calls from several processes can fail with "
            '"database is locked".',
            hint='Add "transaction_mode": "IMMEDIATE" (and "init_command": '
            '"PRAGMA journal_mode=WAL;") to its OPTIONS (documentation: Settings, SQLite).',
            id="grip_eventstream.W004",
        )
    ]


def _check_grip() -> list[CheckMessage]:
    url, proxies = conf.GRIP_URL, conf.GRIP_PROXIES
    if not url and not proxies:
        # A warning, not an error: test settings often have no proxy (the test kit's
        # eventstream_outbox records publishes instead), and an error would stop
        # `manage.py test` before any test ran.
        return [
            Warning(
                "Neither GRIP_URL nor GRIP_PROXIES is set: send_event has nowhere to publish.",
                hint='Set GRIP_URL = "http://localhost:5561?key=<Pushpin\'s sig_key>" '
                "(Pushpin's control port).",
                id="grip_eventstream.W008",
            )
        ]
    try:
        parse_proxies(url, proxies)
    except ProxyConfigError as exc:
        # The one validation of these settings is parse_proxies': this only reports it.
        return [
            Error(control_uri_problem, hint=hint, id="grip_eventstream.E002")
            for control_uri_problem, hint in exc.problems
        ]
    return []


def _check_trust() -> list[CheckMessage]:
    """Whether Grip-Sig can be and is verified (see the documentation's Security page)."""
    try:
        proxies = parse_proxies(conf.GRIP_URL, conf.GRIP_PROXIES)
    except ProxyConfigError:
        return []  # reported as E002
    messages: list[CheckMessage] = []
    keys = [proxy.signature_key for proxy in proxies]
    for proxy in proxies:
        key = proxy.signature_key
        if proxy.verify_iss is not None and key is None:
            messages.append(
                Error(
                    f"GRIP proxy {proxy.control_uri} has verify-iss but no verify-key: its "
                    "Grip-Sig signatures cannot be verified.",
                    hint="Add verify-key=<the proxy's public key, base64:-encoded PEM> "
                    "(Fastly Fanout publishes its key), or drop verify-iss.",
                    id="grip_eventstream.E009",
                )
            )
        elif key is not None and is_public_key(key) and not _has_cryptography():
            messages.append(
                Error(
                    f"GRIP proxy {proxy.control_uri} is verified with a public key (ES256/RS256), "
                    "which needs the cryptography package; without it every signature fails.",
                    hint="pip install 'grip-eventstream[fanout]'",
                    id="grip_eventstream.E009",
                )
            )
        elif key is not None and not is_public_key(key) and len(_as_bytes(key)) < 32:
            messages.append(
                Warning(
                    f"The HS256 key of GRIP proxy {proxy.control_uri} is shorter than 32 bytes.",
                    hint="Use a random sig_key of at least 32 bytes in pushpin.conf and GRIP_URL.",
                    id="grip_eventstream.W003",
                )
            )
    if any(k is not None for k in keys) and any(k is None for k in keys):
        messages.append(
            Error(
                "Some GRIP proxies have a verification key and others none: requests through "
                "the ones without would be refused (signatures are checked against the keys).",
                hint="Give every proxy its key, or none.",
                id="grip_eventstream.E009",
            )
        )
    if not settings.DEBUG and keys and all(k is None for k in keys):
        messages.append(
            Warning(
                "No key verifies the Grip-Sig header: a client that reaches Django directly can "
                "pretend to be the proxy (and read streams without the proxy's limits).",
                hint="Add ?key=<Pushpin's sig_key> to GRIP_URL (for Fastly Fanout: verify-iss "
                "and verify-key), or make Django reachable only through the proxy.",
                id="grip_eventstream.W001",
            )
        )
    return messages


# Signing keys published with Pushpin and with this project: Pushpin's stock
# /etc/pushpin/pushpin.conf, and the documentation's Quickstart, pushpin/pushpin.conf,
# docker-compose.yml and the demo. Anyone can sign a Grip-Sig with them.
_DEVELOPMENT_KEYS = {
    b"changeme": "Pushpin's stock pushpin.conf",
    b"changeme-dev-only-and-at-least-32-bytes": "grip_eventstream's Quickstart and demo",
}


@register(Tags.security, "grip_eventstream", deploy=True)
def check_deploy_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: HS256 keys that are published development keys.

    Keys under 32 bytes are W003, which every check run reports (``--deploy`` included).
    """
    try:
        proxies = parse_proxies(conf.GRIP_URL, conf.GRIP_PROXIES)
    except ProxyConfigError:
        return []  # reported as E002
    messages: list[CheckMessage] = []
    for proxy in proxies:
        for key in _hs256_keys(proxy):
            where = _development_key(key)
            if where is not None:
                messages.append(
                    Warning(
                        f"GRIP proxy {proxy.control_uri} uses a published development key "
                        f"({where}): anyone can sign a Grip-Sig with it and pass as the proxy.",
                        hint='Generate one with python -c "import secrets; '
                        'print(secrets.token_urlsafe(48))" and set it as sig_key in '
                        "pushpin.conf and as key in GRIP_URL / GRIP_PROXIES.",
                        id="grip_eventstream.W009",
                    )
                )
                break  # one message per proxy: its keys are usually one key twice
    return messages


def _hs256_keys(proxy: ProxyConfig) -> list[str | bytes]:
    """The shared secrets of ``proxy``: Grip-Sig's key and the one signing publishes."""
    keys: list[str | bytes] = []
    signature_key = proxy.signature_key
    if signature_key is not None and not is_public_key(signature_key):
        keys.append(signature_key)
    # Without control_iss, key is a Bearer token (Fastly's API token), not a signing key.
    if proxy.key is not None and proxy.control_iss is not None:
        keys.append(proxy.key)
    return keys


def _development_key(key: str | bytes) -> str | None:
    """Where ``key`` was published, or None for a key not known to be public."""
    raw = _as_bytes(key)
    if raw in _DEVELOPMENT_KEYS:
        return _DEVELOPMENT_KEYS[raw]
    # Variants of the same placeholder ("changeme-prod", "CHANGEME...") are not secrets.
    if b"changeme" in raw.lower():
        return 'a "changeme" placeholder'
    return None


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def _has_cryptography() -> bool:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


def _check_classes() -> list[CheckMessage]:
    from .channelmanager import ChannelManagerBase

    errors: list[CheckMessage] = []
    path = conf.EVENTSTREAM_CHANNELMANAGER_CLASS
    try:
        cls = import_string(path)
    except ImportError as exc:
        errors.append(
            Error(
                f"EVENTSTREAM_CHANNELMANAGER_CLASS {path!r} cannot be imported: {exc}.",
                hint="Give the dotted path of a DefaultChannelManager subclass.",
                id="grip_eventstream.E003",
            )
        )
    else:
        if not (isinstance(cls, type) and issubclass(cls, ChannelManagerBase)):
            errors.append(
                Error(
                    f"EVENTSTREAM_CHANNELMANAGER_CLASS {path!r} is not a subclass of "
                    "grip_eventstream.channelmanager.ChannelManagerBase.",
                    hint="Subclass DefaultChannelManager and override what you need.",
                    id="grip_eventstream.E003",
                )
            )
    storage = conf.EVENTSTREAM_STORAGE_CLASS
    if storage:
        try:
            import_string(storage)
        except ImportError as exc:
            errors.append(
                Error(
                    f"EVENTSTREAM_STORAGE_CLASS {storage!r} cannot be imported: {exc}.",
                    hint='Use "grip_eventstream.storage.DjangoModelStorage", or None.',
                    id="grip_eventstream.E004",
                )
            )
    return errors


def _check_numbers() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    max_channels = conf.EVENTSTREAM_MAX_CHANNELS
    if not _is_int(max_channels) or not 1 <= max_channels <= MAX_CHANNELS_LIMIT:
        errors.append(
            Error(
                f"EVENTSTREAM_MAX_CHANNELS is {max_channels!r}.",
                hint=f"Use a whole number from 1 to {MAX_CHANNELS_LIMIT}: Pushpin allows 20 "
                "channels per connection and grip_eventstream reserves 2.",
                id="grip_eventstream.E005",
            )
        )
    bounds = {
        "EVENTSTREAM_KEEP_ALIVE": (conf.EVENTSTREAM_KEEP_ALIVE, 0),
        "EVENTSTREAM_LINK_TIMEOUT": (conf.EVENTSTREAM_LINK_TIMEOUT, 0),
        "EVENTSTREAM_REPLAY_LIMIT": (conf.EVENTSTREAM_REPLAY_LIMIT, 1),
        "EVENTSTREAM_STORAGE_TTL": (conf.EVENTSTREAM_STORAGE_TTL, 1),
        "EVENTSTREAM_RECONNECT_SPREAD": (conf.EVENTSTREAM_RECONNECT_SPREAD, 0),
        "EVENTSTREAM_PRESENCE_TTL": (conf.EVENTSTREAM_PRESENCE_TTL, 1),
    }
    for name, (value, minimum) in bounds.items():
        if not _is_int(value) or value < minimum:
            errors.append(
                Error(
                    f"{name} is {value!r}.",
                    hint=f"Use a whole number of at least {minimum}.",
                    id="grip_eventstream.E006",
                )
            )
    errors += _check_sizes()
    timeout = conf.EVENTSTREAM_PUBLISH_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        errors.append(
            Error(
                f"EVENTSTREAM_PUBLISH_TIMEOUT is {timeout!r}.",
                hint="Use a positive number of seconds, e.g. 5.",
                id="grip_eventstream.E006",
            )
        )
    return errors


def _check_sizes() -> list[CheckMessage]:
    page = conf.EVENTSTREAM_REPLAY_MAX_BYTES
    event = conf.EVENTSTREAM_MAX_EVENT_BYTES
    if not _is_int(page) or not 1024 <= page <= MAX_REPLAY_BYTES_LIMIT:
        return [
            Error(
                f"EVENTSTREAM_REPLAY_MAX_BYTES is {page!r}.",
                hint=f"Use a whole number of bytes from 1024 to {MAX_REPLAY_BYTES_LIMIT}: "
                f"Pushpin refuses a subscribe response over {PUSHPIN_INSTRUCT_LIMIT} bytes.",
                id="grip_eventstream.E010",
            )
        ]
    if not _is_int(event) or not 1 <= event <= page:
        return [
            Error(
                f"EVENTSTREAM_MAX_EVENT_BYTES is {event!r}.",
                hint=f"Use a whole number of bytes from 1 to EVENTSTREAM_REPLAY_MAX_BYTES "
                f"({page}): every stored event must fit in one replay page.",
                id="grip_eventstream.E010",
            )
        ]
    return []


def _check_cors() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in (
        "EVENTSTREAM_ALLOW_ORIGIN",
        "EVENTSTREAM_ALLOW_ORIGINS",
        "EVENTSTREAM_ALLOW_HEADERS",
    ):
        value = getattr(settings, name, None)
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            errors.append(
                Error(
                    f"{name} should be a list of strings or one comma-separated string, "
                    f"got {value!r}.",
                    hint=f'For example {name} = ["https://example.com"].'
                    if "ORIGIN" in name
                    else f'For example {name} = ["Authorization"] or "Authorization".',
                    id="grip_eventstream.E008",
                )
            )
    origins = conf.EVENTSTREAM_ALLOW_ORIGINS
    credentials = conf.EVENTSTREAM_ALLOW_CREDENTIALS is True
    if credentials and isinstance(origins, Sequence) and "*" in origins:
        errors.append(
            Warning(
                'EVENTSTREAM_ALLOW_ORIGINS contains "*" and EVENTSTREAM_ALLOW_CREDENTIALS '
                "is True: any origin may open streams with the user's credentials.",
                hint="Any web site a logged-in user visits can then read that user's "
                'private streams. List the origins that may do so instead of "*", or '
                "set EVENTSTREAM_ALLOW_CREDENTIALS = False.",
                id="grip_eventstream.W005",
            )
        )
    if not isinstance(conf.EVENTSTREAM_ALLOW_CREDENTIALS, bool):
        errors.append(
            Error(
                "EVENTSTREAM_ALLOW_CREDENTIALS should be True or False.",
                hint="Set it to True to let cross-origin streams carry cookies.",
                id="grip_eventstream.E008",
            )
        )
    return errors


# Settings that only django-eventstream reads, and why a GRIP proxy makes them unneeded.
_DJANGO_EVENTSTREAM_ONLY = {
    "EVENTSTREAM_REDIS": "django-eventstream uses Redis to pass events between the processes "
    "that hold connections; here Pushpin holds every connection and send_event publishes to "
    "it from any process",
    "EVENTSTREAM_STORAGE_CONNECTION": "it configures django-eventstream's RedisStorage; events "
    "are stored with the Django ORM here (EVENTSTREAM_STORAGE_CLASS)",
}


def _check_foreign_settings() -> list[CheckMessage]:
    from .conf import Settings

    known = {name for name, value in vars(Settings).items() if isinstance(value, property)}
    known |= {"EVENTSTREAM_ALLOW_ORIGIN", *_DJANGO_EVENTSTREAM_ONLY}
    messages: list[CheckMessage] = []
    for name in dir(settings):
        if name.startswith("EVENTSTREAM_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            messages.append(
                Warning(
                    f"{name} is not a setting of grip_eventstream (a typo?): it is ignored.",
                    hint=(
                        f"Did you mean {close[0]}?"
                        if close
                        else "See the Settings page of the documentation."
                    ),
                    id="grip_eventstream.W007",
                )
            )
    return messages + [
        Warning(
            f"{name} is set but grip_eventstream does not read it.",
            hint=f"Remove it: {why}.",
            id="grip_eventstream.W006",
        )
        for name, why in _DJANGO_EVENTSTREAM_ONLY.items()
        if hasattr(settings, name)
    ]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

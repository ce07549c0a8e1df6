"""grip_eventstream.checks: every message id, triggered through the settings it checks."""

from __future__ import annotations

import ast
import base64
import re
from pathlib import Path

import pytest
from django.core.checks import Error, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from grip_eventstream import checks
from grip_eventstream.checks import check_deploy_keys, check_settings

KEY = "grip-eventstream-test-key-0123456789abcdef"

CHECKS_SOURCE = Path(checks.__file__).read_text()

# One topic per id: every message with that id is about the same thing (and names it).
TOPICS = {
    "grip_eventstream.E002": r"(?i)control[ _]URI",
    "grip_eventstream.E003": r"EVENTSTREAM_CHANNELMANAGER_CLASS",
    "grip_eventstream.E004": r"EVENTSTREAM_STORAGE_CLASS",
    "grip_eventstream.E005": r"EVENTSTREAM_MAX_CHANNELS",
    "grip_eventstream.E006": r"whole number of at least|positive number of seconds",
    "grip_eventstream.E007": r"EVENTSTREAM_PUBLISH_ERRORS",
    "grip_eventstream.E008": r"ALLOW_ORIGINS|ALLOW_HEADERS|ALLOW_CREDENTIALS|\{name\} should be",
    "grip_eventstream.E009": r"verif",  # a Grip-Sig that cannot be verified as configured
    "grip_eventstream.W001": r"No key verifies the Grip-Sig",
    "grip_eventstream.W002": r"GZipMiddleware",
    "grip_eventstream.W003": r"shorter than 32 bytes",
    "grip_eventstream.W004": r"SQLite",
    "grip_eventstream.W005": r"any origin .* credentials",
    "grip_eventstream.W006": r"does not read it",
    "grip_eventstream.W007": r"is not a setting of grip_eventstream",
    "grip_eventstream.E010": r"_BYTES",
    "grip_eventstream.W008": r"Neither GRIP_URL nor GRIP_PROXIES",
    "grip_eventstream.W009": r"published development key",
}
# Ids no longer emitted, never to be reused for another topic.
RETIRED = {
    "grip_eventstream.E001": "no GRIP_URL / GRIP_PROXIES: a warning now, W008",
}


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def only(check_id: str):
    """The messages of check_settings(), asserting they all carry ``check_id`` and a hint."""
    messages = check_settings()
    assert messages, f"expected {check_id}, got nothing"
    assert ids(messages) == [check_id] * len(messages), messages
    for message in messages:
        assert message.hint, message
        assert isinstance(message, Warning if check_id.split(".")[1][0] == "W" else Error)
        assert message.is_serious() == check_id.split(".")[1].startswith("E")
    return messages


def test_test_settings_are_clean():
    assert check_settings() == []


def test_call_command_check_is_clean(capsys):
    call_command("check")
    assert "System check identified no issues" in capsys.readouterr().out


def test_registered_under_its_tag():
    with override_settings(GRIP_URL=None):
        assert "grip_eventstream.W008" in ids(run_checks(tags=["grip_eventstream"]))


def test_call_command_check_fails_on_errors():
    with (
        override_settings(EVENTSTREAM_PUBLISH_ERRORS="x"),
        pytest.raises(SystemCheckError, match="E007"),
    ):
        call_command("check")


# --- W008 / E002: where to publish ------------------------------------------------------


def test_w008_no_proxy(settings):
    settings.GRIP_URL = None
    settings.GRIP_PROXIES = None
    (message,) = only("grip_eventstream.W008")
    assert "5561" in message.hint


def test_w008_with_settings_absent(settings):
    del settings.GRIP_URL
    only("grip_eventstream.W008")


def test_w008_does_not_fail_check(settings, capsys):
    # Test settings without a proxy (the test kit's outbox replaces publishing): `manage.py
    # test` runs the checks and stops on errors only.
    del settings.GRIP_URL
    call_command("check")
    out = capsys.readouterr()
    assert "grip_eventstream.W008" in out.err + out.out
    with pytest.raises(SystemCheckError, match="W008"):
        call_command("check", fail_level="WARNING")


@pytest.mark.parametrize(
    "grip_url", ["localhost:5561", "ftp://localhost:5561", "http://", "5561", 5561, ["http://a"]]
)
def test_e002_bad_grip_url(settings, grip_url):
    settings.GRIP_URL = grip_url
    (message,) = only("grip_eventstream.E002")
    assert "http(s)" in message.msg


@pytest.mark.parametrize(
    "proxies",
    [
        "http://localhost:5561",
        {"control_uri": "http://localhost:5561"},
        [{"key": "k"}],
        ["http://localhost:5561"],
        [{"control_uri": "http://ok:5561"}, None],
    ],
)
def test_e002_bad_grip_proxies_shape(settings, proxies):
    settings.GRIP_PROXIES = proxies
    (message,) = only("grip_eventstream.E002")
    assert "GRIP_PROXIES must be a list of dicts" in message.msg


def test_e002_every_bad_proxy_uri_is_named(settings):
    settings.GRIP_URL = "http://ignored-when-proxies-are-set"
    settings.GRIP_PROXIES = [
        {"control_uri": "http://ok:5561"},
        {"control_uri": "nope"},
        {"control_uri": ""},
        {"control_uri": 7},
    ]
    messages = only("grip_eventstream.E002")
    assert len(messages) == 3
    assert "'nope'" in messages[0].msg


def test_grip_proxies_valid(settings):
    settings.GRIP_URL = None
    settings.GRIP_PROXIES = [
        {"control_uri": "https://a:5561", "control_iss": "pushpin", "key": KEY},
        {"control_uri": "http://b", "control_iss": "pushpin", "key": KEY},
    ]
    assert check_settings() == []


# --- E009 / W001 / W003: verifying Grip-Sig ---------------------------------------------


def test_w001_no_key_verifies(settings):
    settings.GRIP_URL = "http://localhost:5561"
    (message,) = only("grip_eventstream.W001")
    assert "key=" in message.hint


def test_w001_not_in_debug(settings):
    settings.GRIP_URL = "http://localhost:5561"
    settings.DEBUG = True
    assert check_settings() == []


def test_w001_not_with_other_grip_errors(settings):
    settings.GRIP_URL = "localhost:5561"
    only("grip_eventstream.E002")


def test_e009_verify_iss_without_verify_key(settings):
    settings.GRIP_URL = "https://api.fastly.com/service/S?verify-iss=fastly:S&key=TOKEN"
    messages = check_settings()
    # No proxy has a key, so W001 comes too.
    assert ids(messages) == ["grip_eventstream.E009", "grip_eventstream.W001"]
    assert "verify-key" in messages[0].msg
    assert "verify-key" in str(messages[0].hint)
    settings.DEBUG = True
    only("grip_eventstream.E009")


def test_e009_some_proxies_without_key(settings):
    settings.GRIP_PROXIES = [
        {"control_uri": "http://a:5561", "control_iss": "pushpin", "key": KEY},
        {"control_uri": "http://b:5561"},
    ]
    (message,) = only("grip_eventstream.E009")
    assert "Some GRIP proxies have a verification key" in message.msg


PEM = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"


def test_e009_public_key_without_cryptography(settings, monkeypatch):
    settings.GRIP_PROXIES = [
        {
            "control_uri": "https://api.fastly.com/service/S",
            "verify_iss": "fastly:S",
            "verify_key": PEM,
            "key": "TOKEN",
        }
    ]
    assert check_settings() == []  # cryptography is installed here
    monkeypatch.setitem(__import__("sys").modules, "cryptography", None)  # import fails
    (message,) = only("grip_eventstream.E009")
    assert "cryptography" in message.msg
    assert "[fanout]" in message.hint


def test_e009_public_key_as_bytes(settings, monkeypatch):
    settings.GRIP_PROXIES = [{"control_uri": "http://a", "verify_key": b"  " + PEM.encode()}]
    monkeypatch.setattr(checks, "_has_cryptography", lambda: False)
    only("grip_eventstream.E009")


@pytest.mark.parametrize("key", ["short", b"short-bytes", "base64:" + "QUJD"])
def test_w003_short_hs256_key(settings, key):
    settings.GRIP_URL = (
        f"http://localhost:5561?iss=pushpin&key={key}" if isinstance(key, str) else None
    )
    if isinstance(key, bytes):
        settings.GRIP_PROXIES = [{"control_uri": "http://a", "control_iss": "p", "key": key}]
    (message,) = only("grip_eventstream.W003")
    assert "32 bytes" in message.msg


def test_w003_32_bytes_is_enough(settings):
    settings.GRIP_URL = "http://localhost:5561?iss=pushpin&key=" + "k" * 32
    assert check_settings() == []


def test_trust_skipped_when_proxies_do_not_parse(settings):
    settings.GRIP_PROXIES = [{}]
    assert checks._check_trust() == []


# --- E003 / E004: classes ---------------------------------------------------------------


def test_e003_channel_manager_not_importable(settings):
    settings.EVENTSTREAM_CHANNELMANAGER_CLASS = "tests.nowhere.Manager"
    (message,) = only("grip_eventstream.E003")
    assert "cannot be imported" in message.msg


@pytest.mark.parametrize(
    "path", ["grip_eventstream.conf.Settings", "grip_eventstream.conf.conf", "builtins.len"]
)
def test_e003_channel_manager_not_a_subclass(settings, path):
    settings.EVENTSTREAM_CHANNELMANAGER_CLASS = path
    (message,) = only("grip_eventstream.E003")
    assert "not a subclass" in message.msg


def test_e003_default_manager_is_fine(settings):
    del settings.EVENTSTREAM_CHANNELMANAGER_CLASS
    assert check_settings() == []


def test_e004_storage_not_importable(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.Nope"
    (message,) = only("grip_eventstream.E004")
    assert "DjangoModelStorage" in message.hint


@pytest.mark.parametrize("value", [None, ""])
def test_e004_no_storage_is_fine(settings, value):
    settings.EVENTSTREAM_STORAGE_CLASS = value
    assert check_settings() == []


# --- E005 / E006: numbers ---------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 19, 100, True, "5", 5.0, None])
def test_e005_max_channels(settings, value):
    settings.EVENTSTREAM_MAX_CHANNELS = value
    (message,) = only("grip_eventstream.E005")
    assert "from 1 to 18" in message.hint


@pytest.mark.parametrize("value", [1, 18])
def test_e005_bounds_are_inclusive(settings, value):
    settings.EVENTSTREAM_MAX_CHANNELS = value
    assert check_settings() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENTSTREAM_KEEP_ALIVE", -1),
        ("EVENTSTREAM_KEEP_ALIVE", 1.5),
        ("EVENTSTREAM_KEEP_ALIVE", True),
        ("EVENTSTREAM_LINK_TIMEOUT", "120"),
        ("EVENTSTREAM_LINK_TIMEOUT", -5),
        ("EVENTSTREAM_REPLAY_LIMIT", 0),
        ("EVENTSTREAM_STORAGE_TTL", 0),
        ("EVENTSTREAM_STORAGE_TTL", None),
        ("EVENTSTREAM_PUBLISH_TIMEOUT", 0),
        ("EVENTSTREAM_PUBLISH_TIMEOUT", -1.0),
        ("EVENTSTREAM_PUBLISH_TIMEOUT", True),
        ("EVENTSTREAM_PUBLISH_TIMEOUT", "5"),
        ("EVENTSTREAM_PRESENCE_TTL", 0),
        ("EVENTSTREAM_PRESENCE_TTL", "90"),
    ],
)
def test_e006_numbers(settings, name, value):
    setattr(settings, name, value)
    (message,) = only("grip_eventstream.E006")
    assert message.msg.startswith(f"{name} is ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENTSTREAM_KEEP_ALIVE", 0),
        ("EVENTSTREAM_LINK_TIMEOUT", 0),
        ("EVENTSTREAM_REPLAY_LIMIT", 1),
        ("EVENTSTREAM_STORAGE_TTL", 1),
        ("EVENTSTREAM_PUBLISH_TIMEOUT", 0.1),
        ("EVENTSTREAM_PRESENCE_TTL", 1),
    ],
)
def test_e006_minimums_are_allowed(settings, name, value):
    setattr(settings, name, value)
    assert check_settings() == []


def test_e006_one_message_per_setting(settings):
    settings.EVENTSTREAM_KEEP_ALIVE = -1
    settings.EVENTSTREAM_REPLAY_LIMIT = 0
    assert len(only("grip_eventstream.E006")) == 2


# --- E007 / E008 / W002 -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["ignore", "RAISE", None])
def test_e007_publish_errors(settings, value):
    settings.EVENTSTREAM_PUBLISH_ERRORS = value
    only("grip_eventstream.E007")


@pytest.mark.parametrize("value", ["raise", "log"])
def test_e007_valid(settings, value):
    settings.EVENTSTREAM_PUBLISH_ERRORS = value
    assert check_settings() == []


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("EVENTSTREAM_ALLOW_ORIGINS", ["https://a", 1], "https://example.com"),
        ("EVENTSTREAM_ALLOW_HEADERS", [b"Authorization"], '["Authorization"]'),
    ],
)
def test_e008_cors_lists(settings, name, value, hint):
    setattr(settings, name, value)
    (message,) = only("grip_eventstream.E008")
    assert message.msg.startswith(f"{name} should be a list of strings")
    assert hint in message.hint


@pytest.mark.parametrize("value", [True, 3])
def test_e008_cors_non_iterable(settings, value):
    settings.EVENTSTREAM_ALLOW_ORIGINS = value
    only("grip_eventstream.E008")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_e008_credentials(settings, value):
    settings.EVENTSTREAM_ALLOW_CREDENTIALS = value
    (message,) = only("grip_eventstream.E008")
    assert "True or False" in message.msg


def test_cors_valid(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ("https://a.example", "*")
    settings.EVENTSTREAM_ALLOW_HEADERS = ["Authorization"]
    settings.EVENTSTREAM_ALLOW_CREDENTIALS = False
    assert check_settings() == []


def test_w002_gzip(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]
    (message,) = only("grip_eventstream.W002")
    assert "GZipMiddleware" in message.hint


def test_several_problems_at_once(settings):
    settings.GRIP_URL = None
    settings.EVENTSTREAM_MAX_CHANNELS = 0
    settings.EVENTSTREAM_PUBLISH_ERRORS = "x"
    assert sorted(ids(check_settings())) == [
        "grip_eventstream.E005",
        "grip_eventstream.E007",
        "grip_eventstream.W008",
    ]


# --- W004: SQLite storage -------------------------------------------------------------


def _database(settings, monkeypatch, **changes):
    # A new dict for "default": open connections keep theirs.
    database = {**settings.DATABASES["default"], **changes}
    monkeypatch.setitem(settings.DATABASES, "default", database)


@pytest.mark.parametrize("options", [{}, {"transaction_mode": "DEFERRED"}, {"timeout": 30}])
def test_w004_sqlite_without_immediate(settings, monkeypatch, options):
    _database(settings, monkeypatch, ENGINE="django.db.backends.sqlite3", OPTIONS=options)
    (message,) = only("grip_eventstream.W004")
    assert "'default'" in message.msg
    assert "IMMEDIATE" in message.hint


@pytest.mark.parametrize("mode", ["IMMEDIATE", "immediate"])
def test_w004_sqlite_immediate_is_fine(settings, monkeypatch, mode):
    _database(
        settings,
        monkeypatch,
        ENGINE="django.db.backends.sqlite3",
        OPTIONS={"transaction_mode": mode},
    )
    assert check_settings() == []


def test_w004_other_databases_and_no_storage(settings, monkeypatch):
    _database(settings, monkeypatch, ENGINE="django.db.backends.postgresql", OPTIONS={})
    assert check_settings() == []
    _database(settings, monkeypatch, ENGINE="django.db.backends.sqlite3", OPTIONS={})
    settings.EVENTSTREAM_STORAGE_CLASS = None
    assert check_settings() == []


# --- the ids themselves -----------------------------------------------------------------


def _message_calls() -> list[tuple[str, str]]:
    """(id, source of the Error/Warning call) for every message checks.py can emit."""
    found = []
    for node in ast.walk(ast.parse(CHECKS_SOURCE)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Error", "Warning"):
            (check_id,) = [
                str(k.value.value)
                for k in node.keywords
                if k.arg == "id" and isinstance(k.value, ast.Constant)
            ]
            found.append((check_id, ast.get_source_segment(CHECKS_SOURCE, node) or ""))
    return found


def test_every_id_has_one_topic():
    calls = _message_calls()
    in_source = set(re.findall(r"grip_eventstream\.[EW]\d{3}", CHECKS_SOURCE))
    assert {check_id for check_id, _ in calls} == in_source
    # Every id is documented here with its topic (a new id must be added, an old one
    # never reused for another meaning), and topics are distinct.
    assert in_source == set(TOPICS)
    assert not set(RETIRED) & (in_source | set(TOPICS))
    assert len(set(TOPICS.values())) == len(TOPICS)
    for check_id, source in calls:
        assert re.search(TOPICS[check_id], source), (check_id, source)
        assert "hint=" in source, check_id
        kind = "Warning" if check_id.split(".")[1][0] == "W" else "Error"
        assert source.startswith(kind), (check_id, source)


# --- E010 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "event"),
    [(1023, 100), (80_001, 100), ("64k", 100), (None, 100), (4096, 4097), (4096, 0), (4096, 1.5)],
)
def test_e010_sizes(settings, page, event):
    settings.EVENTSTREAM_REPLAY_MAX_BYTES = page
    settings.EVENTSTREAM_MAX_EVENT_BYTES = event
    (message,) = only("grip_eventstream.E010")
    assert message.hint


@pytest.mark.parametrize(("page", "event"), [(1024, 1), (80_000, 80_000), (4096, 4096)])
def test_e010_valid_sizes(settings, page, event):
    settings.EVENTSTREAM_REPLAY_MAX_BYTES = page
    settings.EVENTSTREAM_MAX_EVENT_BYTES = event
    assert check_settings() == []


# --- W005 -------------------------------------------------------------------------------


def test_w005_any_origin_with_credentials(settings):
    settings.EVENTSTREAM_ALLOW_ORIGINS = ["https://a.example", "*"]
    settings.EVENTSTREAM_ALLOW_CREDENTIALS = True
    (message,) = only("grip_eventstream.W005")
    assert "logged-in" in message.hint


@pytest.mark.parametrize(
    ("origins", "credentials"), [(["*"], False), (["https://a.example"], True), ([], True)]
)
def test_w005_not_for_safe_combinations(settings, origins, credentials):
    settings.EVENTSTREAM_ALLOW_ORIGINS = origins
    settings.EVENTSTREAM_ALLOW_CREDENTIALS = credentials
    assert check_settings() == []


# --- django-eventstream's setting forms (drop-in) ---------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENTSTREAM_ALLOW_HEADERS", "Authorization, Last-Event-ID"),
        ("EVENTSTREAM_ALLOW_ORIGIN", "https://app.example.com"),
        ("EVENTSTREAM_ALLOW_ORIGINS", "https://app.example.com"),
        ("EVENTSTREAM_ALLOW_ORIGINS", ["https://a.example", "https://b.example"]),
    ],
)
def test_django_eventstream_forms_pass(settings, name, value):
    setattr(settings, name, value)
    assert check_settings() == []


@pytest.mark.parametrize("name", ["EVENTSTREAM_ALLOW_ORIGIN", "EVENTSTREAM_ALLOW_HEADERS"])
@pytest.mark.parametrize("value", [5, [1], {"a": 1}])
def test_e008_wrong_types_stay_errors(settings, name, value):
    setattr(settings, name, value)
    (message,) = only("grip_eventstream.E008")
    assert name in message.msg


@pytest.mark.parametrize("name", ["EVENTSTREAM_REDIS", "EVENTSTREAM_STORAGE_CONNECTION"])
def test_w006_django_eventstream_only_settings(settings, name):
    setattr(settings, name, {"host": "localhost"})
    (message,) = only("grip_eventstream.W006")
    assert name in message.msg
    assert "Remove it" in message.hint


# --- W007 and GRIP_URL paths ------------------------------------------------------------


def test_w007_misspelled_setting_names_the_closest(settings):
    settings.EVENTSTREAM_STORAGE_CLAS = "grip_eventstream.storage.DjangoModelStorage"
    (message,) = only("grip_eventstream.W007")
    assert "EVENTSTREAM_STORAGE_CLAS " in message.msg
    assert message.hint == "Did you mean EVENTSTREAM_STORAGE_CLASS?"


def test_w007_nothing_close(settings):
    settings.EVENTSTREAM_ZZZZZZZZZZZZZZZZZZZ = 1
    (message,) = only("grip_eventstream.W007")
    assert "Settings page of the documentation" in message.hint


@pytest.mark.parametrize(
    "url",
    ["http://localhost:5561/publish/", "http://localhost:5561/publish", "http://h/x/publish/"],
)
def test_e002_grip_url_with_the_publish_path(settings, url):
    settings.GRIP_URL = url
    (message,) = only("grip_eventstream.E002")
    assert "/publish/publish/" in message.msg


# --- W009: check --deploy ---------------------------------------------------------------

DEV_KEY = "changeme-dev-only-and-at-least-32-bytes"


def deploy_ids() -> list[str]:
    return ids(run_checks(include_deployment_checks=True, tags=["grip_eventstream"]))


def test_deploy_check_is_registered_for_deploy_only(settings):
    settings.GRIP_URL = f"http://localhost:5561?iss=pushpin&key={DEV_KEY}"
    assert "grip_eventstream.W009" in deploy_ids()
    assert "grip_eventstream.W009" in ids(
        run_checks(include_deployment_checks=True, tags=["security"])
    )
    assert "grip_eventstream.W009" not in ids(run_checks())
    assert check_settings() == []  # a long enough key: nothing outside --deploy


def test_test_settings_pass_the_deploy_check():
    assert check_deploy_keys() == []


@pytest.mark.parametrize(
    "grip_url",
    [
        # The Quickstart's, the demo's and pushpin/pushpin.conf's key, with or without iss.
        f"http://127.0.0.1:5561?iss=pushpin&key={DEV_KEY}",
        f"http://pushpin:5561?key={DEV_KEY}",
        # Pushpin's stock /etc/pushpin/pushpin.conf key.
        "http://localhost:5561?key=changeme",
        "http://localhost:5561?key=base64:" + base64.b64encode(b"changeme").decode(),
        # A placeholder edited but not replaced.
        "http://localhost:5561?key=CHANGEME-in-production-0123456789abcdef",
        # As verify-key for a Pushpin with its own sig_iss.
        f"http://localhost:5561?verify-iss=my-iss&verify-key={DEV_KEY}",
    ],
)
def test_w009_development_key(settings, grip_url):
    settings.GRIP_URL = grip_url
    (message,) = check_deploy_keys()
    assert message.id == "grip_eventstream.W009"
    assert isinstance(message, Warning)
    assert "secrets.token_urlsafe" in str(message.hint)
    assert DEV_KEY not in message.msg  # the message says where it was published, not the key


def test_w009_in_grip_proxies_once_per_proxy(settings):
    settings.GRIP_PROXIES = [
        {"control_uri": "http://a:5561", "control_iss": "pushpin", "key": DEV_KEY},
        {"control_uri": "http://b:5561", "control_iss": "pushpin", "key": KEY},
        {"control_uri": "http://c:5561", "control_iss": "pushpin", "key": DEV_KEY.encode()},
    ]
    messages = check_deploy_keys()
    assert [m.msg.split()[2] for m in messages] == ["http://a:5561", "http://c:5561"]


@pytest.mark.parametrize(
    "grip_url",
    [
        f"http://localhost:5561?iss=pushpin&key={KEY}",
        None,
        "http://localhost:5561",
        # Fastly's API token is a Bearer token, not a signing key; nor is a public key HS256.
        "https://api.fastly.com/service/S?key=changeme-token&verify-iss=fastly:S"
        "&verify-key=-----BEGIN%20PUBLIC%20KEY-----changeme",
        "localhost:5561",  # E002
        5561,  # E002
    ],
)
def test_w009_not_for_other_keys(settings, grip_url):
    settings.GRIP_URL = grip_url
    assert check_deploy_keys() == []


def test_w009_malformed_proxies_are_left_to_e002(settings):
    settings.GRIP_PROXIES = [{}]
    assert check_deploy_keys() == []


def test_check_deploy_reports_development_and_short_keys(settings, capsys):
    settings.GRIP_URL = "http://localhost:5561?iss=pushpin&key=changeme"
    call_command("check", deploy=True)
    out = capsys.readouterr()
    # A short key is W003 in every run; --deploy adds that it is a published one.
    assert "grip_eventstream.W003" in out.err + out.out
    assert "grip_eventstream.W009" in out.err + out.out

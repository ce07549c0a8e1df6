"""Fixtures that run the real parts: Pushpin in front of gunicorn serving tests.wsgi.

One stack per test session (started after pytest-django has created the test database,
which gunicorn then opens too); tests that kill or restart a process start their own.
Processes are always stopped, also when a test fails (see tests/procs.py).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from grip_eventstream.pushpin import wait_proxied
from grip_eventstream.sseclient import Event, EventStream, SSEParser
from tests.gunicorn_process import Gunicorn
from tests.pushpin_process import Pushpin

# The fixtures the package offers its users, used here as a user's project would.
pytest_plugins = ["grip_eventstream.testing"]
# A user's project with its own settings and tests: tests/test_testing.py runs it.
collect_ignore = ["kitproject"]

ROOT = Path(__file__).resolve().parent.parent
SIG_KEY = "grip-eventstream-test-key-0123456789abcdef"


@dataclass
class Stack:
    pushpin: Pushpin
    gunicorn: Gunicorn

    @property
    def grip_url(self) -> str:
        # iss + key: publishes are signed, and the app verifies Pushpin's Grip-Sig with key.
        return f"{self.pushpin.control_url}?iss=pushpin&key={SIG_KEY}"

    @property
    def url(self) -> str:
        return self.pushpin.url

    def stream(self, path: str, **kwargs) -> EventStream:
        return EventStream(self.pushpin.url + path, **kwargs)

    def send_via_app(self, channel: str, data: dict, count: int | None = None, type="message"):
        body: dict = {"channel": channel, "data": data, "type": type}
        if count is not None:
            body["count"] = count
        res = requests.post(self.gunicorn.url + "/send/", data=json.dumps(body), timeout=30)
        res.raise_for_status()

    def start_pushpin(self) -> None:
        """(Re)start Pushpin and wait until a stream hold through it succeeds.

        Pushpin's own readiness probe can pass while holds still fail with "500 Accept
        service unavailable" for a moment; a native EventSource reconnecting then would give
        up for good, which tests of the native client must not depend on.
        """
        self.pushpin.start()
        wait_proxied(self.pushpin.url + "/stream/?channel=volatile-ready", want_status=200)

    def stop(self) -> None:
        self.pushpin.stop()
        self.gunicorn.stop()


def pytest_configure(config) -> None:
    # A shell without job control starts background commands with SIGINT ignored, and
    # every program started from here would inherit that: the tests that stop runpushpin
    # with Ctrl-C (SIGINT) must work whoever runs the suite. A handler, unlike an ignored
    # signal, is not inherited across exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_stack(
    workdir: Path,
    db_name: str,
    *,
    workers: int = 2,
    env: dict | None = None,
    grip_url=None,
    ready_status: int = 200,
    project: str = "tests",
    **pushpin_options,
) -> Stack:
    """Pushpin in front of gunicorn serving ``project`` (a package with wsgi and settings)."""
    workdir.mkdir(parents=True, exist_ok=True)
    gunicorn = Gunicorn(
        f"{project}.wsgi:application",
        workdir,
        cwd=ROOT,
        env={
            "DJANGO_SETTINGS_MODULE": f"{project}.settings",
            "GES_DB_NAME": db_name,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        },
        workers=workers,
        threads=8,
    )
    pushpin_options.setdefault("sig_key", SIG_KEY)
    pushpin = Pushpin(gunicorn.address, workdir, **pushpin_options)
    stack = Stack(pushpin, gunicorn)
    # grip_url(pushpin) overrides the app's GRIP_URL, e.g. for an ES256-signing Pushpin.
    gunicorn.env["GRIP_URL"] = grip_url(pushpin) if grip_url else stack.grip_url
    try:
        pushpin.start()
        gunicorn.start(ready_path="/send/")
        wait_proxied(pushpin.url + "/stream/?channel=volatile-ready", want_status=ready_status)
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def test_db_name(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    return str(connection.settings_dict["NAME"])


@pytest.fixture(scope="session")
def live_stack(test_db_name, tmp_path_factory) -> Iterator[Stack]:
    if shutil.which("pushpin") is None:
        pytest.fail("pushpin is not installed: apt-get install pushpin (Debian/Ubuntu)")
    stack = start_stack(tmp_path_factory.mktemp("stack"), test_db_name)
    yield stack
    stack.stop()


@pytest.fixture
def stack(live_stack, settings, transactional_db) -> Stack:
    """The session's Pushpin + gunicorn, with this process publishing to the same Pushpin."""
    settings.GRIP_URL = live_stack.grip_url
    return live_stack


@pytest.fixture
def driver(tmp_path, monkeypatch):
    """Headless Debian Chromium, always quit (tests/browser.py)."""
    from tests import browser

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must never download anything
    workdir = tmp_path / "chrome"
    chrome = browser.start_chrome(workdir)
    try:
        yield chrome
    finally:
        browser.quit_chrome(chrome, workdir)


@pytest.fixture
def private_stack(test_db_name, settings, transactional_db, tmp_path, request) -> Iterator[Stack]:
    """A stack of its own, for tests that kill or restart its processes.

    ``@pytest.mark.stack_env(NAME=value)`` passes environment variables to its gunicorn.
    """
    marker = request.node.get_closest_marker("stack_env")
    stack = start_stack(tmp_path / "stack", test_db_name, env=marker.kwargs if marker else None)
    settings.GRIP_URL = stack.grip_url
    yield stack
    stack.stop()


# Front-end packages the browser tests load, installed from the npm registry at test time
# (never copied into the repository); npm aliases let two htmx majors live side by side.
NPM_PACKAGES = {
    "htmx2": "npm:htmx.org@2.0.11",
    "htmx-ext-sse": "2.2.4",
    "htmx4": "npm:htmx.org@4.0.1",
}
NPM_DIR = ROOT / ".run" / "npm"


@pytest.fixture(scope="session")
def npm_packages() -> Path:
    """node_modules with NPM_PACKAGES, installed once per checkout (tests/views.npm_file)."""
    modules = NPM_DIR / "node_modules"
    stamp = NPM_DIR / "installed.json"
    if stamp.exists() and json.loads(stamp.read_text()) == NPM_PACKAGES:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: apt-get install npm (the htmx tests need it)")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{spec}" for name, spec in NPM_PACKAGES.items()]
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR), *specs],
        check=True,
        capture_output=True,
        timeout=300,
    )
    stamp.write_text(json.dumps(NPM_PACKAGES))
    return modules


def events(text: str, *, skip=("stream-reset",)) -> list[Event]:
    return [e for e in SSEParser().feed(text) if e.type not in skip]


def wait_events(reader: EventStream, count: int, timeout: float = 10, **kwargs) -> list[Event]:
    text = reader.wait_text(lambda t: len(events(t, **kwargs)) >= count, timeout, f"{count} events")
    return events(text, **kwargs)


def manage(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``manage.py``-style commands of the test project in a separate process."""
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


FAULT_FIGURES: list[dict] = []  # filled by tally(), printed at the end of the run


def tally(scenario: str, sent: list, received: list) -> dict:
    """Figures for a fault scenario: what was sent vs what the subscriber got."""
    seen: set = set()
    duplicated = 0
    for item in received:
        duplicated += item in seen
        seen.add(item)
    order = [sent.index(r) for r in dict.fromkeys(received) if r in sent]
    reordered = sum(1 for a, b in itertools.pairwise(order) if b < a)
    figures = {
        "scenario": scenario,
        "sent": len(sent),
        "received": len(received),
        "duplicated": duplicated,
        "reordered": reordered,
        "missing": len(set(sent) - set(received)),
    }
    FAULT_FIGURES.append(figures)
    return figures


def pytest_terminal_summary(terminalreporter) -> None:
    if not FAULT_FIGURES:
        return
    db = os.environ.get("GES_TEST_DB", "sqlite")
    terminalreporter.section(f"fault scenarios ({db})")
    for f in FAULT_FIGURES:
        terminalreporter.write_line(
            f"{f['scenario']:<44} sent {f['sent']:>5}  received {f['received']:>5}  "
            f"duplicated {f['duplicated']}  reordered {f['reordered']}  missing {f['missing']}"
        )

"""The tutorial (docs/tutorial.md), followed as written in a fresh project: from `django-admin
startproject` to two browser windows showing the same notices, live.

Every block of the page is used, found by its first line (a file block's first line names
its file), and an unused block fails the test, so a step added to the page is followed too.
Step 1's commands run as written (`django-admin startproject mysite`, `cd mysite`, `python
manage.py startapp notices`); the files of steps 2 to 6 are appended or written where their
first line says; step 7's commands run, runserver and `manage.py runpushpin` stay up, and two
windows of headless Chromium open the page through Pushpin. A notice posted with the page's
form shows in both windows, so does the tutorial's `announce` from `manage.py shell`; a
reloaded window lists what was posted once and goes on live. Step 8: runpushpin stopped with
Ctrl-C (SIGINT), the tutorial's second `announce` logged instead of raised (and, as the page
says, one without the setting raises PublishError after its commit), runpushpin started again,
and the missed notices reach both open windows, without duplicates unless htmx 2's SSE
extension replaced the stream (the caveat the page describes; then exactly those).

Where the test departs from the page, and why:

* `python -m venv`, `. .venv/bin/activate` and `pip install grip-eventstream` are not run:
  the wheel of this checkout (tests/test_quickstart.py's ``built_package``) is first on
  PYTHONPATH instead, so what a `pip install` ships is what runs.
* Ports: runserver, Pushpin and its control port get free ports (the address argument,
  ``--target`` and ``--port``, and GRIP_URL's 5561 replaced), so that tests can run side by
  side; runserver runs with ``--noreload``, so no autoreloader child outlives its stop.
* htmx comes from unpkg.com on the page, which this machine cannot reach (and a test must not
  hang on a CDN): the two script URLs, and nothing else of the template, are rewritten to the
  same files of the same versions, installed from the npm registry by the ``npm_packages``
  fixture and served by a tiny HTTP server thread on 127.0.0.1. It is another origin than
  the page's, as unpkg.com is, so the browser loads them the way it would from the CDN.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests import browser
from tests.procs import Program, free_ports, wait_for
from tests.test_docs import FENCE
from tests.test_quickstart import built_package

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or ""),
]

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"

__all__ = ["built_package"]  # the Quickstart test's fixture: the wheel of this checkout


def tutorial_blocks() -> list[str]:
    """The code of every fenced block of the tutorial, in order."""
    return [match["code"] for match in FENCE.finditer(TUTORIAL.read_text())]


@dataclass
class Tutorial:
    """The page's blocks, each found by its first line; remembers which were followed."""

    blocks: list[str] = field(default_factory=tutorial_blocks)
    used: list[str] = field(default_factory=list)

    def block(self, first_line: str) -> str:
        found = [code for code in self.blocks if code.split("\n", 1)[0].startswith(first_line)]
        assert len(found) == 1, f"the tutorial has {len(found)} blocks starting {first_line!r}"
        self.used.append(found[0])
        return found[0]

    def unused(self) -> list[str]:
        return [code.split("\n", 1)[0] for code in self.blocks if code not in self.used]


# Step 1's lines that a test in this checkout's environment stands in for (see above).
NOT_RUN = {
    ("python", "-m", "venv", ".venv"),
    (".", ".venv/bin/activate"),
    ("pip", "install", "grip-eventstream"),
}


def commands(code: str) -> list[list[str]]:
    """A shell block's commands, as argument lists."""
    return [shlex.split(line) for line in code.splitlines() if line.strip()]


def argv(words: list[str]) -> list[str]:
    """A command of the page, run by this test's Python (the environment the page sets up)."""
    program, *args = words
    if program == "python":
        return [sys.executable, *args]
    if program == "django-admin":
        return [sys.executable, "-m", "django", *args]
    raise AssertionError(f"the tutorial runs {program!r}, which this test cannot stand in for")


@dataclass
class Project:
    path: Path
    env: dict[str, str]
    control_port: int
    tutorial: Tutorial

    def run(self, words: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv(words),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def write(self, first_line: str, edit: Callable[[str], str] | None = None) -> None:
        """The file block starting with ``first_line``, where its first line says.

        ``# path: add at the end`` is appended; ``# path`` and ``{# path #}`` are the whole
        file (startapp's stubs of models.py and views.py, and urls.py, are replaced).
        """
        code = self.tutorial.block(first_line)
        if edit is not None:
            code = edit(code)
        head = code.split("\n", 1)[0]
        name = re.fullmatch(r"(?:# ([\w./-]+)(: add at the end)?|\{# ([\w./-]+) #\})", head)
        assert name is not None, f"no file named on the first line {head!r}"
        path = self.path / (name[1] or name[3])
        if name[2]:
            assert path.is_file(), f"{path} should exist to be added to"
            with path.open("a") as file:
                file.write("\n" + code)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)


@pytest.fixture
def project(built_package: Path, tmp_path: Path, npm_url: Callable[[str], str]) -> Project:
    """Steps 1 to 6, and step 7's commands up to runserver."""
    tutorial = Tutorial()
    (control_port,) = free_ports(1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GES_"))},
        "PYTHONPATH": str(built_package),
    }
    cwd = tmp_path / "work"
    cwd.mkdir()

    # 1. A project and an app
    for words in commands(tutorial.block("python -m venv .venv")):
        if tuple(words) in NOT_RUN:
            continue
        if words[0] == "cd":
            cwd = cwd / words[1]
            continue
        done = subprocess.run(
            argv(words), cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{shlex.join(words)}: {done.stdout}{done.stderr}"
    project = Project(cwd, env, control_port, tutorial)
    where = project.run(["python", "-c", "import grip_eventstream as g; print(g.__file__)"])
    # The wheel, not the checkout.
    assert where.stdout.startswith(str(built_package)), where

    def control_port_moved(settings: str) -> str:
        assert settings.count("127.0.0.1:5561") == 1, settings
        return settings.replace("127.0.0.1:5561", f"127.0.0.1:{control_port}")

    def htmx_made_local(page: str) -> str:
        unpkg = re.findall(r'<script src="(https://unpkg\.com/[^"]+)"></script>', page)
        assert len(unpkg) == 2, unpkg  # htmx and its SSE extension
        assert page.count("https://") == 2, "only the two script URLs are rewritten"
        for url in unpkg:
            page = page.replace(url, npm_url(url))
        return page

    # 2 to 6: settings (only the control port moved), model, views, templates, URLs.
    project.write("# mysite/settings.py: add at the end", control_port_moved)
    project.write("# notices/models.py")
    project.write("# notices/views.py")
    project.write("{# notices/templates/notices/notice.html #}")
    project.write("{# notices/templates/notices/index.html #}", htmx_made_local)
    project.write("# mysite/urls.py")

    # 7. Run it: the commands before runserver.
    *setup, run = commands(tutorial.block("python manage.py makemigrations notices"))
    assert run == ["python", "manage.py", "runserver"], run
    for words in setup:
        done = project.run(words)
        assert done.returncode == 0, f"{shlex.join(words)}: {done.stdout}{done.stderr}"
    assert (cwd / "notices" / "migrations" / "0001_initial.py").is_file()
    # The settings are clean: WAL, a key of 32 bytes and the rest.
    check = project.run(["python", "manage.py", "check", "--fail-level", "WARNING"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout
    return project


# --------------------------------------------------------------------------------------------
# htmx, from the npm registry instead of unpkg.com


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def npm_url(npm_packages: Path) -> Iterator[Callable[[str], str]]:
    """Serve ``npm_packages`` on 127.0.0.1; map an unpkg.com URL to the same file there.

    ``https://unpkg.com/NAME@VERSION/PATH`` is PATH in the installed package whose
    package.json has that name and version, or the test fails: the page's versions must be
    the ones the tests install.
    """
    handler = functools.partial(_QuietHandler, directory=str(npm_packages))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="npm files", daemon=True)
    thread.start()

    def local(url: str) -> str:
        match = re.fullmatch(r"https://unpkg\.com/([\w.-]+)@([\w.-]+)/([\w./-]+)", url)
        assert match is not None, url
        name, version, path = match.groups()
        for package in sorted(npm_packages.iterdir()):
            meta = package / "package.json"
            if not meta.is_file():
                continue
            info = json.loads(meta.read_text())
            if (info.get("name"), info.get("version")) == (name, version):
                assert (package / path).is_file(), f"{package / path} is not installed"
                return f"http://127.0.0.1:{server.server_port}/{package.name}/{path}"
        raise AssertionError(
            f"{name}@{version} is not among the npm packages the tests install "
            "(tests/conftest.py NPM_PACKAGES): the tutorial and the tests disagree"
        )

    try:
        yield local
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --------------------------------------------------------------------------------------------
# runserver and runpushpin


@dataclass
class Servers:
    project: Project
    tmp_path: Path
    stack: contextlib.ExitStack
    app_port: int
    http_port: int
    runpushpin: Program | None = None
    starts: int = 0

    @property
    def pushpin_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def runserver_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def start_runpushpin(self) -> Program:
        """The page's `python manage.py runpushpin`, in front of runserver, on our ports."""
        (words,) = commands(self.project.tutorial.block("python manage.py runpushpin"))
        self.starts += 1
        program = Program(
            [*argv(words), f"--target=127.0.0.1:{self.app_port}", f"--port={self.http_port}"],
            cwd=self.project.path,
            env={**self.project.env, "PYTHONUNBUFFERED": "1"},
            log_path=self.tmp_path / f"runpushpin-{self.starts}.log",
            ready=lambda log: "Quit with CONTROL-C" in log,
        )
        self.runpushpin = self.stack.enter_context(program)
        assert f"Open {self.pushpin_url}/" in program.log()
        return program

    def ctrl_c_runpushpin(self) -> None:
        """Ctrl-C in runpushpin's terminal: SIGINT, and wait until it has stopped Pushpin."""
        program = self.runpushpin
        assert program is not None
        assert program.pid is not None
        os.kill(program.pid, signal.SIGINT)
        wait_for(lambda: not program.running, 20, "runpushpin to exit", log=program.log_path)
        program.stop()  # forgets it (and kills whatever it may have left in its group)
        assert "Pushpin stopped." in program.log()
        with socket.socket() as probe:  # the port is free for the next start
            assert probe.connect_ex(("127.0.0.1", self.http_port)) != 0


@pytest.fixture
def servers(project: Project, tmp_path: Path) -> Iterator[Servers]:
    app_port, http_port = free_ports(2)
    with contextlib.ExitStack() as stack:
        servers = Servers(project, tmp_path, stack, app_port, http_port)
        # Step 7's last command, with an address: `python manage.py runserver`.
        (*_, words) = commands(project.tutorial.block("python manage.py makemigrations notices"))
        stack.enter_context(
            Program(
                [*argv(words), f"127.0.0.1:{app_port}", "--noreload"],
                cwd=project.path,
                env=project.env,
                log_path=tmp_path / "runserver.log",
                ready=lambda log: "Quit the server with" in log,
            )
        )
        servers.start_runpushpin()
        yield servers


# --------------------------------------------------------------------------------------------
# the page, in windows of one browser

NOTICES = """
return [...document.querySelectorAll('#notices li')].map((li) => {
  const time = li.querySelector('time');
  return {time: time && time.textContent, text: li.textContent.replace(time.textContent, '')
    .trim(), elements: li.children.length};
});
"""
# The EventSource htmx's SSE extension opened for the page (htmx 2 keeps it in the element's
# internal data).
SOURCE = "document.querySelector('[sse-connect]')['htmx-internal-data']?.sseEventSource"
# The form's requests, for the messages of failures.
RECORD_POSTS = """
window.posts = [];
document.body.addEventListener('htmx:afterRequest',
  (event) => window.posts.push(event.detail.xhr.status));
"""


@dataclass
class Window:
    """One browser window on the page; what it rendered and what reached it since."""

    driver: Any
    handle: str
    rendered: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)

    def use(self) -> Any:
        self.driver.switch_to.window(self.handle)
        return self.driver

    def notices(self) -> list[str]:
        items = self.use().execute_script(NOTICES)
        for item in items:
            # The fragment's markup: a time, then the text, escaped (no element of its own).
            assert re.fullmatch(r"\d\d:\d\d:\d\d", item["time"] or ""), item
            assert item["elements"] == 1, item
        return [item["text"] for item in items]

    def open(self, url: str) -> None:
        """Load the page and wait until its stream is open."""
        self.use().get(url)
        self.rendered, self.live = self.notices(), []
        driver = self.use()
        driver.execute_script(RECORD_POSTS)
        self.wait(lambda: self.stream_state() == 1, "an open stream")
        # The stream starts where the rendered list ends: the cursor the view rendered.
        stream_url = driver.execute_script(f"return {SOURCE}.url")
        assert re.search(r"/events/\?lastEventId=[\w.:-]+$", stream_url), stream_url
        driver.execute_script(f"window.firstSource = {SOURCE};")

    def stream_state(self) -> int | None:
        """The page's EventSource's readyState: 0 connecting, 1 open, 2 closed."""
        return self.use().execute_script(f"return {SOURCE}?.readyState")

    def stream_replaced(self) -> bool:
        """Whether htmx's SSE extension gave up the page's EventSource for a new one."""
        return bool(self.use().execute_script(f"return {SOURCE} !== window.firstSource"))

    def post(self, text: str) -> None:
        """Type a notice into the page's form and press its button."""
        driver = self.use()
        field_ = driver.find_element(By.NAME, "text")
        field_.send_keys(text)
        driver.find_element(By.CSS_SELECTOR, "form button").click()
        # Reset by hx-on::after-request once the POST succeeded.
        self.wait(lambda: field_.get_attribute("value") == "", "the form reset after its POST")
        assert driver.execute_script("return window.posts") == [204]
        driver.execute_script("window.posts = []")

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 15) -> None:
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _: condition())
        except Exception as exc:
            driver = self.use()
            raise AssertionError(
                f"no {what} within {timeout:g} s; the window shows {self.notices()!r}, "
                f"its stream is in state {self.stream_state()}, "
                f"its form's requests answered {driver.execute_script('return window.posts')}"
            ) from exc

    def wait_for_notices(self, expected: list[str], timeout: float = 15) -> None:
        # The last one expected arrived; then the whole list is compared, duplicates and all.
        self.wait(lambda: len(self.notices()) >= len(expected), f"notices {expected!r}", timeout)
        time.sleep(0.2)  # a duplicate would come right behind
        assert self.notices() == expected


ANNOUNCE = 'python manage.py shell -c "from notices.views import announce; announce'


def test_the_tutorial_works_as_written(project: Project, servers: Servers, driver):
    tutorial = project.tutorial
    page = f"{servers.pushpin_url}/"
    # The page loads on runserver's own port, but its stream is refused there.
    assert requests.get(f"{servers.runserver_url}/", timeout=10).status_code == 200
    with requests.get(f"{servers.runserver_url}/events/", timeout=10, stream=True) as refused:
        assert refused.status_code == 400

    # "Open http://127.0.0.1:7999/ in two browser windows and post a notice in one."
    one = Window(driver, driver.current_window_handle)
    one.open(page)
    driver.switch_to.new_window("window")
    two = Window(driver, driver.current_window_handle)
    two.open(page)
    assert one.rendered == two.rendered == []
    windows = (one, two)

    def shows_everywhere(text: str) -> None:
        for window in windows:
            window.live.append(text)
            window.wait_for_notices(window.rendered + window.live)

    posted = "Lunch at <b>noon</b> & tea at four"  # shown as typed: Django escapes it
    one.post(posted)
    shows_everywhere(posted)

    # "From a third terminal": the shell command, as written.
    (words,) = commands(tutorial.block(f"{ANNOUNCE}('Hello"))
    greeting = re.search(r"announce\('([^']+)'\)", words[-1])
    assert greeting is not None, words
    sent = project.run(words)
    assert sent.returncode == 0, sent.stderr
    shows_everywhere(greeting[1])

    # A reload lists everything once, from the database, and goes on from there.
    two.open(page)
    assert two.rendered == [posted, greeting[1]]
    two.post("Posted after a reload")
    shows_everywhere("Posted after a reload")

    # 8. Take Pushpin away: Ctrl-C, the shell command, runpushpin again.
    servers.ctrl_c_runpushpin()
    (words,) = commands(tutorial.block(f"{ANNOUNCE}('Sent"))
    missed = re.search(r"announce\('([^']+)'\)", words[-1])
    assert missed is not None, words
    sent = project.run(words)
    # Saved, stored and logged, not raised (EVENTSTREAM_PUBLISH_ERRORS = "log").
    assert sent.returncode == 0, sent.stderr
    assert "send_event could not publish on channel 'notices'" in sent.stderr, sent.stderr
    # "Without the setting, announce would raise PublishError after the commit; the pages
    # would catch up all the same."
    raised = "Raised while Pushpin was down"
    without = project.run(
        [
            "python",
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; settings.EVENTSTREAM_PUBLISH_ERRORS = 'raise'; "
            f"from notices.views import announce; announce({raised!r})",
        ]
    )
    assert without.returncode != 0
    assert "PublishError: " in without.stderr, without.stderr
    servers.start_runpushpin()

    def arrived(window: Window) -> bool:
        return raised in window.notices()

    for window in windows:
        window.wait(functools.partial(arrived, window), "the missed notices", timeout=30)
        if window.stream_replaced():
            # The page's caveat: htmx 2's SSE extension reopened the stream with the URL the
            # page was rendered with, so what arrived since the page loaded shows twice.
            window.live = [*window.live, *window.live]
        window.live += [missed[1], raised]
        window.wait_for_notices(window.rendered + window.live)
    # And on, live, in both.
    one.post("Back to normal")
    shows_everywhere("Back to normal")

    assert tutorial.unused() == [], "blocks of the tutorial this test did not follow"

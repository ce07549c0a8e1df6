"""The documentation's Quickstart, followed as written in a fresh project, with the package
as built.

A wheel is built from this checkout and unpacked in front of everything else on the
path (its dependencies come from the test environment), so that what a `pip install` ships
is what runs: migrations, static files and commands included. Then `django-admin
startproject`, the Quickstart's snippets (docs/quickstart.md) appended to settings.py and
urls.py as they stand, and its template written where its first line says (only the
control port is moved to a free one), `manage.py check` without a warning, `migrate`,
`runserver`, `runpushpin`, and the send snippet in `manage.py shell` reaching a stream
opened through Pushpin and the Quickstart's page in headless Chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.wait import WebDriverWait

from grip_eventstream.sseclient import EventStream
from tests import browser
from tests.procs import Program, free_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


QUICKSTART = ROOT / "docs" / "quickstart.md"
# The template's first line names the file: {# templates/live.html: ... #}
TEMPLATE_BLOCK = "{# templates/"


def quickstart_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the Quickstart section, in order."""
    page = QUICKSTART.read_text()
    start = page.index("\n## Quickstart\n")
    end = page.find("\n## ", start + 1)
    section = page[start : end if end >= 0 else len(page)]
    return re.findall(r"^```([\w+-]+)\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)


def block(first_line: str) -> str:
    found = [code for _, code in quickstart_blocks() if code.startswith(first_line)]
    assert len(found) == 1, f"the Quickstart has {len(found)} blocks starting {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def built_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, unpacked: a directory to put first on PYTHONPATH."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    # A copy, so that the build leaves nothing in the checkout.
    shutil.copytree(
        ROOT / "grip_eventstream",
        source / "grip_eventstream",
        ignore=shutil.ignore_patterns("__pycache__"),
        symlinks=True,
    )
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = work.glob("grip_eventstream-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


@dataclass
class Project:
    path: Path
    env: dict[str, str]
    control_port: int

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def project(built_package: Path, tmp_path: Path) -> Project:
    (control_port,) = free_ports(1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GES_"))},
        "PYTHONPATH": str(built_package),
    }
    path = tmp_path / "project"
    path.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(path)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    settings = block("# settings.py").replace("127.0.0.1:5561", f"127.0.0.1:{control_port}")
    assert str(control_port) in settings
    with (path / "mysite" / "settings.py").open("a") as file:
        file.write("\n" + settings)
    with (path / "mysite" / "urls.py").open("a") as file:
        file.write("\n" + block("# urls.py"))
    template = block(TEMPLATE_BLOCK)
    name = re.match(r"\{# (templates/[\w./-]+\.html)\b", template)
    assert name is not None, template.splitlines()[0]
    (path / name[1]).parent.mkdir(parents=True, exist_ok=True)
    (path / name[1]).write_text(template)
    project = Project(path, env, control_port)
    where = project.manage("shell", "-c", "import grip_eventstream as g; print(g.__file__)")
    # The wheel, not the checkout.
    assert where.stdout.splitlines()[-1].startswith(str(built_package)), where
    migrate = project.manage("migrate", "-v", "0")
    assert migrate.returncode == 0, migrate.stderr
    return project


@pytest.fixture
def servers(project: Project, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """runserver, and runpushpin in front of it: (Pushpin's URL, runserver's URL)."""
    app_port, http_port = free_ports(2)
    manage = [sys.executable, "manage.py"]
    runserver = Program(
        [*manage, "runserver", f"127.0.0.1:{app_port}", "--noreload"],
        cwd=project.path,
        env=project.env,
        log_path=tmp_path / "runserver.log",
        ready=lambda log: "Quit the server with" in log,
    )
    runpushpin = Program(
        [
            *manage,
            "runpushpin",
            f"--target=127.0.0.1:{app_port}",
            f"--port={http_port}",
            f"--control-port={project.control_port}",
        ],
        cwd=project.path,
        env={**project.env, "PYTHONUNBUFFERED": "1"},
        log_path=tmp_path / "runpushpin.log",
        ready=lambda log: "Quit with CONTROL-C" in log,
    )
    with runserver, runpushpin:
        assert f"Open http://127.0.0.1:{http_port}/" in runpushpin.log()
        yield f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{app_port}"


def test_the_quickstart_works_as_written(project: Project, servers: tuple[str, str]):
    pushpin, _ = servers
    # The project came up with no warning: SQLite options, a key of 32 bytes and more.
    check = project.manage("check", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout

    with EventStream(f"{pushpin}/events/") as stream:
        assert stream.status == 200
        sent = project.manage("shell", "-c", block("from grip_eventstream import send_event"))
        assert sent.returncode == 0, sent.stderr
        event = stream.next(timeout=15)
    assert (event.type, event.json()) == ("message", {"text": "hello world"})

    # The static client, through Pushpin, as a page of the project would load it.
    script = requests.get(f"{pushpin}/static/grip_eventstream/eventsource.js", timeout=10)
    assert script.status_code == 200
    assert "GripEventSource" in script.text


def test_a_stream_opened_on_runserver_is_refused_and_logged(
    project: Project, servers: tuple[str, str]
):
    _, runserver = servers
    with EventStream(f"{runserver}/events/") as stream:
        assert stream.status == 400
        stream.wait_ended(timeout=10)
    log = (project.path.parent / "runserver.log").read_text()
    # The explanation is in the server's log too, not only in the response the browser drops.
    assert (
        "did not come through a GRIP proxy (no Grip-Sig): "
        "open the page through Pushpin's port instead" in log
    ), log


def page_items(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#events li')].map((li) => li.textContent)"
    )


@pytest.mark.browser
@pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")
def test_the_quickstart_page_shows_the_event_in_a_browser(
    project: Project, servers: tuple[str, str], driver
):
    pushpin, _ = servers
    driver.get(f"{pushpin}/")
    # The page loaded the package's client through Pushpin, and opened the stream with the
    # cursor it was rendered with: an event sent from now on reaches it, live or replayed.
    assert driver.execute_script("return typeof GripEventSource") == "function"
    url = driver.execute_script("return source.url")
    assert re.search(r"/events/\?lastEventId=[a-z0-9.-]+$", url), url

    sent = project.manage("shell", "-c", block("from grip_eventstream import send_event"))
    assert sent.returncode == 0, sent.stderr

    def shown(_driver) -> bool:
        return page_items(driver) == ["hello world"]

    try:
        WebDriverWait(driver, 20, poll_frequency=0.1).until(shown)
    except TimeoutException:
        raise AssertionError(
            f"the page shows {page_items(driver)!r}, not the event; its stream is in state "
            f"{driver.execute_script('return source.readyState')}"
        ) from None

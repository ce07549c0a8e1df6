"""docs/testing.md's examples pass as written, in a user's project.

A fresh `startproject` gets the Quickstart's settings without `GRIP_URL` (test settings
that name no proxy, with storage enabled as the docs recommend, on SQLite), an app with
the code the examples call (written here as a user would: `post_comment`, `create_order`,
the `/comments/` view, `/events/` and `/inbox/` with a channel manager that makes
`inbox-<pk>` private), the page's conftest block as conftest.py, and every Python block of
the page that defines a test function, verbatim, as a test file of its own. pytest then
runs there in a subprocess, as the user would: every example passes, none is skipped.
The `eventstream_pushpin` examples start the `pushpin` found on PATH (1.36, or 1.41 in
scripts/test's last pass).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_docs import python_blocks
from tests.test_quickstart import block as quickstart_block

ROOT = Path(__file__).resolve().parent.parent
PAGE = "docs/testing.md"


def page_blocks() -> list[tuple[str, str]]:
    """(where, code) of each ```python block of docs/testing.md, found as test_docs finds them."""
    return [(where, code) for where, code in python_blocks() if where.startswith(PAGE + ":")]


def defined_tests(code: str) -> list[str]:
    return [
        node.name
        for node in ast.parse(code).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def conftest_block() -> str:
    found = [code for _, code in page_blocks() if code.startswith("# conftest.py")]
    assert len(found) == 1, f"{PAGE} has {len(found)} blocks starting '# conftest.py'"
    return found[0]


def example_blocks() -> dict[str, str]:
    """Each block that defines a test function, under the test file name it is written to."""
    examples = {
        f"test_testing_md_line_{where.split(':')[1]}.py": code
        for where, code in page_blocks()
        if defined_tests(code)
    }
    # The extraction misses none: as many test functions as the page's blocks define.
    defined = sum(len(re.findall(r"^def test_", code, re.M)) for _, code in page_blocks())
    assert sum(len(defined_tests(code)) for code in examples.values()) == defined
    # Both fixtures have examples (an empty page would make the run pass vacuously).
    assert any("eventstream_outbox" in code for code in examples.values())
    assert any("eventstream_pushpin" in code for code in examples.values())
    return examples


# The user's code the examples call; docs/testing.md describes it.
APP_FILES = {
    "myapp/__init__.py": "",
    "myapp/models.py": """
        from django.db import models


        class Order(models.Model):
            created = models.DateTimeField(auto_now_add=True)
    """,
    "myapp/services.py": """
        from django.db import transaction

        from grip_eventstream import send_event

        from .models import Order


        def post_comment(text):
            send_event("comments", "comment", {"text": text})


        def create_order():
            with transaction.atomic():
                order = Order.objects.create()
                send_event("orders", "created", {"id": order.pk})
            return order
    """,
    "myapp/views.py": """
        from django.http import HttpResponse
        from django.views.decorators.http import require_POST

        from .services import post_comment


        @require_POST
        def comment(request):
            post_comment(request.POST["text"])
            return HttpResponse(status=204)
    """,
    "myapp/channels.py": """
        from grip_eventstream.channelmanager import DefaultChannelManager


        class ChannelManager(DefaultChannelManager):
            def can_read_channel(self, user, channel):  # user is None when anonymous
                if channel.startswith("inbox-"):
                    return user is not None and channel == f"inbox-{user.pk}"
                return True
    """,
}

URLS = """
from django.urls import include, path

import grip_eventstream
from myapp import views

urlpatterns += [
    path("comments/", views.comment),
    path("events/", include(grip_eventstream.urls), {"channels": ["comments"]}),
    path("inbox/", include(grip_eventstream.urls)),  # ?channel=inbox-<user pk>
]
"""

SETTINGS = """
INSTALLED_APPS += ["myapp"]
EVENTSTREAM_CHANNELMANAGER_CLASS = "myapp.channels.ChannelManager"
"""

PYTEST_INI = """\
[pytest]
DJANGO_SETTINGS_MODULE = mysite.settings
filterwarnings =
    error
"""


@dataclass
class Project:
    path: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GES_"))},
        "PYTHONPATH": str(ROOT),
    }
    path = tmp_path_factory.mktemp("testing_docs") / "project"
    path.mkdir()
    project = Project(path, env)
    made = project.run("-m", "django", "startproject", "mysite", str(path))
    assert made.returncode == 0, made.stderr
    # The Quickstart's settings, without a proxy: test settings that leave GRIP_URL out.
    quickstart = quickstart_block("# settings.py")
    settings = "\n".join(
        line for line in quickstart.splitlines() if not line.startswith("GRIP_URL")
    )
    assert settings != quickstart
    assert "GRIP_" not in settings
    assert 'EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"' in settings
    with (path / "mysite" / "settings.py").open("a") as file:
        file.write("\n" + settings + "\n" + SETTINGS)
    with (path / "mysite" / "urls.py").open("a") as file:
        file.write("\n" + URLS)
    for name, text in APP_FILES.items():
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(textwrap.dedent(text).lstrip())
    migrations = project.run("manage.py", "makemigrations", "myapp", "-v", "0")
    assert migrations.returncode == 0, migrations.stdout + migrations.stderr
    (path / "pytest.ini").write_text(PYTEST_INI)
    (path / "conftest.py").write_text(conftest_block())
    for name, code in example_blocks().items():
        (path / name).write_text(code)
    return project


def test_settings_without_a_proxy_are_only_a_warning(project: Project):
    check = project.run("manage.py", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    reported = re.findall(r"\(([\w.]+\.[CEWID]\d{3})\)", check.stdout + check.stderr)
    assert reported == ["grip_eventstream.W008"], check.stdout + check.stderr
    assert "ERRORS" not in check.stderr


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_examples_pass_as_written(project: Project):
    basetemp = project.path.parent / "pytest-tmp"  # beside the project: Pushpin's log
    result = project.run(
        "-m", "pytest", "-p", "no:cacheprovider", "-v", f"--basetemp={basetemp}", timeout=240
    )
    version = project.run("-c", "from grip_eventstream import pushpin; print(pushpin.version())")
    logs = "".join(f"\n== {log}\n{log.read_text()}" for log in basetemp.rglob("pushpin.log"))
    output = f"{result.stdout}{result.stderr}\n== Pushpin {version.stdout.strip()}{logs}"
    assert result.returncode == 0, output
    passed = re.findall(r"^(test_\w+\.py)::(\w+) PASSED", result.stdout, re.M)
    expected = [
        (name, test)
        for name, code in sorted(example_blocks().items())
        for test in defined_tests(code)
    ]
    assert sorted(passed) == sorted(expected), output
    # Every test run is an example, and each passed: none skipped, none added.
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"=+ {len(expected)} passed in [\d.]+s(?: \([\d:]+\))? =+", summary), (
        output
    )

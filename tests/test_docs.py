"""The documentation cannot go stale silently: its code compiles, and the reference pages
list everything the code defines.

* every ```python block of docs/*.md and README.md compiles (compile(), never exec);
* the settings page names every setting grip_eventstream/conf.py reads;
* the system checks page names every check id grip_eventstream/checks.py can report;
* README.md (also the package's long description) stays short, starts with the two
  commands for contributors, and has no relative links, which would break on PyPI.

The Sphinx build itself (warnings as errors) is a step of scripts/test; the Quickstart is
followed in a fresh project by tests/test_quickstart.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PACKAGE = ROOT / "grip_eventstream"

# A fenced block: its info string's first word and its text, up to the matching fence.
FENCE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<code>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)


def pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), README]


def python_blocks() -> list[tuple[str, str]]:
    """(where, code) of every ```python block of the documentation and the README."""
    found = []
    for page in pages():
        text = page.read_text()
        for match in FENCE.finditer(text):
            words = match["info"].split()
            if words and words[0] in ("python", "py", "python3"):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match["code"]))
    return found


def test_the_documentation_has_python_blocks():
    # The parser finds them: an empty list would make the next test pass vacuously.
    assert len(python_blocks()) > 30
    assert {where.split(":")[0] for where, _ in python_blocks()} >= {
        "docs/quickstart.md",
        "docs/tutorial.md",
        "docs/settings.md",
        "README.md",
    }


PYTHON_BLOCKS = python_blocks()


@pytest.mark.parametrize(("where", "code"), PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_block_compiles(where: str, code: str):
    compile(code, where, "exec")


def settings_read_by_the_package() -> set[str]:
    """Every setting conf.py reads: each is read through _get("NAME", default)."""
    names = set(re.findall(r'_get\(\s*"([A-Z][A-Z0-9_]*)"', (PACKAGE / "conf.py").read_text()))
    assert len(names) >= 18, names  # the reader found them
    return names


def test_the_settings_page_lists_every_setting():
    from grip_eventstream.conf import Settings

    page = (DOCS / "settings.md").read_text()
    properties = {name for name, value in vars(Settings).items() if isinstance(value, property)}
    names = settings_read_by_the_package() | properties
    # Each has a section of its own (### `NAME`) and a row in the summary table.
    missing_sections = sorted(n for n in names if f"### `{n}`" not in page)
    missing_rows = sorted(n for n in names if f"| `{n}` |" not in page)
    assert not missing_sections, f"docs/settings.md has no section for {missing_sections}"
    assert not missing_rows, f"docs/settings.md's table has no row for {missing_rows}"


def test_the_settings_page_has_no_setting_the_package_does_not_read():
    page = (DOCS / "settings.md").read_text()
    documented = set(re.findall(r"^### `([A-Z][A-Z0-9_]*)`", page, re.M))
    assert documented == settings_read_by_the_package()


def check_ids() -> set[str]:
    source = (PACKAGE / "checks.py").read_text()
    ids = set(re.findall(r'id="(grip_eventstream\.[EW]\d{3})"', source))
    assert ids, "no check id found in grip_eventstream/checks.py"
    return ids


def test_the_checks_page_lists_every_check_id():
    page = (DOCS / "checks.md").read_text()
    documented = set(re.findall(r"^\| `(grip_eventstream\.[EW]\d{3})` \|", page, re.M))
    assert sorted(check_ids() - documented) == [], "docs/checks.md misses these check ids"
    assert sorted(documented - check_ids()) == [], "docs/checks.md lists ids checks.py lacks"


def test_every_page_is_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([a-z][a-z0-9-]*)$", index, re.M))
    pages_ = {p.stem for p in DOCS.glob("*.md")} | {p.stem for p in DOCS.glob("*.rst")}
    assert pages_ - {"index"} <= listed


def test_the_changelog_page_includes_the_changelog():
    assert "{include} ../CHANGELOG.md" in (DOCS / "changelog.md").read_text()


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; at most 150"


def test_the_readme_starts_with_the_two_commands_for_contributors():
    text = README.read_text()
    first = FENCE.search(text)
    assert first is not None
    assert text.index("## ") > first.start(), "the commands come before the first section"
    commands = [line.split("#")[0].strip() for line in first["code"].splitlines()]
    assert commands == ["scripts/demo", "scripts/test"]


def test_the_readme_has_no_relative_links():
    # README.md is the long description on PyPI, where relative links lead nowhere.
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)", text) + re.findall(r'(?:src|href)="([^"]+)"', text)
    relative = [t for t in targets if not re.match(r"(https?:|mailto:)", t)]
    assert relative == []


def test_the_quickstart_page_is_the_one_the_quickstart_test_follows():
    from tests.test_quickstart import block

    assert block("# settings.py").startswith("# settings.py: add at the end")
    assert block("# urls.py").startswith("# urls.py: add at the end")
    assert "GripEventSource" in block("{# templates/live.html")
    assert "send_event(" in block("from grip_eventstream import send_event")

"""The wheel, as `python -m build` makes it: every file the app needs at run time, and the
metadata PyPI shows.

One build per session (a copy of the checkout, so that nothing is left in it; pip fetches
the build backend, as in scripts/test's package step). Marked ``packaging`` so that the
suite's other passes (PostgreSQL, the matrix) can leave it out: the wheel does not depend
on the database or the interpreter.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "grip_eventstream"

# What the package supports (the README's Quickstart), as trove classifiers.
PYTHONS = ("3.11", "3.12", "3.13")
DJANGOS = ("5.2", "6.0", "6.1")

pytestmark = pytest.mark.packaging


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    return parser


def data_files() -> list[str]:
    """Files the app reads at run time besides its modules, relative to the package."""
    files = [
        path.relative_to(PACKAGE).as_posix()
        for folder in ("static", "templates")
        for path in sorted((PACKAGE / folder).rglob("*"))
        if path.is_file()
    ]
    return [*files, "py.typed"]


def migrations() -> list[str]:
    return sorted(
        path.relative_to(PACKAGE).as_posix() for path in (PACKAGE / "migrations").glob("*.py")
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    # A copy of what the build reads, so that build/ and *.egg-info stay out of the checkout.
    shutil.copytree(
        PACKAGE,
        source / "grip_eventstream",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (work / "dist").glob("grip_eventstream-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(wheel.read(name).decode("utf-8"))


def test_the_wheel_holds_every_data_file_and_migration(wheel):
    names = set(wheel.namelist())
    wanted = [f"grip_eventstream/{name}" for name in [*data_files(), *migrations()]]
    assert "grip_eventstream/static/grip_eventstream/json2.js" in wanted
    assert "grip_eventstream/templates/grip_eventstream/browsable.html" in wanted
    assert "grip_eventstream/migrations/0001_initial.py" in wanted
    assert [name for name in wanted if name not in names] == []
    # Byte for byte what the checkout has.
    for name in wanted:
        assert wheel.read(name) == (ROOT / name).read_bytes(), name


def test_the_wheel_metadata_lists_every_supported_version(wheel):
    meta = metadata(wheel)
    assert meta["Version"] == setup_cfg()["metadata"]["version"]
    classifiers = set(meta.get_all("Classifier") or [])
    for python in PYTHONS:
        assert f"Programming Language :: Python :: {python}" in classifiers
    for django in DJANGOS:
        assert f"Framework :: Django :: {django}" in classifiers
    for classifier in (
        "Environment :: Web Environment",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Topic :: Internet :: WWW/HTTP",
        "Typing :: Typed",
    ):
        assert classifier in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert meta["Requires-Python"] == ">=3.11"


# --- without building: setup.cfg itself ---------------------------------------------------


def test_package_data_lists_every_data_file():
    # setuptools ships only what these patterns match (plus modules): a new static file
    # or template outside them would be missing from the wheel but not from the checkout.
    patterns = setup_cfg()["options.package_data"]["grip_eventstream"].split()
    unlisted = [
        name
        for name in data_files()
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    ]
    assert unlisted == []


def test_the_version_is_a_release():
    version = setup_cfg()["metadata"]["version"]
    # A final pre-1.0 release, as PyPI will show it: no .devN, aN, bN or rcN.
    assert version.split(".")[0] == "0"
    assert all(part.isdigit() for part in version.split(".")), version


def test_classifiers_name_exactly_the_supported_versions():
    classifiers = setup_cfg()["metadata"]["classifiers"].split("\n")
    pythons = {c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Programming Language")}
    djangos = {c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Framework :: Django ::")}
    assert pythons - {"3", "Only"} == set(PYTHONS)
    assert djangos == set(DJANGOS)


def test_the_matrix_runs_every_supported_version():
    import noxfile

    assert set(noxfile.PYTHON.values()) == set(PYTHONS)
    lowest = {re.fullmatch(r"Django>=(\d+\.\d+),<.*", spec) for spec in noxfile.DJANGO.values()}
    assert {match.group(1) for match in lowest if match} == set(DJANGOS)
    # Django 6 needs Python 3.12+: no leg pairs it with 3.11.
    assert noxfile.DJANGO["oldest"].startswith("Django>=5.")

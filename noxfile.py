"""The Django/Python matrix, run by scripts/test (see the README's Development section).

scripts/test itself runs the oldest supported combination in .venv (Python 3.11 and the
oldest Django the dev extras resolve to, pinned below); this file adds the others, one leg
per supported Django:

- ``oldest``: Python 3.11, Django 5.2 LTS (what .venv normally is);
- ``middle``: Python 3.12, Django 6.0;
- ``newest``: the newest Python 3.12+ on the machine (GES_NEWEST_PYTHON, found by
  scripts/test; 3.13 by default), the newest Django.

A leg's interpreter is GES_<LEG>_PYTHON when set (a path or a version), else ``pythonX.Y``
from PATH, else pyenv's newest X.Y.* (pyenv's shims on PATH run only the versions pyenv has
selected, so the binary is taken from its versions directory instead). Run one leg by hand
with ``.venv/bin/python -m nox -s middle -- -k replay``. The legs leave out the
``packaging`` tests: the wheel is the same whatever runs the suite, and scripts/test
builds it once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

DJANGO = {
    "oldest": "Django>=5.2,<5.3",
    "middle": "Django>=6.0,<6.1",
    "newest": "Django>=6.1,<6.2",
}
# The legs' Python versions (setup.cfg's classifiers list the same ones).
PYTHON = {"oldest": "3.11", "middle": "3.12", "newest": "3.13"}


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in path.name.split("."))


def interpreter(leg: str) -> str:
    """The Python of ``leg``: a path when one is found, else its version for nox to find."""
    version = PYTHON[leg]
    chosen = os.environ.get(f"GES_{leg.upper()}_PYTHON")
    if chosen:
        return chosen
    on_path = shutil.which(f"python{version}")
    if on_path and "shims" not in Path(on_path).parts:
        return on_path
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    installed = sorted(
        root.glob(f"versions/{version}.*/bin/python{version}"),
        key=lambda p: _version_key(p.parent.parent),
    )
    if installed:
        return str(installed[-1])
    return version


def _run(session: nox.Session, django: str, *, sqlite: str, postgres: str | None) -> None:
    """The test passes of one leg: pytest's -m expression for each database.

    The legs run less than scripts/test's own passes, to keep the whole test command within
    its time budget: what differs between Django and Python versions is the package's
    code, which the SQLite pass covers; the database code is covered on both databases by
    scripts/test's passes (coverage is reported there).
    """
    session.install("-e", ".[dev]", django)
    session.run("python", "-c", "import django, sys; print('Django', django.get_version())")
    args = session.posargs
    session.run(
        "python", "-m", "pytest", "--no-cov", "-m", sqlite, *args, env={"GES_TEST_DB": "sqlite"}
    )
    if postgres is None:
        return
    pg = session.run("python", "scripts/pg_available.py", silent=True)
    if not isinstance(pg, str) or pg.strip() != "yes":
        session.log("PostgreSQL is not reachable on 127.0.0.1:5432: its pass is skipped")
        return
    session.run(
        "python", "-m", "pytest", "--no-cov", "-m", postgres, *args, env={"GES_TEST_DB": "postgres"}
    )


@nox.session(python=interpreter("newest"))
def newest(session: nox.Session) -> None:
    """The newest Python 3.12+ found, with the newest supported Django: every test but the
    browser ones on SQLite, the tests without Pushpin on PostgreSQL."""
    _run(
        session,
        DJANGO["newest"],
        sqlite="not browser and not packaging",
        postgres="not e2e and not packaging",
    )


@nox.session(python=interpreter("middle"))
def middle(session: nox.Session) -> None:
    """Python 3.12 with Django 6.0: every test but the browser ones, on SQLite."""
    _run(session, DJANGO["middle"], sqlite="not browser and not packaging", postgres=None)


@nox.session(python=interpreter("oldest"))
def oldest(session: nox.Session) -> None:
    """Python 3.11 with Django 5.2 LTS (what scripts/test runs in .venv, when it has them)."""
    _run(
        session,
        DJANGO["oldest"],
        sqlite="not packaging",
        postgres="not browser and not packaging",
    )

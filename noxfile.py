"""The Django/Python matrix, run by scripts/test (see the README's Development section).

scripts/test itself runs the oldest supported combination in .venv (Python 3.11 and the
oldest Django the dev extras resolve to, pinned below); this file adds the newest: the
newest Python 3.12+ on the machine (GES_NEWEST_PYTHON, found by scripts/test) with the
newest Django. Run one leg by hand with ``.venv/bin/python -m nox -s newest``.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

NEWEST_PYTHON = os.environ.get("GES_NEWEST_PYTHON", "3.13")
DJANGO = {"oldest": "Django>=5.2,<5.3", "newest": "Django>=6.1,<6.2"}


def _run(session: nox.Session, django: str) -> None:
    session.install("-e", ".[dev]", django)
    session.run("python", "-c", "import django, sys; print('Django', django.get_version())")
    args = session.posargs
    # The same two passes as scripts/test (coverage is reported there).
    session.run("python", "-m", "pytest", "--no-cov", *args, env={"GES_TEST_DB": "sqlite"})
    pg = session.run("python", "scripts/pg_available.py", silent=True)
    if not isinstance(pg, str) or pg.strip() != "yes":
        session.log("PostgreSQL is not reachable on 127.0.0.1:5432: its pass is skipped")
        return
    session.run(
        "python",
        "-m",
        "pytest",
        "--no-cov",
        "-m",
        "not browser",
        *args,
        env={"GES_TEST_DB": "postgres"},
    )


@nox.session(python=NEWEST_PYTHON)
def newest(session: nox.Session) -> None:
    """The newest Python 3.12+ found, with the newest supported Django."""
    _run(session, DJANGO["newest"])


@nox.session(python="3.11")
def oldest(session: nox.Session) -> None:
    """Python 3.11 with Django 5.2 LTS (what scripts/test runs in .venv)."""
    _run(session, DJANGO["oldest"])

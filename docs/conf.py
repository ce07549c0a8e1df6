"""Sphinx configuration for grip_eventstream's documentation.

Builds offline (no intersphinx): references to Django, DRF, pytest and the standard library
that Sphinx cannot resolve are listed in ``nitpick_ignore_regex``.

    .venv/bin/python -m sphinx -W --keep-going -b html docs .run/docs
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports the package's modules, some of which need Django's app registry.
if not settings.configured:
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "grip_eventstream",
        ],
        GRIP_URL="http://127.0.0.1:5561",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()

import grip_eventstream  # noqa: E402

project = "grip_eventstream"
author = "grip_eventstream contributors"
copyright = "grip_eventstream contributors"
release = grip_eventstream.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"grip_eventstream {release}"
html_static_path: list[str] = []

# Copy only the commands from blocks with prompts; comments after "#" stay (they are
# part of what is typed).
copybutton_exclude = ".linenos, .gp, .go"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}

nitpicky = True
# No intersphinx: the build must work without network access. Targets outside this
# package (Django, DRF, pytest, requests, the standard library) stay unlinked.
nitpick_ignore_regex = [
    (r"py:.*", r"(django|rest_framework|pytest|pytest_django|requests|_pytest)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|types|datetime|pathlib)\..*"),
    (r"py:.*", r"(Any|Iterable|Iterator|Mapping|Sequence|Path|TracebackType|LiveServer)"),
    # Names from TYPE_CHECKING imports or private helpers in signatures.
    (r"py:class", r"(Client|grip_eventstream\.testing\._Running)"),
]

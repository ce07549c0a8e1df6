"""grip_eventstream/__init__.py: the public names, loaded on first use; pure modules."""

from __future__ import annotations

import ast
import configparser
import importlib
import sys
from pathlib import Path

import pytest

import grip_eventstream

PACKAGE = Path(grip_eventstream.__file__).resolve().parent


def _top_level_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add((node.module or "").split(".")[0])
    return names


def test_version_matches_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(PACKAGE.parent / "setup.cfg")
    assert grip_eventstream.__version__ == parser["metadata"]["version"]


def test_public_functions_are_loaded_on_use():
    from grip_eventstream import eventstream

    assert grip_eventstream.send_event is eventstream.send_event
    assert grip_eventstream.get_current_event_id is eventstream.get_current_event_id


def test_public_exception():
    from grip_eventstream.exceptions import PublishError

    assert grip_eventstream.PublishError is PublishError


@pytest.mark.parametrize("name", ["urls", "channelmanager"])
def test_submodules_as_attributes(name):
    assert getattr(grip_eventstream, name) is importlib.import_module(f"grip_eventstream.{name}")


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        grip_eventstream.nope  # noqa: B018
    assert not hasattr(grip_eventstream, "views_")


def test_every_name_in_all_exists():
    namespace: dict[str, object] = {}
    exec("from grip_eventstream import *", namespace)
    for name in grip_eventstream.__all__:
        assert callable(getattr(grip_eventstream, name))


def test_import_loads_nothing_heavy():
    assert _top_level_imports("__init__") <= {"__future__", "typing"}


@pytest.mark.parametrize("module", ["grip", "cursor", "sse", "exceptions", "replay", "stream"])
def test_pure_modules_do_not_import_django(module):
    assert "django" not in _top_level_imports(module)
    assert f"grip_eventstream.{module}" in sys.modules or importlib.import_module(
        f"grip_eventstream.{module}"
    )

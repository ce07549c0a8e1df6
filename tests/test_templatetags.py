import configparser
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.template import Context, Template

from grip_eventstream.cursor import parse_cursor
from grip_eventstream.storage import DjangoModelStorage

ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = ROOT / "grip_eventstream" / "static" / "grip_eventstream"


@pytest.mark.django_db
def test_current_event_id_renders_the_cursor_of_the_channels():
    DjangoModelStorage().append_event("chat", "message", "{}", 60)
    html = Template('{% load grip_eventstream %}{% current_event_id "chat" "news" %}').render(
        Context()
    )
    cursor = parse_cursor(html)
    assert cursor is not None
    assert cursor.position("chat") == 1
    assert cursor.position("news") == 0


def test_current_event_id_is_empty_without_storage(settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    html = Template('{% load grip_eventstream %}[{% current_event_id "chat" %}]').render(Context())
    assert html == "[]"


# --- django-eventstream's static scripts, moved to grip_eventstream/ --------------------

# The scripts django-eventstream's README has templates load, with the app name changed.
MIGRATED_SCRIPTS = ("json2.js", "eventsource.min.js", "reconnecting-eventsource.js")
MIGRATED_TEMPLATE = "{% load static %}" + "".join(
    f"<script src=\"{{% static 'grip_eventstream/{name}' %}}\"></script>"
    for name in MIGRATED_SCRIPTS
)


@pytest.mark.parametrize("name", MIGRATED_SCRIPTS)
def test_migrated_scripts_are_found_by_the_staticfiles_finders(name):
    found = finders.find(f"grip_eventstream/{name}")
    assert found is not None, f"grip_eventstream/{name} is not a static file of any app"
    assert Path(found).parent == STATIC_DIR


def test_json2_does_nothing_and_says_so():
    text = (STATIC_DIR / "json2.js").read_text()
    # Only a comment: every supported browser has native JSON.
    assert re.fullmatch(r"\s*/\*.*?\*/\s*", text, re.DOTALL), "json2.js should only hold a comment"
    assert "native JSON" in text
    # Versioned in its header, with the package.
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    header = text.splitlines()[1]
    assert f"json2.js {parser['metadata']['version']} " in header, header


@pytest.fixture
def manifest_storage(settings, tmp_path):
    """ManifestStaticFilesStorage (what many deployments use) after collectstatic."""
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "django.contrib.staticfiles"]
    settings.STATIC_ROOT = str(tmp_path / "static")
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    # The other apps' files (admin's CSS) only slow the hashing down.
    call_command(
        "collectstatic",
        interactive=False,
        verbosity=0,
        ignore_patterns=["admin", "rest_framework"],
    )
    return tmp_path / "static"


def test_a_migrated_template_renders_under_a_manifest_storage(manifest_storage):
    html = Template(MIGRATED_TEMPLATE).render(Context())
    # The manifest raises for a name it has no file for; every name got its hashed file.
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == len(MIGRATED_SCRIPTS)
    for src, name in zip(srcs, MIGRATED_SCRIPTS, strict=True):
        stem = name.removesuffix(".js")
        assert re.fullmatch(rf"/static/grip_eventstream/{re.escape(stem)}\.[0-9a-f]{{12}}\.js", src)
        assert (manifest_storage / src.removeprefix("/static/")).is_file()


def test_a_migrated_template_renders_without_staticfiles():
    html = Template(MIGRATED_TEMPLATE).render(Context())
    assert html.count('<script src="/static/grip_eventstream/') == len(MIGRATED_SCRIPTS)

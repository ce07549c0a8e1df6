import pytest
from django.template import Context, Template

from grip_eventstream.cursor import parse_cursor
from grip_eventstream.storage import DjangoModelStorage


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

"""grip_eventstream.admin: stored history is readable, never editable."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import RequestFactory

from grip_eventstream.admin import ChannelCounterAdmin, EventAdmin
from grip_eventstream.models import ChannelCounter, Event
from grip_eventstream.storage import DjangoModelStorage

pytestmark = pytest.mark.django_db
request = RequestFactory().get("/admin/")


@pytest.mark.parametrize(
    ("model", "model_admin"), [(Event, EventAdmin), (ChannelCounter, ChannelCounterAdmin)]
)
def test_read_only(model, model_admin):
    instance = model_admin(model, admin.site)
    assert not instance.has_add_permission(request)
    assert not instance.has_change_permission(request)
    assert not instance.has_delete_permission(request)


def test_events_newest_first_searched_by_exact_channel():
    instance = EventAdmin(Event, admin.site)
    assert instance.ordering == ("-id",)
    assert instance.search_fields == ("=channel",)
    long = Event(channel="c", seq=1, event_type="m", data="x" * 200)
    assert len(instance.short_data(long)) == 80
    assert instance.short_data(Event(data="short")) == "short"


def test_the_epoch_row_is_not_listed():
    DjangoModelStorage().append_event("news", "message", "{}", 60)
    instance = ChannelCounterAdmin(ChannelCounter, admin.site)
    assert list(instance.get_queryset(request).values_list("channel", flat=True)) == ["news"]


def test_the_admin_pages_list_and_refuse_edits(client):
    from django.contrib.auth.models import User

    DjangoModelStorage().append_event("news", "message", '{"text": "hello"}', 60)
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    listing = client.get("/admin/grip_eventstream/event/?q=news")
    assert listing.status_code == 200
    assert b"hello" in listing.content
    event = Event.objects.get()
    assert client.post(f"/admin/grip_eventstream/event/{event.pk}/delete/").status_code == 403
    assert client.get("/admin/grip_eventstream/event/add/").status_code == 403
    counters = client.get("/admin/grip_eventstream/channelcounter/")
    assert counters.status_code == 200
    assert b"news" in counters.content

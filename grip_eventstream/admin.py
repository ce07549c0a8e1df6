"""A read-only Django admin for stored events and channel counters.

History is never edited from the admin: changing or deleting a stored event would make
replays disagree with what clients already received (trim_events removes expired ones).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import ChannelCounter, Event
from .storage import EPOCH_ROW


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("channel", "seq", "event_type", "created", "short_data")
    search_fields = ("=channel",)  # exact: the (channel, seq) index serves it
    ordering = ("-id",)  # newest first
    show_full_result_count = False  # no COUNT(*) over the whole table on every page

    @admin.display(description="data")
    def short_data(self, event: Event) -> str:
        return event.data if len(event.data) <= 80 else event.data[:79] + "…"


@admin.register(ChannelCounter)
class ChannelCounterAdmin(ReadOnlyAdmin):
    list_display = ("channel", "last_seq")
    search_fields = ("channel",)
    ordering = ("channel",)

    def get_queryset(self, request: HttpRequest) -> Any:
        # The row that holds the epoch is not a channel.
        return super().get_queryset(request).exclude(channel=EPOCH_ROW)

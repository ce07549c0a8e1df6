from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from grip_eventstream.registry import get_channel_manager, get_storage


class Command(BaseCommand):
    help = (
        "Delete stored events older than their channel's TTL (EVENTSTREAM_STORAGE_TTL or "
        "the channel manager's get_channel_ttl). Run it from cron, e.g. hourly."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        storage = get_storage()
        if storage is None:
            raise CommandError(
                "No event storage is configured: set EVENTSTREAM_STORAGE_CLASS = "
                '"grip_eventstream.storage.DjangoModelStorage".'
            )
        manager = get_channel_manager()
        total = 0
        for channel in storage.channels():
            total += storage.trim(channel, manager.get_channel_ttl(channel))
        self.stdout.write(f"deleted {total} expired event(s)")

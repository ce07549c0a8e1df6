from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Min
from django.utils import timezone

from grip_eventstream.models import Event
from grip_eventstream.publisher import check_proxy
from grip_eventstream.registry import get_channel_manager, get_proxies, get_storage


class Command(BaseCommand):
    help = (
        "Print, per channel, the last event id, the number of stored events, the oldest "
        "one and the retention; then whether each GRIP proxy's control port answers."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        storage = get_storage()
        manager = get_channel_manager()
        if storage is None:
            self.stdout.write("storage: none (EVENTSTREAM_STORAGE_CLASS is not set)")
        else:
            channels = sorted(storage.channels())
            epoch, current = storage.get_state(channels)
            stats: dict[str, tuple[int, datetime]] = {
                channel: (count, oldest)
                for channel, count, oldest in Event.objects.using(storage.using)
                .values("channel")
                .annotate(count=Count("id"), oldest=Min("created"))
                .values_list("channel", "count", "oldest")
            }
            self.stdout.write(f"storage: epoch {epoch}, {len(channels)} channel(s)")
            now = timezone.now()
            for channel in channels:
                count, oldest = stats.get(channel, (0, None))
                ttl = manager.get_channel_ttl(channel)
                age = "-" if oldest is None else _age(now - oldest)
                self.stdout.write(
                    f"  {channel}: last id {current[channel]}, {count} stored, "
                    f"oldest {age} old, kept {_age(timedelta(seconds=ttl))}"
                )
        proxies = get_proxies()
        if not proxies:
            self.stdout.write("proxies: none (set GRIP_URL or GRIP_PROXIES)")
        failed = 0
        for proxy in proxies:
            problem = check_proxy(proxy)
            failed += problem is not None
            state = "answers" if problem is None else f"does not answer: {problem}"
            self.stdout.write(f"proxy {proxy.control_uri}: {state}")
        if failed:
            self.stderr.write(f"{failed} of {len(proxies)} proxy(ies) did not answer")
            raise SystemExit(1)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"

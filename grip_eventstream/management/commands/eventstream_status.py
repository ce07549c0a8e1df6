from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone

from grip_eventstream.models import Event
from grip_eventstream.publisher import check_proxy
from grip_eventstream.registry import get_channel_manager, get_proxies, get_storage
from grip_eventstream.storage import EventStorage


class Command(BaseCommand):
    help = (
        "Print, per channel, the last event id, the number of stored events, the oldest "
        "one and the retention; then whether each GRIP proxy's control port answers. "
        "Exits with status 1 when the database cannot be read or a proxy does not answer."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        storage = get_storage()
        database_ok = True
        if storage is None:
            self.stdout.write("storage: none (EVENTSTREAM_STORAGE_CLASS is not set)")
        else:
            try:
                self._storage_status(storage)
            except DatabaseError as exc:
                # One line, not a traceback: the proxies are checked all the same, and
                # the operator needs to know which of the two is down.
                database_ok = False
                reason = " ".join(str(exc).split()) or type(exc).__name__
                self.stderr.write(
                    f"storage: the database {storage.using!r} cannot be read "
                    f"({type(exc).__name__}: {reason[:300]}). Check that the database "
                    "server is running, that DATABASES points at it, and that "
                    "'manage.py migrate' has run."
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
        if failed or not database_ok:
            raise SystemExit(1)

    def _storage_status(self, storage: EventStorage) -> None:
        manager = get_channel_manager()
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
            kept = _age(timedelta(seconds=manager.get_channel_ttl(channel)))
            if channel in stats:
                count, oldest = stats[channel]
                held = f"{count} stored, oldest {_age(now - oldest)} old"
            else:
                # The counter outlives the events: trimming removed every one of them.
                held = "empty: no event stored (older ones have expired)"
            self.stdout.write(f"  {channel}: last id {current[channel]}, {held}, kept {kept}")


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"

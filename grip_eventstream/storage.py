"""Event storage for replay and gap repair.

Enable with ``EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db import router, transaction
from django.db.models import F, Max
from django.utils import timezone

from .cursor import new_epoch
from .models import ChannelCounter, Epoch, Event
from .replay import StoredEvent

__all__ = ["DjangoModelStorage", "EventStorage", "StoredEvent"]

# Trimming inside send_event runs on one send in TRIM_EVERY per channel and deletes at most
# TRIM_BATCH expired rows, so a send never pays for a large backlog (the trim_events
# management command clears any size).
TRIM_EVERY = 32
TRIM_BATCH = 200


class EventStorage:
    """The storage contract. ``DjangoModelStorage`` is the implementation shipped."""

    using: str

    def append_event(self, channel: str, event_type: str, data: str, ttl: int) -> StoredEvent:
        raise NotImplementedError

    def get_epoch(self) -> str:
        raise NotImplementedError

    def get_current_ids(self, channels: Iterable[str]) -> dict[str, int]:
        raise NotImplementedError

    def get_events(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        raise NotImplementedError

    def trim(self, channel: str, ttl: int, limit: int | None = None) -> int:
        raise NotImplementedError

    def channels(self) -> list[str]:
        raise NotImplementedError


class DjangoModelStorage(EventStorage):
    """Events in the database through the ORM, on the database the router picks for Event."""

    @property
    def using(self) -> str:  # type: ignore[override]
        return router.db_for_write(Event)

    def append_event(self, channel: str, event_type: str, data: str, ttl: int) -> StoredEvent:
        using = self.using
        with transaction.atomic(using=using):
            # The UPDATE takes the counter row's write lock (the database lock on SQLite)
            # and keeps it until the transaction ends, so writers to one channel commit in
            # sequence order and a rollback gives its number back: ids stay gapless.
            counters = ChannelCounter.objects.using(using)
            if not counters.filter(channel=channel).update(last_seq=F("last_seq") + 1):
                # First event of the channel: INSERT ... ON CONFLICT DO NOTHING lets many
                # processes race here without IntegrityError; the UPDATE then serialises.
                counters.bulk_create([ChannelCounter(channel=channel)], ignore_conflicts=True)
                counters.filter(channel=channel).update(last_seq=F("last_seq") + 1)
            seq = counters.filter(channel=channel).values_list("last_seq", flat=True).get()
            event = Event.objects.using(using).create(
                channel=channel, seq=seq, event_type=event_type, data=data
            )
            if seq % TRIM_EVERY == 0:
                self.trim(channel, ttl, limit=TRIM_BATCH)
        return StoredEvent(channel, seq, event_type, data, event.pk)

    def get_epoch(self) -> str:
        epochs = Epoch.objects.using(self.using)
        value = epochs.filter(pk=1).values_list("value", flat=True).first()
        if value is None:
            epochs.bulk_create([Epoch(pk=1, value=new_epoch())], ignore_conflicts=True)
            value = epochs.values_list("value", flat=True).get(pk=1)
        return value

    def get_current_ids(self, channels: Iterable[str]) -> dict[str, int]:
        wanted = list(channels)
        found = dict(
            ChannelCounter.objects.using(self.using)
            .filter(channel__in=wanted)
            .values_list("channel", "last_seq")
        )
        return {channel: found.get(channel, 0) for channel in wanted}

    def get_events(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        rows = (
            Event.objects.using(self.using)
            .filter(channel=channel, seq__gt=after)
            .order_by("seq")
            .values_list("seq", "event_type", "data", "pk")[:limit]
        )
        return [StoredEvent(channel, seq, etype, data, pk) for seq, etype, data, pk in rows]

    def trim(self, channel: str, ttl: int, limit: int | None = None) -> int:
        """Delete events of ``channel`` older than ``ttl`` seconds, oldest first."""
        cutoff = timezone.now() - timedelta(seconds=ttl)
        events = Event.objects.using(self.using)
        expired = events.filter(channel=channel, created__lt=cutoff)
        if limit is None:
            last = expired.aggregate(last=Max("seq"))["last"]
        else:
            seqs = list(expired.order_by("seq").values_list("seq", flat=True)[:limit])
            last = seqs[-1] if seqs else None
        if last is None:
            return 0
        # One range delete on the (channel, seq) index rather than a row-by-row loop.
        deleted, _ = events.filter(channel=channel, seq__lte=last).delete()
        return deleted

    def channels(self) -> list[str]:
        return list(ChannelCounter.objects.using(self.using).values_list("channel", flat=True))

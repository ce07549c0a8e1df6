"""Event storage for replay and gap repair.

Enable with ``EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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

    def append_events(
        self, events: Sequence[tuple[str, str, str]], ttls: Mapping[str, int]
    ) -> list[StoredEvent]:
        """Store ``(channel, event_type, data)`` events in one transaction, in order.

        ``ttls`` gives each channel's retention, for trimming.
        """
        return [self.append_event(c, t, d, ttls[c]) for c, t, d in events]

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
        (event,) = self.append_events([(channel, event_type, data)], {channel: ttl})
        return event

    def append_events(
        self, events: Sequence[tuple[str, str, str]], ttls: Mapping[str, int]
    ) -> list[StoredEvent]:
        counts = Counter(channel for channel, _, _ in events)
        if not counts:
            return []
        using = self.using
        with transaction.atomic(using=using):
            # The UPDATE takes the counter row's write lock (the database lock on SQLite)
            # and keeps it until the transaction ends, so writers to one channel commit in
            # sequence order and a rollback gives its numbers back: ids stay gapless.
            # Channels in sorted order, so that two batches never wait for each other's
            # locks in opposite orders.
            next_seq = {}
            for channel in sorted(counts):
                next_seq[channel] = self._reserve(using, channel, counts[channel])
            rows = []
            for channel, event_type, data in events:
                seq = next_seq[channel]
                next_seq[channel] += 1
                rows.append(Event(channel=channel, seq=seq, event_type=event_type, data=data))
            # One INSERT, in the given order: the primary keys order the events across
            # channels for replay.
            Event.objects.using(using).bulk_create(rows)
            for channel, count in counts.items():
                last = next_seq[channel] - 1
                # One send in TRIM_EVERY per channel trims: when this batch crosses a multiple.
                if last // TRIM_EVERY != (last - count) // TRIM_EVERY:
                    self.trim(channel, ttls[channel], limit=TRIM_BATCH)
        return [StoredEvent(r.channel, r.seq, r.event_type, r.data, r.pk) for r in rows]

    def _reserve(self, using: str, channel: str, count: int) -> int:
        """Take ``count`` sequence numbers of ``channel``; the first of them."""
        counters = ChannelCounter.objects.using(using)
        if not counters.filter(channel=channel).update(last_seq=F("last_seq") + count):
            # First event of the channel: INSERT ... ON CONFLICT DO NOTHING lets many
            # processes race here without IntegrityError; the UPDATE then serialises.
            counters.bulk_create([ChannelCounter(channel=channel)], ignore_conflicts=True)
            counters.filter(channel=channel).update(last_seq=F("last_seq") + count)
        last: int = counters.filter(channel=channel).values_list("last_seq", flat=True).get()
        return last - count + 1

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

"""Event storage for replay and gap repair.

Enable with ``EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta

from django.db import connections, router, transaction
from django.db.models import Max
from django.utils import timezone

from .cursor import epoch_from_int, epoch_to_int, new_epoch
from .models import ChannelCounter, Event
from .replay import StoredEvent

__all__ = ["DjangoModelStorage", "EventStorage", "StoredEvent"]

# Trimming inside send_event runs on one send in TRIM_EVERY per channel and deletes at most
# TRIM_BATCH expired rows, so a send never pays for a large backlog (the trim_events
# management command clears any size).
TRIM_EVERY = 32
TRIM_BATCH = 200
# The counter row that holds the epoch: "" is not a valid channel name.
EPOCH_ROW = ""


def _counter_names(quote: Callable[[str], str]) -> tuple[str, str, str]:
    """The quoted table and column names of ChannelCounter, for the hand-written queries."""
    meta = ChannelCounter._meta
    return (
        quote(meta.db_table),
        quote(str(meta.get_field("channel").column)),
        quote(str(meta.get_field("last_seq").column)),
    )


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

    def get_state(self, channels: Iterable[str]) -> tuple[str, dict[str, int]]:
        """The epoch and the last seq of each channel (0 for none), read together."""
        return self.get_epoch(), self.get_current_ids(channels)

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
        connection = connections[using]
        table, name, last_seq = _counter_names(connection.ops.quote_name)
        update = f"UPDATE {table} SET {last_seq} = {last_seq} + %s WHERE {name} = %s"
        # UPDATE ... RETURNING where the database has it (SQLite 3.35+, PostgreSQL): one
        # statement instead of two on every send (profiled: a quarter of send_event), and
        # written in SQL as the ORM has no UPDATE ... RETURNING.
        returning = connection.features.can_return_columns_from_insert
        for attempt in range(2):
            with connection.cursor() as cursor:
                if returning:
                    cursor.execute(f"{update} RETURNING {last_seq}", [count, channel])
                    row = cursor.fetchone()
                else:
                    cursor.execute(update, [count, channel])
                    row = None
                    if cursor.rowcount:
                        cursor.execute(
                            f"SELECT {last_seq} FROM {table} WHERE {name} = %s", [channel]
                        )
                        row = cursor.fetchone()
            if row is not None:
                last: int = row[0]
                return last - count + 1
            if attempt == 0:
                # First event of the channel: INSERT ... ON CONFLICT DO NOTHING lets many
                # processes race here without IntegrityError; the UPDATE then serialises.
                ChannelCounter.objects.using(using).bulk_create(
                    [ChannelCounter(channel=channel)], ignore_conflicts=True
                )
        raise RuntimeError(f"the counter row of channel {channel!r} could not be updated")

    def get_epoch(self) -> str:
        return self.get_state(())[0]

    def get_current_ids(self, channels: Iterable[str]) -> dict[str, int]:
        return self.get_state(channels)[1]

    def get_state(self, channels: Iterable[str]) -> tuple[str, dict[str, int]]:
        wanted = list(channels)
        using = self.using
        # One query: every subscribe and next-link request needs both (see ChannelCounter).
        # Written in SQL because building the equivalent QuerySet took longer than running
        # it (profiled: with the ORM, half of a whole subscribe request).
        connection = connections[using]
        table, channel, last_seq = _counter_names(connection.ops.quote_name)
        marks = ", ".join(["%s"] * (len(wanted) + 1))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {channel}, {last_seq} FROM {table} WHERE {channel} IN ({marks})",
                [EPOCH_ROW, *wanted],
            )
            found = dict(cursor.fetchall())
        epoch = found.pop(EPOCH_ROW, None)
        if epoch is None:
            # First use of these tables, or they started afresh: a new epoch. Concurrent
            # first requests race here; ON CONFLICT DO NOTHING keeps the first one's.
            counters = ChannelCounter.objects.using(using)
            counters.bulk_create(
                [ChannelCounter(channel=EPOCH_ROW, last_seq=epoch_to_int(new_epoch()))],
                ignore_conflicts=True,
            )
            epoch = counters.filter(channel=EPOCH_ROW).values_list("last_seq", flat=True).get()
        return epoch_from_int(epoch), {name: found.get(name, 0) for name in wanted}

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
        counters = ChannelCounter.objects.using(self.using).exclude(channel=EPOCH_ROW)
        return list(counters.values_list("channel", flat=True))

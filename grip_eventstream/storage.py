"""Event storage for replay and gap repair.

Enable with ``EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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


@dataclass(frozen=True)
class _Sql:
    """The hand-written statements, for one backend's quoting.

    Built once per backend rather than on every call (quoting, model metadata lookups).
    """

    events: str
    upsert: str  # takes a channel's numbers, creating its counter row if need be
    insert_event: str  # one event, with its primary key returned
    append_one: str  # upsert and insert_event as one statement (PostgreSQL)


# The vendors whose SQL the statements are written in (ON CONFLICT, RETURNING, LIMIT);
# others go through the ORM.
_VENDORS = frozenset({"postgresql", "sqlite"})
_statements: dict[type, _Sql] = {}


def _sql(connection: Any) -> _Sql | None:
    """The statements for ``connection``; None where they are not written for its SQL."""
    if connection.vendor not in _VENDORS or not connection.features.can_return_columns_from_insert:
        return None
    key = type(connection.ops)  # the quoting; a connection's ops object lives and dies with it
    sql = _statements.get(key)
    if sql is None:
        sql = _statements[key] = _build_sql(connection.ops.quote_name)
    return sql


def _build_sql(quote: Callable[[str], str]) -> _Sql:
    table, channel, last_seq = _counter_names(quote)
    meta = Event._meta
    events = quote(meta.db_table)
    column = {
        "id": quote(str(meta.get_field("id").column)),
        "channel": quote(str(meta.get_field("channel").column)),
        "seq": quote(str(meta.get_field("seq").column)),
        "event_type": quote(str(meta.get_field("event_type").column)),
        "data": quote(str(meta.get_field("data").column)),
        "created": quote(str(meta.get_field("created").column)),
    }
    upsert = (
        f"INSERT INTO {table} ({channel}, {last_seq}) VALUES (%s, %s) "
        f"ON CONFLICT ({channel}) DO UPDATE SET {last_seq} = {table}.{last_seq} + %s "
        f"RETURNING {last_seq}"
    )
    insert_columns = ", ".join(
        column[name] for name in ("channel", "seq", "event_type", "data", "created")
    )
    return _Sql(
        events=(
            f"SELECT {column['seq']}, {column['event_type']}, {column['data']}, {column['id']} "
            f"FROM {events} WHERE {column['channel']} = %s AND {column['seq']} > %s "
            f"ORDER BY {column['seq']} LIMIT %s"
        ),
        upsert=upsert,
        insert_event=(
            f"INSERT INTO {events} ({insert_columns}) VALUES (%s, %s, %s, %s, %s) "
            f"RETURNING {column['id']}"
        ),
        append_one=(
            f"WITH counter AS ({upsert}) INSERT INTO {events} ({insert_columns}) "
            f"SELECT %s, {last_seq}, %s, %s, %s FROM counter "
            f"RETURNING {column['id']}, {column['seq']}"
        ),
    )


# SELECT ... IN (%s, ...) by quoting and number of channels.
_state_queries: dict[tuple[type, int], str] = {}


def _state_query(connection: Any, channels: int) -> str:
    key = (type(connection.ops), channels)
    query = _state_queries.get(key)
    if query is None:
        table, channel, last_seq = _counter_names(connection.ops.quote_name)
        marks = ", ".join(["%s"] * (channels + 1))
        query = f"SELECT {channel}, {last_seq} FROM {table} WHERE {channel} IN ({marks})"
        if len(_state_queries) < 256:
            _state_queries[key] = query
    return query


# The epoch changes only when the tables start afresh, and every request converts it.
_epoch_from_int = functools.lru_cache(maxsize=16)(epoch_from_int)


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
        connection = connections[using]
        sql = _sql(connection)
        if len(events) == 1 and sql is not None:
            # send_event's case, in hand-written SQL: the ORM's bulk_create cost more than
            # the INSERT itself (profiled: most of the storage's share of a send).
            (channel, event_type, data), ttl = events[0], ttls[events[0][0]]
            return [self._append_one(using, connection, sql, channel, event_type, data, ttl)]
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

    def _append_one(
        self,
        using: str,
        connection: Any,
        sql: _Sql,
        channel: str,
        event_type: str,
        data: str,
        ttl: int,
    ) -> StoredEvent:
        created = connection.ops.adapt_datetimefield_value(timezone.now())
        if (
            connection.vendor == "postgresql"
            and not connection.in_atomic_block
            and connection.get_autocommit()
        ):
            # One statement, so one round trip and atomic on its own: the counter's row
            # lock is held until it commits and a failed INSERT gives the number back.
            # Inside the caller's transaction the savepoint path below keeps a failure
            # from breaking that transaction, as it did before.
            with connection.cursor() as cursor:
                cursor.execute(sql.append_one, [channel, 1, 1, channel, event_type, data, created])
                pk, seq = cursor.fetchone()
        else:
            with transaction.atomic(using=using), connection.cursor() as cursor:
                # The upsert takes the counter row's write lock (the database lock on
                # SQLite) until the transaction ends, as in append_events.
                cursor.execute(sql.upsert, [channel, 1, 1])
                (seq,) = cursor.fetchone()
                cursor.execute(sql.insert_event, [channel, seq, event_type, data, created])
                (pk,) = cursor.fetchone()
        if seq % TRIM_EVERY == 0:
            self.trim(channel, ttl, limit=TRIM_BATCH)
        return StoredEvent(channel, seq, event_type, data, pk)

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
        query = _state_query(connection, len(wanted))
        with connection.cursor() as cursor:
            cursor.execute(query, [EPOCH_ROW, *wanted])
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
        return _epoch_from_int(epoch), {name: found.get(name, 0) for name in wanted}

    def get_events(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        # Hand-written for the same reason as get_state: building the QuerySet took longer
        # than running it (profiled: most of a replay of 10 events).
        connection = connections[self.using]
        sql = _sql(connection)
        if sql is None:
            rows = list(
                Event.objects.using(self.using)
                .filter(channel=channel, seq__gt=after)
                .order_by("seq")
                .values_list("seq", "event_type", "data", "pk")[:limit]
            )
        else:
            with connection.cursor() as cursor:
                cursor.execute(sql.events, [channel, after, limit])
                rows = cursor.fetchall()
        return [StoredEvent(channel, seq, etype, data, pk) for seq, etype, data, pk in rows]

    def trim(self, channel: str, ttl: int, limit: int | None = None) -> int:
        """Delete events of ``channel`` older than ``ttl`` seconds, oldest first."""
        cutoff = timezone.now() - timedelta(seconds=ttl)
        events = Event.objects.using(self.using)
        if limit is None:
            expired = events.filter(channel=channel, created__lt=cutoff)
            last = expired.aggregate(last=Max("seq"))["last"]
        else:
            # The channel's oldest events, in (channel, seq) index order, LIMIT rows at most.
            # Filtering on created instead walks the whole channel whenever nothing has
            # expired (profiled: a tenth of an async send, on a channel of 3,000 events).
            # Numbers follow time, as each is taken when its event is stored, so what has
            # expired is a prefix; an event stored a moment out of order waits for the next
            # trim. The first row alone answers the usual case: nothing expired yet.
            oldest = events.filter(channel=channel).order_by("seq").values_list("seq", "created")
            first = list(oldest[:1])
            if not first or first[0][1] >= cutoff:
                return 0
            last = None
            for seq, created in oldest[:limit]:
                if created >= cutoff:
                    break
                last = seq
        if last is None:
            return 0
        # One range delete on the (channel, seq) index rather than a row-by-row loop.
        deleted, _ = events.filter(channel=channel, seq__lte=last).delete()
        return deleted

    def channels(self) -> list[str]:
        counters = ChannelCounter.objects.using(self.using).exclude(channel=EPOCH_ROW)
        return list(counters.values_list("channel", flat=True))

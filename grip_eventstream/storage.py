"""Event storage for replay and gap repair.

Enable with ``EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"``.

How the SQL is written: on PostgreSQL and on SQLite 3.35+ every statement is hand-written,
in one table per backend (``_Sql``, built once per backend by ``_build``), because building
the equivalent QuerySets cost more than running them (profiled: half of a subscribe, most
of the storage's share of a send) and the ORM has no ``UPDATE ... RETURNING``. Databases
without ``RETURNING`` (SQLite before 3.35) and those the statements are not written for
(other vendors) take the same steps through the ORM (``_Orm``), with a statement more where
``RETURNING`` would have saved one.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.db import connections, router, transaction
from django.db.models import F, Max
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

# An event to insert: (channel, seq, event_type, data).
_Row = tuple[str, int, str, str]

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
    """Events in the database, on the database the router picks for Event."""

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
        backend = _backend(connection)
        # send_event's usual case on PostgreSQL: the reservation and the INSERT as one
        # statement, so one round trip instead of four (BEGIN, two statements, COMMIT), and
        # atomic on its own: the counter's row lock is held until it commits and a failed
        # INSERT gives the number back. Inside the caller's transaction the savepoint below
        # keeps a failure from breaking that transaction, so the statement is not used there.
        one_statement = (
            backend
            if isinstance(backend, _Sql)
            and backend.append_one is not None
            and len(events) == 1
            and not connection.in_atomic_block
            and connection.get_autocommit()
            else None
        )
        atomic = nullcontext() if one_statement is not None else transaction.atomic(using=using)
        # One cursor for every statement of the send (opening one costs a few µs).
        with atomic, connection.cursor() as cursor:
            if one_statement is not None:
                stored = [one_statement.append_one_event(cursor, *events[0])]
            else:
                # Each reservation takes the counter row's write lock (the database lock on
                # SQLite) and keeps it until the transaction ends, so writers to one channel
                # commit in sequence order and a rollback gives its numbers back: ids stay
                # gapless. Channels in sorted order, so that two batches never wait for each
                # other's locks in opposite orders.
                next_seq = {c: self._reserve(cursor, c, counts[c]) for c in sorted(counts)}
                rows: list[_Row] = []
                for channel, event_type, data in events:
                    rows.append((channel, next_seq[channel], event_type, data))
                    next_seq[channel] += 1
                # In the given order: the primary keys order the events across channels for
                # replay.
                pks = backend.insert(cursor, rows)
                stored = [StoredEvent(*row, pk) for row, pk in zip(rows, pks, strict=True)]
            # Inside the transaction, so that a failure stores nothing (as send_events
            # promises); after the one statement, which has committed.
            last = {event.channel: event.seq for event in stored}
            for channel, count in counts.items():
                # One send in TRIM_EVERY per channel trims: when this one crosses a multiple.
                if last[channel] // TRIM_EVERY != (last[channel] - count) // TRIM_EVERY:
                    self.trim(channel, ttls[channel], limit=TRIM_BATCH)
        return stored

    def _reserve(self, cursor: Any, channel: str, count: int) -> int:
        """Take ``count`` sequence numbers of ``channel``; the first of them."""
        return _backend(cursor.db).reserve(cursor, channel, count) - count + 1

    def get_epoch(self) -> str:
        return self.get_state(())[0]

    def get_current_ids(self, channels: Iterable[str]) -> dict[str, int]:
        return self.get_state(channels)[1]

    def get_state(self, channels: Iterable[str]) -> tuple[str, dict[str, int]]:
        wanted = list(channels)
        connection = connections[self.using]
        backend = _backend(connection)
        with _reading_cursor(connection, backend) as cursor:
            # One query: every subscribe and next-link request needs both (see ChannelCounter).
            found = backend.counters(cursor, [EPOCH_ROW, *wanted])
        epoch = found.pop(EPOCH_ROW, None)
        if epoch is None:
            # First use of these tables, or they started afresh: a new epoch. Concurrent
            # first requests race here; the first one's is kept.
            with connection.cursor() as cursor:
                epoch = backend.make_epoch(cursor, epoch_to_int(new_epoch()))
        return _epoch_from_int(epoch), {name: found.get(name, 0) for name in wanted}

    def get_events(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        connection = connections[self.using]
        backend = _backend(connection)
        with _reading_cursor(connection, backend) as cursor:
            rows = backend.events(cursor, channel, after, limit)
        return [StoredEvent(channel, seq, etype, data, pk) for seq, etype, data, pk in rows]

    def trim(self, channel: str, ttl: int, limit: int | None = None) -> int:
        """Delete events of ``channel`` older than ``ttl`` seconds, oldest first."""
        cutoff = timezone.now() - timedelta(seconds=ttl)
        connection = connections[self.using]
        backend = _backend(connection)
        with connection.cursor() as cursor:
            if limit is None:
                last = backend.last_expired(cursor, channel, cutoff)
            else:
                # The channel's oldest events, in (channel, seq) index order, LIMIT rows at
                # most. Filtering on created instead walks the whole channel whenever nothing
                # has expired (profiled: a tenth of an async send, on a channel of 3,000
                # events). Numbers follow time, as each is taken when its event is stored, so
                # what has expired is a prefix; an event stored a moment out of order waits
                # for the next trim. The first row alone answers the usual case: nothing
                # expired yet.
                last = None
                first = backend.oldest(cursor, channel, cutoff, 1)
                if first and first[0][1]:
                    for seq, expired in backend.oldest(cursor, channel, cutoff, limit):
                        if not expired:
                            break
                        last = seq
            if last is None:
                return 0
            # One range delete on the (channel, seq) index rather than a row-by-row loop.
            return backend.delete_through(cursor, channel, last)

    def channels(self) -> list[str]:
        connection = connections[self.using]
        with connection.cursor() as cursor:
            return _backend(connection).channels(cursor)


# --- the backends: the statements, and the ORM fallback ------------------------------------


class _Backend(Protocol):
    """The steps of the storage, each on an open cursor (``cursor.db``: its connection)."""

    def counters(self, cursor: Any, names: Sequence[str]) -> dict[str, int]:
        """``last_seq`` of the counter rows of ``names`` that exist."""

    def make_epoch(self, cursor: Any, value: int) -> int:
        """Store ``value`` as the epoch unless one is stored; the one stored."""

    def reserve(self, cursor: Any, channel: str, count: int) -> int:
        """Add ``count`` to the channel's counter (creating it); its new value."""

    def insert(self, cursor: Any, rows: Sequence[_Row]) -> list[int]:
        """Insert ``rows`` in order; their primary keys."""

    def events(
        self, cursor: Any, channel: str, after: int, limit: int
    ) -> list[tuple[int, str, str, int]]:
        """``(seq, event_type, data, pk)`` of up to ``limit`` events after ``after``."""

    def oldest(
        self, cursor: Any, channel: str, cutoff: datetime, limit: int
    ) -> list[tuple[int, bool]]:
        """``(seq, created before cutoff)`` of the channel's ``limit`` oldest events."""

    def last_expired(self, cursor: Any, channel: str, cutoff: datetime) -> int | None:
        """The highest seq of the channel's events created before ``cutoff``."""

    def delete_through(self, cursor: Any, channel: str, seq: int) -> int:
        """Delete the channel's events up to ``seq``; how many."""

    def channels(self, cursor: Any) -> list[str]:
        """Every channel with a counter."""


@dataclass(frozen=True)
class _Sql:
    """The hand-written statements, in one backend's quoting and SQL."""

    select_counters: str  # + "(%s, ...)"
    upsert: str  # (channel, value if new, increment): the counter's new value
    insert_events: str  # + "(%s, %s, %s, %s, %s), ..." + returning_id
    returning_id: str
    append_one: str | None  # upsert and insert of one event as one statement (PostgreSQL)
    select_events: str
    select_oldest: str
    select_expired: str
    delete_events: str
    select_channels: str
    insert_fields: tuple[Any, ...]  # the model fields of an insert's row, for batch sizes
    # select_counters completed, by number of names: built once each, as every subscribe
    # runs one (bounded: the numbers come from requests).
    by_count: dict[int, str] = field(default_factory=dict, compare=False)

    def counters(self, cursor: Any, names: Sequence[str]) -> dict[str, int]:
        sql = self.by_count.get(len(names))
        if sql is None:
            sql = f"{self.select_counters}({_marks(len(names))})"
            if len(self.by_count) < 256:
                self.by_count[len(names)] = sql
        cursor.execute(sql, names)
        return dict(cursor.fetchall())

    def make_epoch(self, cursor: Any, value: int) -> int:
        # Adding 0 to an epoch stored meanwhile by a concurrent first request returns it.
        cursor.execute(self.upsert, [EPOCH_ROW, value, 0])
        return int(cursor.fetchone()[0])

    def reserve(self, cursor: Any, channel: str, count: int) -> int:
        # One statement, creating the counter of a new channel: concurrent first events
        # of a channel meet on its primary key, without IntegrityError.
        cursor.execute(self.upsert, [channel, count, count])
        return int(cursor.fetchone()[0])

    def insert(self, cursor: Any, rows: Sequence[_Row]) -> list[int]:
        ops = cursor.db.ops
        # In batches of the size bulk_create would use (SQLite's limit on parameters); a
        # row always fits (send_event's case: spares the question).
        size = max(ops.bulk_batch_size(self.insert_fields, rows), 1) if len(rows) > 1 else 1
        pks: list[int] = []
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(batch))
            # Each row its own time, as the model's default gives it.
            params = [
                p for row in batch for p in (*row, ops.adapt_datetimefield_value(timezone.now()))
            ]
            cursor.execute(f"{self.insert_events}{values}{self.returning_id}", params)
            pks.extend(pk for (pk,) in cursor.fetchall())
        return pks

    def append_one_event(
        self, cursor: Any, channel: str, event_type: str, data: str
    ) -> StoredEvent:
        created = cursor.db.ops.adapt_datetimefield_value(timezone.now())
        cursor.execute(self.append_one, [channel, 1, 1, channel, event_type, data, created])
        pk, seq = cursor.fetchone()
        return StoredEvent(channel, seq, event_type, data, pk)

    def events(
        self, cursor: Any, channel: str, after: int, limit: int
    ) -> list[tuple[int, str, str, int]]:
        cursor.execute(self.select_events, [channel, after, limit])
        return list(cursor.fetchall())

    def oldest(
        self, cursor: Any, channel: str, cutoff: datetime, limit: int
    ) -> list[tuple[int, bool]]:
        cutoff_value = cursor.db.ops.adapt_datetimefield_value(cutoff)
        cursor.execute(self.select_oldest, [cutoff_value, channel, limit])
        return [(seq, bool(expired)) for seq, expired in cursor.fetchall()]

    def last_expired(self, cursor: Any, channel: str, cutoff: datetime) -> int | None:
        cursor.execute(
            self.select_expired, [channel, cursor.db.ops.adapt_datetimefield_value(cutoff)]
        )
        last: int | None = cursor.fetchone()[0]
        return last

    def delete_through(self, cursor: Any, channel: str, seq: int) -> int:
        cursor.execute(self.delete_events, [channel, seq])
        return int(cursor.rowcount)

    def channels(self, cursor: Any) -> list[str]:
        cursor.execute(self.select_channels, [EPOCH_ROW])
        return [name for (name,) in cursor.fetchall()]


def _marks(count: int) -> str:
    return ", ".join(["%s"] * count)


def _build(connection: Any) -> _Sql:
    quote = connection.ops.quote_name

    def names(model: Any) -> dict[str, str]:
        """The quoted table (``"table"``) and column names (by field name) of ``model``."""
        meta = model._meta
        return {
            "table": quote(meta.db_table),
            **{field.name: quote(str(field.column)) for field in meta.concrete_fields},
        }

    c, e = names(ChannelCounter), names(Event)
    fields = ("channel", "seq", "event_type", "data", "created")
    columns = ", ".join(e[name] for name in fields)
    # ON CONFLICT ... DO UPDATE takes the row's write lock (the database lock on SQLite)
    # as an UPDATE does, and keeps it until the transaction ends.
    upsert = (
        f"INSERT INTO {c['table']} ({c['channel']}, {c['last_seq']}) VALUES (%s, %s) "
        f"ON CONFLICT ({c['channel']}) DO UPDATE SET {c['last_seq']} = "
        f"{c['table']}.{c['last_seq']} + %s RETURNING {c['last_seq']}"
    )
    in_channel = f"FROM {e['table']} WHERE {e['channel']} = %s"
    return _Sql(
        select_counters=(
            f"SELECT {c['channel']}, {c['last_seq']} FROM {c['table']} WHERE {c['channel']} IN "
        ),
        upsert=upsert,
        insert_events=f"INSERT INTO {e['table']} ({columns}) VALUES ",
        returning_id=f" RETURNING {e['id']}",
        # SQLite has no INSERT in a WITH clause.
        append_one=(
            f"WITH counter AS ({upsert}) INSERT INTO {e['table']} ({columns}) "
            f"SELECT %s, {c['last_seq']}, %s, %s, %s FROM counter "
            f"RETURNING {e['id']}, {e['seq']}"
            if connection.vendor == "postgresql"
            else None
        ),
        select_events=(
            f"SELECT {e['seq']}, {e['event_type']}, {e['data']}, {e['id']} {in_channel} "
            f"AND {e['seq']} > %s ORDER BY {e['seq']} LIMIT %s"
        ),
        # Whether each has expired, computed by the database: no datetime conversion here.
        select_oldest=(
            f"SELECT {e['seq']}, {e['created']} < %s {in_channel} ORDER BY {e['seq']} LIMIT %s"
        ),
        select_expired=f"SELECT MAX({e['seq']}) {in_channel} AND {e['created']} < %s",
        delete_events=f"DELETE {in_channel} AND {e['seq']} <= %s",
        select_channels=f"SELECT {c['channel']} FROM {c['table']} WHERE {c['channel']} <> %s",
        insert_fields=tuple(Event._meta.get_field(name) for name in fields),
    )


class _Orm:
    """The fallback: the same steps through the ORM, where the statements are not written
    for the database (see the module's docstring). The cursor only names the database."""

    def counters(self, cursor: Any, names: Sequence[str]) -> dict[str, int]:
        rows = ChannelCounter.objects.using(cursor.db.alias).filter(channel__in=names)
        return dict(rows.values_list("channel", "last_seq"))

    def make_epoch(self, cursor: Any, value: int) -> int:
        counters = ChannelCounter.objects.using(cursor.db.alias)
        # ON CONFLICT DO NOTHING (or the database's equivalent): a concurrent first
        # request's epoch is kept.
        counters.bulk_create(
            [ChannelCounter(channel=EPOCH_ROW, last_seq=value)], ignore_conflicts=True
        )
        return counters.filter(channel=EPOCH_ROW).values_list("last_seq", flat=True).get()

    def reserve(self, cursor: Any, channel: str, count: int) -> int:
        counters = ChannelCounter.objects.using(cursor.db.alias)
        counter = counters.filter(channel=channel)
        if not counter.update(last_seq=F("last_seq") + count):
            # First event of the channel: ignoring conflicts lets many processes race here
            # without IntegrityError; the UPDATE then serialises them.
            counters.bulk_create([ChannelCounter(channel=channel)], ignore_conflicts=True)
            if not counter.update(last_seq=F("last_seq") + count):
                raise RuntimeError(f"the counter row of channel {channel!r} could not be updated")
        return counter.values_list("last_seq", flat=True).get()

    def insert(self, cursor: Any, rows: Sequence[_Row]) -> list[int]:
        # The keys are None on a database that returns none from a bulk insert, as they
        # always were there: send_events reads seq alone.
        events = [Event(channel=c, seq=s, event_type=t, data=d) for c, s, t, d in rows]
        return [event.pk for event in Event.objects.using(cursor.db.alias).bulk_create(events)]

    def events(
        self, cursor: Any, channel: str, after: int, limit: int
    ) -> list[tuple[int, str, str, int]]:
        rows = Event.objects.using(cursor.db.alias).filter(channel=channel, seq__gt=after)
        return list(rows.order_by("seq").values_list("seq", "event_type", "data", "pk")[:limit])

    def oldest(
        self, cursor: Any, channel: str, cutoff: datetime, limit: int
    ) -> list[tuple[int, bool]]:
        rows = Event.objects.using(cursor.db.alias).filter(channel=channel).order_by("seq")
        return [
            (seq, created < cutoff) for seq, created in rows.values_list("seq", "created")[:limit]
        ]

    def last_expired(self, cursor: Any, channel: str, cutoff: datetime) -> int | None:
        rows = Event.objects.using(cursor.db.alias).filter(channel=channel, created__lt=cutoff)
        last: int | None = rows.aggregate(last=Max("seq"))["last"]
        return last

    def delete_through(self, cursor: Any, channel: str, seq: int) -> int:
        rows = Event.objects.using(cursor.db.alias).filter(channel=channel, seq__lte=seq)
        return rows.delete()[0]

    def channels(self, cursor: Any) -> list[str]:
        counters = ChannelCounter.objects.using(cursor.db.alias).exclude(channel=EPOCH_ROW)
        return list(counters.values_list("channel", flat=True))


class _DirectCursor:
    """The driver's own cursor, for the reads every subscribe and next link makes.

    Django's cursor wraps each statement in layers (thread-sharing and broken-transaction
    checks, the debug wrapper's test, execute wrappers, placeholder rewriting on SQLite)
    that cost about a third of the statement itself (profiled: get_state 18 -> 11 µs on
    SQLite, 66 -> 56 µs on PostgreSQL, in the process). Used only where those layers have
    nothing to do (see _reading_cursor); errors are still Django's (wrap_database_errors),
    and the connection is opened, health-checked and closed by Django as usual.
    """

    __slots__ = ("_cursor", "_qmark", "db")

    def __init__(self, connection: Any) -> None:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
        self.db = connection
        self._qmark = connection.Database.paramstyle == "qmark"
        with connection.wrap_database_errors:
            self._cursor = connection.connection.cursor()

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        with self.db.wrap_database_errors:
            self._cursor.execute(_qmark(sql) if self._qmark else sql, params)

    def fetchall(self) -> list[tuple[Any, ...]]:
        with self.db.wrap_database_errors:
            return self._cursor.fetchall()  # type: ignore[no-any-return]

    def __enter__(self) -> _DirectCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._cursor.close()


@functools.lru_cache(maxsize=64)
def _qmark(sql: str) -> str:
    # The hand-written statements hold no "%" but their placeholders.
    return sql.replace("%s", "?")


def _reading_cursor(connection: Any, backend: _Backend) -> Any:
    """A cursor for a read-only statement: the driver's own when nothing watches queries.

    Django's cursor when a statement would be logged or counted (DEBUG, the test
    framework's query capture behind assertNumQueries), when execute_wrapper() hooks are
    installed, inside a transaction (whose broken state Django's cursor reports), and for
    the ORM fallback.
    """
    if (
        isinstance(backend, _Sql)
        and not connection.in_atomic_block
        and not connection.execute_wrappers
        and not connection.queries_logged
    ):
        return _DirectCursor(connection)
    return connection.cursor()


# The vendors whose SQL the statements are written in (ON CONFLICT, RETURNING, LIMIT).
_VENDORS = frozenset({"postgresql", "sqlite"})
_ORM = _Orm()
_statements: dict[type, _Sql] = {}


def _backend(connection: Any) -> _Backend:
    """How storage talks to ``connection``'s database: its statements, or the ORM."""
    # Asked on every call rather than remembered: the answer is per connection (the
    # SQLite library's version), and cheap.
    if connection.vendor not in _VENDORS or not connection.features.can_return_columns_from_insert:
        return _ORM
    key = type(connection.ops)  # the quoting; a connection's ops object lives and dies with it
    sql = _statements.get(key)
    if sql is None:
        sql = _statements[key] = _build(connection)
    return sql

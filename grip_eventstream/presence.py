"""Presence: who has a stream open on a channel, from any process.

A channel is tracked when the channel manager's ``is_presence_channel(channel)`` says so.
The stream view records each new stream on its presence channels (:func:`record_streams`),
extends its expiry whenever Pushpin fetches its next link (:func:`refresh_streams`) and
removes it on the proxy's gone notice (:func:`end_stream`). The database is the shared
state, so :func:`get_presence` and :func:`get_presence_stats` answer the same in every process.

**Members.** A logged-in user is one member however many streams (tabs) they have open on
the channel: they join with the first and leave with the last. An anonymous stream cannot be
told apart from another visitor's, so each is a member of its own: it joins when it opens
and leaves when it closes. :func:`get_presence` lists all anonymous streams as one entry.

**Joins and leaves** fire the :data:`~grip_eventstream.signals.presence_joined` and
:data:`~grip_eventstream.signals.presence_left` signals once each, whatever the number of
processes and concurrent requests, after the change commits. When the channel manager's
``get_presence_events(channel)`` says so, each is also sent on the channel itself with
:func:`~grip_eventstream.send_event` (stored with the channel's other events when the
channel is, so in order with them), as an event of type ``presence`` with JSON data::

    {"action": "join", "user": "42", "users": 3, "streams": 5}

``action`` is ``"join"`` or ``"leave"``; ``user`` the user's primary key as a string
(``str(pk)``), ``null`` for an anonymous stream; ``users`` and ``streams`` the channel's
distinct logged-in users and open streams after the change. Several leaves found at once
(by a sweep) all give the counts after the last of them.

**Staleness.** Pushpin 1.41 and later send a gone notice about 0.1 s after a client
disconnects (the ``link:gone`` feature): such streams are *exact*, removed at once. Behind a
proxy without gone notices (Pushpin 1.36), a closed stream stays counted until its expiry:
``ttl`` seconds (``EVENTSTREAM_PRESENCE_TTL``) after its last contact with the app (its
subscribe or a next-link fetch). An exact stream also expires when its proxy stops without
sending notices (killed, or lost with its machine). Expired streams are never counted; the
sweep deletes them and fires their leaves (``expired=True``). It runs, at most once a second
per process, on :func:`end_stream`, :func:`refresh_streams` and the reads; :func:`sweep` runs
it on demand.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from django.db import connections, router, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from . import grip
from .eventstream import send_events
from .models import PresenceChannel, PresenceMember, PresenceStream
from .registry import get_channel_manager, stored_channels
from .signals import presence_joined, presence_left

__all__ = [
    "Member",
    "Presence",
    "PresenceStats",
    "end_stream",
    "get_presence",
    "get_presence_stats",
    "presence_channels",
    "record_streams",
    "refresh_streams",
    "sweep",
]

logger = logging.getLogger("grip_eventstream")

EVENT_TYPE = "presence"
MAX_STREAM_ID_LENGTH = 64
# How long a closed exact stream may still be counted: Pushpin posts the gone notice about
# 0.1 s after the disconnect it sees, and the app answers it within a database round trip.
EXACT_STALE_WITHIN = 1.0
# The sweep runs at most once per SWEEP_INTERVAL seconds per process from the functions
# below (reads never count expired streams anyway: only their leaves wait for it), and
# deletes at most SWEEP_BATCH rows a run, so no request pays for a large backlog.
SWEEP_INTERVAL = 1.0
SWEEP_BATCH = 500
_next_sweep = 0.0  # time.monotonic() before which the sweep is skipped


# --- public API ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One entry of :attr:`Presence.members`."""

    user_pk: str | None
    """``str(pk)`` of a logged-in user; None for the entry of all anonymous streams."""
    streams: int
    """The member's open streams on the channel."""
    since: datetime
    """When the oldest of them opened."""


@dataclass(frozen=True)
class Presence:
    """Who has a stream open on a channel; see :func:`get_presence`."""

    channel: str
    members: list[Member]
    """Logged-in users, longest connected first, then one entry (``user_pk`` None) for all
    anonymous streams when there are any."""
    exact: bool
    """False when a counted stream is behind a proxy without gone notices: streams closed
    up to :attr:`stale_within` seconds ago may then still be counted."""
    stale_within: float
    """Seconds a closed stream may still be counted: about a second when :attr:`exact`,
    else up to ``EVENTSTREAM_PRESENCE_TTL``; 0 when nothing is counted."""

    @property
    def user_pks(self) -> list[str]:
        """The logged-in members' ``str(pk)``, in :attr:`members` order."""
        return [m.user_pk for m in self.members if m.user_pk is not None]


@dataclass(frozen=True)
class PresenceStats:
    """Counts of a channel's presence; see :func:`get_presence_stats`."""

    channel: str
    streams: int
    """Open streams, anonymous ones included."""
    users: int
    """Distinct logged-in users."""
    anonymous_streams: int
    exact: bool
    """As :attr:`Presence.exact`."""
    stale_within: float
    """As :attr:`Presence.stale_within`."""


def get_presence(channel: str) -> Presence:
    """Who has a stream open on ``channel``, a presence channel.

    One query (and the sweep, at most once a second per process). Raises ``ValueError``
    when the channel manager does not track ``channel`` (``is_presence_channel``).
    """
    _require_presence_channel(channel)
    _maybe_sweep()
    now = timezone.now()
    rows = (
        _live(channel, now)
        .values("user_pk")
        .annotate(
            streams=Count("pk"),
            since=Min("created"),
            inexact=Count("pk", filter=Q(exact=False)),
            last=Max("expires", filter=Q(exact=False)),
        )
        .order_by()
    )
    members, anonymous = [], None
    inexact, last = 0, None
    for row in rows:
        member = Member(row["user_pk"], row["streams"], row["since"])
        if member.user_pk is None:
            anonymous = member
        else:
            members.append(member)
        inexact += row["inexact"]
        if row["last"] is not None and (last is None or row["last"] > last):
            last = row["last"]
    members.sort(key=lambda m: (m.since, m.user_pk))
    if anonymous is not None:
        members.append(anonymous)
    return Presence(
        channel, members, inexact == 0, _stale_within(bool(members), inexact, last, now)
    )


def get_presence_stats(channel: str) -> PresenceStats:
    """The counts of :func:`get_presence` for ``channel``, without the list: one aggregate query."""
    _require_presence_channel(channel)
    _maybe_sweep()
    now = timezone.now()
    got = _live(channel, now).aggregate(
        streams=Count("pk"),
        users=Count("user_pk", distinct=True),
        anonymous=Count("pk", filter=Q(user_pk__isnull=True)),
        inexact=Count("pk", filter=Q(exact=False)),
        last=Max("expires", filter=Q(exact=False)),
    )
    return PresenceStats(
        channel,
        got["streams"],
        got["users"],
        got["anonymous"],
        got["inexact"] == 0,
        _stale_within(got["streams"] > 0, got["inexact"], got["last"], now),
    )


def presence_channels(channels: Iterable[str]) -> list[str]:
    """The presence channels among ``channels``, sorted, without duplicates.

    For the view: a stream with none needs no gone link, and costs no query.
    """
    manager = get_channel_manager()
    return sorted({c for c in channels if manager.is_presence_channel(c)})


def record_streams(
    stream_id: str,
    channels: Sequence[str],
    user_pk: str | None,
    *,
    exact: bool,
    ttl: int,
) -> None:
    """Record a new stream on its presence channels; fire the joins it makes.

    ``stream_id``: the random id the view gives the stream (at most 64 characters), which
    its gone notice and next links carry. ``channels``: the stream's channels (those that
    are not presence channels are ignored: a stream without any costs no query).
    ``user_pk``: ``str(pk)`` of the stream's user, None when anonymous. ``exact``: the proxy
    sends gone notices (``link:gone`` in ``Grip-Feature``). ``ttl``: seconds the stream is
    counted without news from it (``EVENTSTREAM_PRESENCE_TTL``).

    One SQL statement on PostgreSQL (outside a transaction, when no channel sends presence
    events); three in a transaction on SQLite (two for an anonymous stream). Recording the
    same stream again changes nothing. Raises ``django.db.DatabaseError`` when the database
    fails, with nothing recorded.
    """
    names = presence_channels(channels)
    if not names:
        return
    _check_stream_id(stream_id)
    if not isinstance(ttl, int) or ttl < 1:
        raise ValueError(f"ttl must be a whole number of seconds, at least 1, got {ttl!r}")
    user = None if user_pk is None else str(user_pk)
    now = timezone.now()
    record = _Record(stream_id, tuple(names), user, exact, now, now + timedelta(seconds=ttl))
    using = _db()
    connection = connections[using]
    manager = get_channel_manager()
    sends_events = any(manager.get_presence_events(c) for c in names)
    if (
        _mode(connection) == "postgresql"
        and not sends_events
        and not connection.in_atomic_block
        and connection.get_autocommit()
    ):
        # One statement, atomic on its own; its row locks end with it.
        _dispatch(_pg_record(connection, record), using)
        return
    # Presence events are stored before the row locks are released, so that concurrent
    # joins and leaves store their events in the order of their counts.
    with transaction.atomic(using=using):
        _dispatch(_record(connection, using, record), using)


def refresh_streams(
    stream_id: str,
    ttl: int,
    *,
    channels: Sequence[str] = (),
    user_pk: str | None = None,
) -> None:
    """Count the stream ``ttl`` more seconds from now: it has just been in touch.

    For each next-link fetch of the stream (Pushpin's periodic contact). One statement (and
    the sweep, at most once a second per process).

    A stream whose rows expired and were swept while it was in fact open (Pushpin restarts
    its link timer when events are delivered, so a busy stream may go without a fetch for
    longer than ``ttl``) is recorded again on ``channels`` for ``user_pk`` when they are
    given (the channels and user of the stream, from its next link), as not exact: its
    join fires again. Without ``channels`` it stays uncounted until it reconnects.
    """
    _check_stream_id(stream_id)
    if not isinstance(ttl, int) or ttl < 1:
        raise ValueError(f"ttl must be a whole number of seconds, at least 1, got {ttl!r}")
    using = _db()
    connection = connections[using]
    expires = connection.ops.adapt_datetimefield_value(timezone.now() + timedelta(seconds=ttl))
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection).refresh, [expires, stream_id])
        found = cursor.rowcount
    if channels and found < len(presence_channels(channels)):
        # Rows are missing (a sweep may also have taken some of a stream's rows only):
        # recording the stream again inserts those alone.
        record_streams(stream_id, channels, user_pk, exact=False, ttl=ttl)
    _maybe_sweep()


def end_stream(stream_id: str) -> None:
    """The proxy's gone notice: remove the stream, fire the leaves it makes.

    Idempotent: a replayed notice, or one for a stream without presence channels, finds
    nothing and changes nothing. One statement in a transaction on PostgreSQL (two when a
    member leaves), then the sweep, at most once a second per process.
    """
    _check_stream_id(stream_id)
    using = _db()
    connection = connections[using]
    with transaction.atomic(using=using):
        _dispatch(_remove(connection, using, stream_id=stream_id), using)
    _maybe_sweep()


def sweep(limit: int = SWEEP_BATCH) -> int:
    """Delete up to ``limit`` expired stream rows and fire the leaves they make.

    Returns the number of rows deleted (a row per stream and channel). Cheap when nothing
    has expired: one read of the expiry index. Safe to run from many processes at once:
    each takes rows the others have not locked. Runs by itself (see the module's
    description); call it from a periodic task to fire leaves when nothing else runs.
    """
    using = _db()
    connection = connections[using]
    now = timezone.now()
    when = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection).probe, [when])
        if cursor.fetchone() is None:
            return 0
    with transaction.atomic(using=using):
        changes = _remove(connection, using, expired_before=now, limit=limit)
        _dispatch(changes, using)
    return changes.rows


# --- internals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    stream_id: str
    channels: tuple[str, ...]  # sorted: every writer locks rows in the same order
    user_pk: str | None
    exact: bool
    created: datetime
    expires: datetime


@dataclass(frozen=True)
class _Change:
    action: Literal["join", "leave"]
    channel: str
    user_pk: str | None
    streams: int  # the channel's, after the change
    users: int
    expired: bool = False


class _Changes(list[_Change]):
    rows = 0  # stream rows deleted, for sweep()


# A removed group of stream rows: (channel, user_pk, rows, member row id, member's streams
# after, channel's streams after, channel's users after); the member columns are None for
# anonymous streams.
_Removed = tuple[str, str | None, int, int | None, int | None, int, int]


def _db() -> str:
    return router.db_for_write(PresenceStream)


def _live(channel: str, now: datetime) -> Any:
    return PresenceStream.objects.using(_db()).filter(channel=channel, expires__gt=now)


def _stale_within(counted: bool, inexact: int, last: datetime | None, now: datetime) -> float:
    if not counted:
        return 0.0
    if inexact and last is not None:
        return max((last - now).total_seconds(), EXACT_STALE_WITHIN)
    return EXACT_STALE_WITHIN


def _require_presence_channel(channel: str) -> None:
    grip.validate_channel(channel)
    if not get_channel_manager().is_presence_channel(channel):
        raise ValueError(
            f"{channel!r} is not a presence channel: the channel manager's "
            "is_presence_channel() must return True for it"
        )


def _check_stream_id(stream_id: object) -> None:
    if not isinstance(stream_id, str) or not 0 < len(stream_id) <= MAX_STREAM_ID_LENGTH:
        raise ValueError(
            f"stream_id must be a string of 1 to {MAX_STREAM_ID_LENGTH} characters, "
            f"got {stream_id!r}"
        )


def _maybe_sweep() -> None:
    global _next_sweep
    now = time.monotonic()
    if now < _next_sweep:
        return
    # Set before running: concurrent threads of this process skip instead of queueing.
    _next_sweep = now + SWEEP_INTERVAL
    sweep()


def _mode(connection: Any) -> Literal["postgresql", "sqlite", "orm"]:
    """How the changes are written: one statement per change on PostgreSQL, upserts with
    RETURNING in a transaction on SQLite 3.35+, the ORM elsewhere."""
    if connection.vendor == "postgresql":
        return "postgresql"
    if connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert:
        return "sqlite"
    return "orm"


def _dispatch(changes: Sequence[_Change], using: str) -> None:
    """Send the events of ``changes`` and, after the commit, their signals.

    Called inside the transaction that made the changes when it is one: stored events are
    then stored in it, under its row locks, and published when it commits.
    """
    if not changes:
        return
    manager = get_channel_manager()
    stored: list[tuple[str, str, Any]] = []
    live: list[tuple[str, str, Any]] = []
    for change in changes:
        if manager.get_presence_events(change.channel):
            data = {
                "action": change.action,
                "user": change.user_pk,
                "users": change.users,
                "streams": change.streams,
            }
            is_stored = bool(stored_channels([change.channel]))
            (stored if is_stored else live).append((change.channel, EVENT_TYPE, data))
    if stored:
        # Asynchronous: a proxy that cannot be reached must not fail a subscribe or a gone
        # notice; a stored event lost that way reaches its subscribers by gap repair.
        send_events(stored, async_publish=True)

    def after_commit() -> None:
        if live:
            # Not stored, so published at once by send_events: held back until the commit,
            # so that a rollback announces nothing.
            send_events(live, async_publish=True)
        _send_signals(changes)

    if connections[using].in_atomic_block:
        transaction.on_commit(after_commit, using=using)
    else:
        after_commit()


def _send_signals(changes: Sequence[_Change]) -> None:
    for change in changes:
        kwargs: dict[str, Any] = {
            "channel": change.channel,
            "user_pk": change.user_pk,
            "streams": change.streams,
            "users": change.users,
        }
        if change.action == "join":
            signal = presence_joined
        else:
            signal = presence_left
            kwargs["expired"] = change.expired
        # Robust: a failing receiver must not fail the stream view nor hide the change from
        # the other receivers.
        for receiver, result in signal.send_robust(sender=Presence, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "A receiver of %s (%r) raised",
                    "presence_joined" if change.action == "join" else "presence_left",
                    receiver,
                    exc_info=result,
                )


def _joins(record: _Record, rows: Iterable[tuple[str, int, int, int | None]]) -> list[_Change]:
    """Joins from (channel, channel's streams, channel's users, member's streams) after
    recording: the stream that takes a user's count from 0 to 1 joins; every anonymous one
    does."""
    return [
        _Change("join", channel, record.user_pk, streams, users)
        for channel, streams, users, member_streams in sorted(rows)
        if record.user_pk is None or member_streams == 1
    ]


def _leaves(removed: Iterable[_Removed], expired: bool) -> tuple[_Changes, list[int], list[str]]:
    """Leaves from removed groups of rows; with the member rows and channel rows now at 0."""
    changes = _Changes()
    empty_members: list[int] = []
    empty_channels: list[str] = []
    for channel, user_pk, rows, member_id, member_streams, streams, users in sorted(
        removed, key=lambda r: (r[0], r[1] or "")
    ):
        changes.rows += rows
        if user_pk is None:
            changes += [_Change("leave", channel, None, streams, users, expired)] * rows
        elif member_streams is not None and member_streams <= 0:
            changes.append(_Change("leave", channel, user_pk, streams, users, expired))
            if member_id is not None:
                empty_members.append(member_id)
        if streams <= 0 and channel not in empty_channels:
            empty_channels.append(channel)
    return changes, empty_members, empty_channels


def _record(connection: Any, using: str, record: _Record) -> list[_Change]:
    mode = _mode(connection)
    if mode == "postgresql":
        return _pg_record(connection, record)
    steps: _Steps = _SqliteSteps(connection) if mode == "sqlite" else _OrmSteps(using)
    new = steps.insert_streams(record)
    if not new:
        return []
    after: Mapping[tuple[str, str], tuple[int, int]] = {}
    if record.user_pk is not None:
        after = steps.add_to_members({(c, record.user_pk): 1 for c in new})
    rows = []
    deltas = {}
    for channel in new:
        member = after.get((channel, record.user_pk or ""))
        joined_user = member is not None and member[1] == 1
        deltas[channel] = (1, 1 if joined_user else 0)
    totals = steps.add_to_channels(deltas)
    for channel in new:
        member = after.get((channel, record.user_pk or ""))
        rows.append((channel, *totals[channel], None if member is None else member[1]))
    return _joins(record, rows)


def _remove(
    connection: Any,
    using: str,
    *,
    stream_id: str | None = None,
    expired_before: datetime | None = None,
    limit: int = SWEEP_BATCH,
) -> _Changes:
    """Delete one stream's rows, or expired rows, in the caller's transaction; the leaves."""
    mode = _mode(connection)
    if mode == "postgresql":
        removed = _pg_remove(connection, stream_id, expired_before, limit)
    else:
        steps: _Steps = _SqliteSteps(connection) if mode == "sqlite" else _OrmSteps(using)
        if stream_id is not None:
            gone = steps.delete_stream(stream_id)
        else:
            assert expired_before is not None
            gone = steps.delete_expired(expired_before, limit)
        removed = _apply_removal(steps, gone)
    changes, empty_members, empty_channels = _leaves(removed, expired=stream_id is None)
    if empty_members or empty_channels:
        # Rows at 0 are deleted, under the locks this transaction holds on them. A row left
        # at 0 would do no harm (the next join takes it to 1) but would stay for good.
        _delete_empty(using, empty_members, empty_channels)
    return changes


def _apply_removal(steps: _Steps, gone: Sequence[tuple[str, str | None]]) -> list[_Removed]:
    if not gone:
        return []
    lost = Counter(gone)
    after = steps.add_to_members({(c, u): -n for (c, u), n in lost.items() if u is not None})
    deltas: dict[str, tuple[int, int]] = {}
    for (channel, user_pk), n in lost.items():
        member = after.get((channel, user_pk)) if user_pk is not None else None
        left = member is not None and member[1] <= 0
        streams, users = deltas.get(channel, (0, 0))
        deltas[channel] = (streams - n, users - (1 if left else 0))
    totals = steps.add_to_channels(deltas)
    removed: list[_Removed] = []
    for (channel, user_pk), n in lost.items():
        member = after.get((channel, user_pk)) if user_pk is not None else None
        removed.append(
            (
                channel,
                user_pk,
                n,
                None if member is None else member[0],
                None if member is None else member[1],
                *totals[channel],
            )
        )
    return removed


def _delete_empty(using: str, members: Sequence[int], channels: Sequence[str]) -> None:
    # The ORM's delete() may read the rows first (when any pre/post_delete receiver is
    # connected): these statements delete them directly.
    connection = connections[using]
    n = _names(connection)
    with connection.cursor() as cursor:
        if members:
            marks = ", ".join(["%s"] * len(members))
            cursor.execute(
                f"DELETE FROM {n['M']} WHERE {n['m_id']} IN ({marks}) AND {n['m_streams']} <= 0",
                list(members),
            )
        if channels:
            marks = ", ".join(["%s"] * len(channels))
            cursor.execute(
                f"DELETE FROM {n['C']} WHERE {n['c_channel']} IN ({marks}) "
                f"AND {n['c_streams']} <= 0",
                list(channels),
            )


# --- the statements --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sql:
    """The hand-written statements that do not depend on the number of rows."""

    refresh: str
    probe: str
    pg_record: str
    pg_remove_stream: str
    pg_remove_expired: str


_statements_by_ops: dict[type, _Sql] = {}
_names_by_ops: dict[type, dict[str, str]] = {}


def _names(connection: Any) -> dict[str, str]:
    """Quoted table and column names: ``S``, ``M``, ``C`` the tables, ``s_*``, ``m_*``,
    ``c_*`` their columns."""
    key = type(connection.ops)  # the quoting
    names = _names_by_ops.get(key)
    if names is not None:
        return names
    quote = connection.ops.quote_name
    names = {}
    for prefix, model in (("s", PresenceStream), ("m", PresenceMember), ("c", PresenceChannel)):
        meta = model._meta
        names[prefix.upper()] = quote(meta.db_table)
        for field in meta.concrete_fields:
            names[f"{prefix}_{field.name}"] = quote(str(field.column))
    # Stored once complete: other threads read it without a lock.
    _names_by_ops[key] = names
    return names


def _statements(connection: Any) -> _Sql:
    key = type(connection.ops)
    sql = _statements_by_ops.get(key)
    if sql is None:
        sql = _statements_by_ops[key] = _build(_names(connection))
    return sql


def _build(n: dict[str, str]) -> _Sql:
    S, M, C = n["S"], n["M"], n["C"]
    # PostgreSQL: each change is one statement whose parts feed one another. Every writer
    # takes the row locks in one order (member rows by channel then user, then channel
    # rows by channel: the sorts finish each set before the next starts), so concurrent
    # subscribes and disconnects wait for one another but never deadlock. COLLATE "C" sorts
    # as Python does, whatever the database's collation.
    members_then_channels = f"""
        member AS (
            INSERT INTO {M} ({n["m_channel"]}, {n["m_user_pk"]}, {n["m_streams"]})
            SELECT channel, user_pk, -lost.n FROM lost WHERE user_pk IS NOT NULL
            ORDER BY channel COLLATE "C", user_pk COLLATE "C"
            ON CONFLICT ({n["m_channel"]}, {n["m_user_pk"]})
            DO UPDATE SET {n["m_streams"]} = {M}.{n["m_streams"]} + EXCLUDED.{n["m_streams"]}
            RETURNING {n["m_id"]} AS id, {n["m_channel"]} AS channel,
                {n["m_user_pk"]} AS user_pk, {n["m_streams"]} AS streams
        ), total AS (
            INSERT INTO {C} ({n["c_channel"]}, {n["c_streams"]}, {n["c_users"]})
            SELECT lost.channel, -SUM(lost.n), -COUNT(member.id) FILTER (
                WHERE member.streams <= 0)
            FROM lost LEFT JOIN member
                ON member.channel = lost.channel AND member.user_pk = lost.user_pk
            GROUP BY lost.channel ORDER BY lost.channel COLLATE "C"
            ON CONFLICT ({n["c_channel"]}) DO UPDATE SET
                {n["c_streams"]} = {C}.{n["c_streams"]} + EXCLUDED.{n["c_streams"]},
                {n["c_users"]} = {C}.{n["c_users"]} + EXCLUDED.{n["c_users"]}
            RETURNING {n["c_channel"]} AS channel, {n["c_streams"]} AS streams,
                {n["c_users"]} AS users
        )
        SELECT lost.channel, lost.user_pk, lost.n, member.id, member.streams,
            total.streams, total.users
        FROM lost JOIN total ON total.channel = lost.channel
        LEFT JOIN member ON member.channel = lost.channel AND member.user_pk = lost.user_pk
    """
    removal = """
        WITH gone AS ({delete} RETURNING {channel} AS channel, {user_pk} AS user_pk),
        lost AS (
            SELECT channel, user_pk, COUNT(*) AS n FROM gone GROUP BY channel, user_pk
        ), {rest}
    """
    returning = {"channel": n["s_channel"], "user_pk": n["s_user_pk"]}
    return _Sql(
        refresh=f"UPDATE {S} SET {n['s_expires']} = %s WHERE {n['s_stream_id']} = %s",
        probe=f"SELECT 1 FROM {S} WHERE {n['s_expires']} < %s LIMIT 1",
        pg_record=f"""
            WITH new AS (
                INSERT INTO {S} ({n["s_stream_id"]}, {n["s_channel"]}, {n["s_user_pk"]},
                    {n["s_exact"]}, {n["s_created"]}, {n["s_expires"]})
                SELECT %s, new_channel, %s::varchar, %s, %s, %s
                FROM unnest(%s::varchar[]) AS new_channel
                ON CONFLICT ({n["s_stream_id"]}, {n["s_channel"]}) DO NOTHING
                RETURNING {n["s_channel"]} AS channel, {n["s_user_pk"]} AS user_pk
            ), member AS (
                INSERT INTO {M} ({n["m_channel"]}, {n["m_user_pk"]}, {n["m_streams"]})
                SELECT channel, user_pk, 1 FROM new WHERE user_pk IS NOT NULL
                ORDER BY channel COLLATE "C"
                ON CONFLICT ({n["m_channel"]}, {n["m_user_pk"]})
                DO UPDATE SET {n["m_streams"]} = {M}.{n["m_streams"]} + EXCLUDED.{n["m_streams"]}
                RETURNING {n["m_channel"]} AS channel, {n["m_streams"]} AS streams
            ), total AS (
                INSERT INTO {C} ({n["c_channel"]}, {n["c_streams"]}, {n["c_users"]})
                SELECT new.channel, 1, CASE WHEN member.streams = 1 THEN 1 ELSE 0 END
                FROM new LEFT JOIN member ON member.channel = new.channel
                ORDER BY new.channel COLLATE "C"
                ON CONFLICT ({n["c_channel"]}) DO UPDATE SET
                    {n["c_streams"]} = {C}.{n["c_streams"]} + EXCLUDED.{n["c_streams"]},
                    {n["c_users"]} = {C}.{n["c_users"]} + EXCLUDED.{n["c_users"]}
                RETURNING {n["c_channel"]} AS channel, {n["c_streams"]} AS streams,
                    {n["c_users"]} AS users
            )
            SELECT total.channel, total.streams, total.users, member.streams
            FROM total LEFT JOIN member ON member.channel = total.channel
        """,
        pg_remove_stream=removal.format(
            delete=f"DELETE FROM {S} WHERE {n['s_stream_id']} = %s",
            rest=members_then_channels,
            **returning,
        ),
        pg_remove_expired=removal.format(
            # SKIP LOCKED: concurrent sweeps share the work rather than queue for it, and
            # a row being refreshed or ended right now is left to that request.
            delete=(
                f"DELETE FROM {S} WHERE {n['s_id']} IN (SELECT {n['s_id']} FROM {S} "
                f"WHERE {n['s_expires']} < %s ORDER BY {n['s_expires']} LIMIT %s "
                "FOR UPDATE SKIP LOCKED)"
            ),
            rest=members_then_channels,
            **returning,
        ),
    )


def _pg_record(connection: Any, record: _Record) -> list[_Change]:
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            _statements(connection).pg_record,
            [
                record.stream_id,
                record.user_pk,
                record.exact,
                ops.adapt_datetimefield_value(record.created),
                ops.adapt_datetimefield_value(record.expires),
                list(record.channels),
            ],
        )
        rows = cursor.fetchall()
    return _joins(record, rows)


def _pg_remove(
    connection: Any, stream_id: str | None, expired_before: datetime | None, limit: int
) -> list[_Removed]:
    sql = _statements(connection)
    with connection.cursor() as cursor:
        if stream_id is not None:
            cursor.execute(sql.pg_remove_stream, [stream_id])
        else:
            when = connection.ops.adapt_datetimefield_value(expired_before)
            cursor.execute(sql.pg_remove_expired, [when, limit])
        return [
            (channel, user_pk, int(rows), member_id, member_streams, int(streams), int(users))
            for channel, user_pk, rows, member_id, member_streams, streams, users in (
                cursor.fetchall()
            )
        ]


class _Steps(Protocol):
    """The parts of a change, as separate statements in the caller's transaction."""

    def insert_streams(self, record: _Record) -> list[str]:
        """Insert the stream's rows; the channels of those that were not there yet."""

    def delete_stream(self, stream_id: str) -> list[tuple[str, str | None]]:
        """Delete a stream's rows; their (channel, user_pk)."""

    def delete_expired(self, before: datetime, limit: int) -> list[tuple[str, str | None]]:
        """Delete up to ``limit`` rows that expired before ``before``; their (channel, user_pk)."""

    def add_to_members(
        self, deltas: Mapping[tuple[str, str], int]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Add to the (channel, user_pk) member rows; their (id, streams) after."""

    def add_to_channels(self, deltas: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """Add (streams, users) to the channel rows; their (streams, users) after."""


class _SqliteSteps:
    """Upserts with RETURNING (SQLite 3.35+). SQLite runs one writer at a time, so the
    transaction alone orders them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.n = _names(connection)

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def insert_streams(self, record: _Record) -> list[str]:
        n = self.n
        ops = self.connection.ops
        created = ops.adapt_datetimefield_value(record.created)
        expires = ops.adapt_datetimefield_value(record.expires)
        params: list[Any] = []
        for channel in record.channels:
            params += [record.stream_id, channel, record.user_pk, record.exact, created, expires]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(record.channels))
        rows = self._run(
            f"INSERT INTO {n['S']} ({n['s_stream_id']}, {n['s_channel']}, {n['s_user_pk']}, "
            f"{n['s_exact']}, {n['s_created']}, {n['s_expires']}) VALUES {values} "
            f"ON CONFLICT ({n['s_stream_id']}, {n['s_channel']}) DO NOTHING "
            f"RETURNING {n['s_channel']}",
            params,
        )
        return sorted(channel for (channel,) in rows)

    def delete_stream(self, stream_id: str) -> list[tuple[str, str | None]]:
        n = self.n
        rows = self._run(
            f"DELETE FROM {n['S']} WHERE {n['s_stream_id']} = %s "
            f"RETURNING {n['s_channel']}, {n['s_user_pk']}",
            [stream_id],
        )
        return [(channel, user_pk) for channel, user_pk in rows]

    def delete_expired(self, before: datetime, limit: int) -> list[tuple[str, str | None]]:
        n = self.n
        rows = self._run(
            f"DELETE FROM {n['S']} WHERE {n['s_id']} IN (SELECT {n['s_id']} FROM {n['S']} "
            f"WHERE {n['s_expires']} < %s ORDER BY {n['s_expires']} LIMIT %s) "
            f"RETURNING {n['s_channel']}, {n['s_user_pk']}",
            [self.connection.ops.adapt_datetimefield_value(before), limit],
        )
        return [(channel, user_pk) for channel, user_pk in rows]

    def add_to_members(
        self, deltas: Mapping[tuple[str, str], int]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        if not deltas:
            return {}
        n = self.n
        keys = sorted(deltas)
        params: list[Any] = []
        for channel, user_pk in keys:
            params += [channel, user_pk, deltas[channel, user_pk]]
        values = ", ".join(["(%s, %s, %s)"] * len(keys))
        rows = self._run(
            f"INSERT INTO {n['M']} ({n['m_channel']}, {n['m_user_pk']}, {n['m_streams']}) "
            f"VALUES {values} ON CONFLICT ({n['m_channel']}, {n['m_user_pk']}) "
            f"DO UPDATE SET {n['m_streams']} = {n['M']}.{n['m_streams']} + "
            f"excluded.{n['m_streams']} "
            f"RETURNING {n['m_id']}, {n['m_channel']}, {n['m_user_pk']}, {n['m_streams']}",
            params,
        )
        return {(channel, user_pk): (pk, streams) for pk, channel, user_pk, streams in rows}

    def add_to_channels(self, deltas: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        if not deltas:
            return {}
        n = self.n
        keys = sorted(deltas)
        params: list[Any] = []
        for channel in keys:
            params += [channel, *deltas[channel]]
        values = ", ".join(["(%s, %s, %s)"] * len(keys))
        rows = self._run(
            f"INSERT INTO {n['C']} ({n['c_channel']}, {n['c_streams']}, {n['c_users']}) "
            f"VALUES {values} ON CONFLICT ({n['c_channel']}) DO UPDATE SET "
            f"{n['c_streams']} = {n['C']}.{n['c_streams']} + excluded.{n['c_streams']}, "
            f"{n['c_users']} = {n['C']}.{n['c_users']} + excluded.{n['c_users']} "
            f"RETURNING {n['c_channel']}, {n['c_streams']}, {n['c_users']}",
            params,
        )
        return {channel: (streams, users) for channel, streams, users in rows}


class _OrmSteps:
    """Any database: rows locked with SELECT ... FOR UPDATE in a fixed order, then updated."""

    def __init__(self, using: str) -> None:
        self.using = using

    def insert_streams(self, record: _Record) -> list[str]:
        streams = PresenceStream.objects.using(self.using)
        there = set(streams.filter(stream_id=record.stream_id).values_list("channel", flat=True))
        new = [c for c in record.channels if c not in there]
        streams.bulk_create(
            PresenceStream(
                stream_id=record.stream_id,
                channel=channel,
                user_pk=record.user_pk,
                exact=record.exact,
                created=record.created,
                expires=record.expires,
            )
            for channel in new
        )
        return new

    def _delete(self, rows: Any, limit: int | None = None) -> list[tuple[str, str | None]]:
        locked = rows.select_for_update().values_list("pk", "channel", "user_pk")
        found = list(locked if limit is None else locked[:limit])
        PresenceStream.objects.using(self.using).filter(pk__in=[r[0] for r in found]).delete()
        return [(channel, user_pk) for _, channel, user_pk in found]

    def delete_stream(self, stream_id: str) -> list[tuple[str, str | None]]:
        return self._delete(
            PresenceStream.objects.using(self.using).filter(stream_id=stream_id).order_by("pk")
        )

    def delete_expired(self, before: datetime, limit: int) -> list[tuple[str, str | None]]:
        expired = PresenceStream.objects.using(self.using).filter(expires__lt=before)
        return self._delete(expired.order_by("expires"), limit)

    def add_to_members(
        self, deltas: Mapping[tuple[str, str], int]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        if not deltas:
            return {}
        members = PresenceMember.objects.using(self.using)
        keys = sorted(deltas)
        members.bulk_create(
            [PresenceMember(channel=c, user_pk=u, streams=0) for c, u in keys],
            ignore_conflicts=True,
        )
        wanted = Q()
        for channel, user_pk in keys:
            wanted |= Q(channel=channel, user_pk=user_pk)
        after = {}
        for row in members.select_for_update().filter(wanted).order_by("channel", "user_pk"):
            streams = row.streams + deltas[row.channel, row.user_pk]
            members.filter(pk=row.pk).update(streams=streams)
            after[row.channel, row.user_pk] = (row.pk, streams)
        return after

    def add_to_channels(self, deltas: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        if not deltas:
            return {}
        channels = PresenceChannel.objects.using(self.using)
        keys = sorted(deltas)
        channels.bulk_create(
            [PresenceChannel(channel=c, streams=0, users=0) for c in keys],
            ignore_conflicts=True,
        )
        after = {}
        for row in channels.select_for_update().filter(channel__in=keys).order_by("channel"):
            streams = row.streams + deltas[row.channel][0]
            users = row.users + deltas[row.channel][1]
            channels.filter(pk=row.pk).update(streams=streams, users=users)
            after[row.channel] = (streams, users)
        return after

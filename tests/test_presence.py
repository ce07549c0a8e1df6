"""grip_eventstream.presence: who has a stream open on a channel; joins and leaves.

Transactional tests: joins and leaves are signalled after the commit, and the concurrency
tests need other connections to see the rows. Run on PostgreSQL too (GES_TEST_DB=postgres),
where concurrent writers really run at once.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

import grip_eventstream
from grip_eventstream import presence
from grip_eventstream.models import Event, PresenceChannel, PresenceMember, PresenceStream
from grip_eventstream.presence import (
    EXACT_STALE_WITHIN,
    Member,
    end_stream,
    get_presence,
    get_presence_stats,
    record_streams,
    refresh_streams,
    sweep,
)
from grip_eventstream.signals import presence_joined, presence_left
from tests.channelmanagers import TestChannelManager

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TTL = 60


class PresenceManager(TestChannelManager):
    """room-* and lobby are presence channels; room-ev-* also send presence events."""

    def is_presence_channel(self, channel):
        return channel.startswith("room-") or channel == "lobby"

    def get_presence_events(self, channel):
        return channel.startswith("room-ev-")


@pytest.fixture(autouse=True)
def _presence_manager(settings, monkeypatch):
    settings.EVENTSTREAM_CHANNELMANAGER_CLASS = "tests.test_presence.PresenceManager"
    # The sweep on every read, not once a second, so that tests see its effects at once.
    monkeypatch.setattr(presence, "SWEEP_INTERVAL", 0.0)
    monkeypatch.setattr(presence, "_next_sweep", 0.0)


class Signals(list):
    """("join" | "leave", channel, user_pk, streams, users[, expired]) as fired."""

    def of(self, action):
        return [s for s in self if s[0] == action]


@pytest.fixture
def signals():
    got = Signals()

    def joined(sender, channel, user_pk, streams, users, **kwargs):
        assert sender is presence.Presence
        got.append(("join", channel, user_pk, streams, users))

    def left(sender, channel, user_pk, streams, users, expired, **kwargs):
        got.append(("leave", channel, user_pk, streams, users, expired))

    presence_joined.connect(joined, weak=False)
    presence_left.connect(left, weak=False)
    yield got
    presence_joined.disconnect(joined)
    presence_left.disconnect(left)


def record(stream_id, channels=("room-a",), user="1", *, exact=True, ttl=TTL):
    record_streams(stream_id, list(channels), user, exact=exact, ttl=ttl)


def expire(*stream_ids):
    """As if the streams' proxy had gone without a word: their expiry has passed."""
    PresenceStream.objects.filter(stream_id__in=stream_ids).update(
        expires=timezone.now() - timedelta(seconds=1)
    )


def assert_counters_match_streams():
    """The counter tables agree with the stream rows (none of which has expired)."""
    rows = list(PresenceStream.objects.values_list("channel", "user_pk"))
    members = {
        (c, u): n for c, u, n in PresenceMember.objects.values_list("channel", "user_pk", "streams")
    }
    expected_members: dict[tuple[str, str], int] = {}
    for channel, user_pk in rows:
        if user_pk is not None:
            expected_members[channel, user_pk] = expected_members.get((channel, user_pk), 0) + 1
    assert members == expected_members
    totals = {
        c: (s, u) for c, s, u in PresenceChannel.objects.values_list("channel", "streams", "users")
    }
    expected_totals = {}
    for channel in {c for c, _ in rows}:
        streams = sum(1 for c, _ in rows if c == channel)
        users = len({u for c, u in rows if c == channel and u is not None})
        expected_totals[channel] = (streams, users)
    assert totals == expected_totals


# --- joins and leaves -----------------------------------------------------------------------


def test_a_users_first_stream_joins_and_last_leaves(signals):
    record("s1", ["room-a", "room-b"], "1")
    record("s2", ["room-a"], "1")
    assert signals == [("join", "room-a", "1", 1, 1), ("join", "room-b", "1", 1, 1)]
    signals.clear()
    end_stream("s1")
    assert signals == [("leave", "room-b", "1", 0, 0, False)]  # s2 keeps the user on room-a
    end_stream("s2")
    assert signals == [("leave", "room-b", "1", 0, 0, False), ("leave", "room-a", "1", 0, 0, False)]
    assert_counters_match_streams()
    assert not PresenceMember.objects.exists()
    assert not PresenceChannel.objects.exists()


def test_counts_are_the_channels_after_the_change(signals):
    record("s1", user="1")
    record("s2", user="2")
    record("s3", user="2")
    record("s4", user=None)
    end_stream("s1")
    assert signals == [
        ("join", "room-a", "1", 1, 1),
        ("join", "room-a", "2", 2, 2),
        ("join", "room-a", None, 4, 2),
        ("leave", "room-a", "1", 3, 1, False),
    ]


def test_each_anonymous_stream_is_a_member_of_its_own(signals):
    record("s1", user=None)
    record("s2", user=None)
    assert signals == [("join", "room-a", None, 1, 0), ("join", "room-a", None, 2, 0)]
    (entry,) = get_presence("room-a").members
    assert (entry.user_pk, entry.streams) == (None, 2)
    end_stream("s2")
    end_stream("s1")
    assert signals.of("leave") == [
        ("leave", "room-a", None, 1, 0, False),
        ("leave", "room-a", None, 0, 0, False),
    ]
    assert not PresenceMember.objects.exists()


def test_a_user_pk_is_stored_as_a_string(signals):
    record("s1", user=42)
    assert signals == [("join", "room-a", "42", 1, 1)]
    assert get_presence("room-a").user_pks == ["42"]


def test_a_gone_notice_is_idempotent(signals):
    record("s1")
    end_stream("s1")
    end_stream("s1")  # replayed
    end_stream("never-recorded")
    assert signals.of("leave") == [("leave", "room-a", "1", 0, 0, False)]


def test_recording_a_stream_again_changes_nothing(signals):
    record("s1")
    record("s1")
    assert signals == [("join", "room-a", "1", 1, 1)]
    assert get_presence_stats("room-a").streams == 1
    assert_counters_match_streams()


def test_only_presence_channels_are_recorded(signals):
    record("s1", ["room-a", "plain", "lobby", "room-a"])
    assert sorted(PresenceStream.objects.values_list("channel", flat=True)) == ["lobby", "room-a"]
    assert [s[1] for s in signals] == ["lobby", "room-a"]


def test_a_rolled_back_record_fires_nothing(signals):
    def rolled_back():
        with transaction.atomic():
            record("s1")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    assert signals == []
    assert not PresenceStream.objects.exists()
    assert not PresenceMember.objects.exists()


def test_in_the_callers_transaction_signals_wait_for_its_commit(signals):
    with transaction.atomic():
        record("s1")
        assert signals == []
    assert signals == [("join", "room-a", "1", 1, 1)]


def test_a_failing_receiver_is_logged_and_others_still_run(signals, caplog):
    def broken(sender, **kwargs):
        raise ValueError("receiver bug")

    presence_joined.connect(broken, weak=False)
    try:
        record("s1")
    finally:
        presence_joined.disconnect(broken)
    assert signals == [("join", "room-a", "1", 1, 1)]
    assert "A receiver of presence_joined" in caplog.text
    assert "receiver bug" in caplog.text
    assert PresenceStream.objects.count() == 1


# --- reads, exactness and staleness ---------------------------------------------------------


def test_presence_lists_users_longest_connected_first_then_anonymous():
    record("s1", user="2")
    record("s2", user=None)
    record("s3", user="1")
    record("s4", user="2")
    got = get_presence("room-a")
    assert [(m.user_pk, m.streams) for m in got.members] == [("2", 2), ("1", 1), (None, 1)]
    assert all(isinstance(m, Member) for m in got.members)
    first = PresenceStream.objects.get(stream_id="s1").created
    assert got.members[0].since == first
    assert got.user_pks == ["2", "1"]
    assert (got.exact, got.stale_within) == (True, EXACT_STALE_WITHIN)


def test_stats():
    record("s1", ["room-a", "room-b"], "1")
    record("s2", user="1")
    record("s3", user="2")
    record("s4", user=None)
    record("s5", user=None)
    stats = get_presence_stats("room-a")
    assert (stats.streams, stats.users, stats.anonymous_streams) == (5, 2, 2)
    assert (stats.exact, stats.stale_within) == (True, EXACT_STALE_WITHIN)
    assert get_presence_stats("room-b").streams == 1


def test_an_empty_channel():
    got = get_presence("room-z")
    assert (got.members, got.exact, got.stale_within) == ([], True, 0.0)
    stats = get_presence_stats("room-z")
    assert (stats.streams, stats.users, stats.exact, stats.stale_within) == (0, 0, True, 0.0)


def test_a_stream_without_gone_notices_makes_presence_inexact():
    record("s1", exact=True)
    record("s2", user="2", exact=False, ttl=100)
    got = get_presence("room-a")
    assert not got.exact
    assert 98 < got.stale_within <= 100
    stats = get_presence_stats("room-a")
    assert not stats.exact
    assert 98 < stats.stale_within <= 100
    end_stream("s2")
    assert get_presence("room-a").exact


def test_reads_never_count_expired_streams(monkeypatch, signals):
    monkeypatch.setattr(presence, "sweep", lambda limit=500: 0)  # only the reads' filter
    record("s1", user="1")
    record("s2", user="2")
    expire("s1")
    assert get_presence("room-a").user_pks == ["2"]
    assert get_presence_stats("room-a").users == 1
    assert signals.of("leave") == []  # the sweep fires the leave


def test_the_sweep_deletes_expired_streams_and_fires_their_leaves_once(signals):
    record("s1", ["room-a", "room-b"], "1", exact=False)
    record("s2", user="1")
    record("s3", user=None, exact=False)
    record("s4", user="2")
    expire("s1", "s3")
    assert sweep() == 3
    assert sorted(signals.of("leave")) == [
        ("leave", "room-a", None, 2, 2, True),
        ("leave", "room-b", "1", 0, 0, True),
    ]
    assert sweep() == 0
    assert len(signals.of("leave")) == 2
    assert get_presence("room-a").user_pks == ["1", "2"]
    assert_counters_match_streams()


def test_the_sweep_fires_one_leave_for_a_users_expired_streams(signals):
    record("s1", user="1")
    record("s2", user="1")
    expire("s1", "s2")
    assert sweep() == 2
    assert signals.of("leave") == [("leave", "room-a", "1", 0, 0, True)]


def test_the_sweep_is_bounded(signals):
    for n in range(5):
        record(f"s{n}", user=None)
    expire(*(f"s{n}" for n in range(5)))
    assert sweep(limit=2) == 2
    assert len(signals.of("leave")) == 2
    assert sweep() == 3


def test_reads_gone_notices_and_refreshes_run_the_sweep(signals):
    for n, run in enumerate(
        [lambda: get_presence("room-a"), lambda: end_stream("x"), lambda: refresh_streams("x", TTL)]
    ):
        record(f"s{n}")
        expire(f"s{n}")
        run()
        assert signals[-1] == ("leave", "room-a", "1", 0, 0, True)


def test_the_sweep_runs_at_most_once_a_second_per_process(monkeypatch):
    runs = []
    monkeypatch.setattr(presence, "sweep", lambda limit=500: runs.append(1))
    monkeypatch.setattr(presence, "SWEEP_INTERVAL", 1.0)
    get_presence("room-a")
    get_presence("room-a")
    assert runs == [1]
    monkeypatch.setattr(presence, "_next_sweep", 0.0)
    get_presence("room-a")
    assert runs == [1, 1]


def test_refresh_extends_the_expiry():
    record("s1", ["room-a", "room-b"], ttl=10)
    before = PresenceStream.objects.get(stream_id="s1", channel="room-a").expires
    refresh_streams("s1", 1000)
    for row in PresenceStream.objects.filter(stream_id="s1"):
        assert row.expires > before + timedelta(seconds=900)


def test_a_refresh_in_time_saves_an_expired_stream_from_the_sweep(signals):
    record("s1")
    expire("s1")
    refresh_streams("s1", TTL)  # the stream was alive after all: no leave
    assert signals.of("leave") == []
    assert get_presence("room-a").user_pks == ["1"]


def test_a_refresh_records_a_swept_stream_again_when_given_its_channels(signals):
    record("s1", ["room-a", "plain"], "1", exact=True)
    expire("s1")
    sweep()
    refresh_streams("s1", TTL)
    assert not PresenceStream.objects.exists()  # not without its channels
    refresh_streams("s1", TTL, channels=["room-a", "plain"], user_pk="1")
    assert signals == [
        ("join", "room-a", "1", 1, 1),
        ("leave", "room-a", "1", 0, 0, True),
        ("join", "room-a", "1", 1, 1),
    ]
    got = get_presence("room-a")
    assert got.user_pks == ["1"]
    assert not got.exact  # recorded again: its proxy's gone notice may have come and gone


def test_a_refresh_records_again_the_rows_a_bounded_sweep_took(signals):
    record("s1", ["room-a", "room-b"], "1", exact=False)
    expire("s1")
    assert sweep(limit=1) == 1  # one of the stream's two rows
    refresh_streams("s1", TTL, channels=["room-a", "room-b"], user_pk="1")
    assert sorted(PresenceStream.objects.values_list("channel", flat=True)) == ["room-a", "room-b"]
    assert len(signals.of("leave")) == 1
    assert len(signals.of("join")) == 3  # both at first, then the swept one again
    assert_counters_match_streams()


# --- costs ----------------------------------------------------------------------------------


def test_channels_without_presence_cost_nothing(django_assert_num_queries, signals):
    with django_assert_num_queries(0):
        record("s1", ["plain", "volatile-x"])
        record_streams("s2", [], None, exact=True, ttl=TTL)
        with pytest.raises(ValueError, match="is not a presence channel"):
            get_presence("plain")
        with pytest.raises(ValueError, match="is not a presence channel"):
            get_presence_stats("plain")
    assert signals == []


def test_statements_per_subscribe(django_assert_num_queries):
    record("s0", ["room-a", "room-b"], "1")  # the user's first stream: a join
    if connection.vendor == "postgresql":
        # One statement, outside a transaction, joins or not.
        for stream_id, user in (("s1", "1"), ("s2", "2"), ("s3", None)):
            with django_assert_num_queries(1):
                record(stream_id, ["room-a", "room-b"], user)
    else:
        # BEGIN, the stream's rows, the user's counters, the channels' counters, COMMIT.
        with django_assert_num_queries(5):
            record("s1", ["room-a", "room-b"], "1")
        with django_assert_num_queries(4):  # anonymous: no user counter
            record("s2", ["room-a", "room-b"], None)


def test_statements_per_refresh_and_read(django_assert_num_queries, monkeypatch):
    record("s1")
    monkeypatch.setattr(presence, "SWEEP_INTERVAL", 1000.0)
    get_presence("room-a")  # sweeps, then not for a while
    with django_assert_num_queries(1):
        refresh_streams("s1", TTL)
    with django_assert_num_queries(1):
        get_presence("room-a")
    with django_assert_num_queries(1):
        get_presence_stats("room-a")


def test_a_sweep_with_nothing_expired_is_one_read(django_assert_num_queries):
    record("s1")
    with django_assert_num_queries(1):
        assert sweep() == 0


# --- events on the channel ------------------------------------------------------------------


def test_joins_and_leaves_are_stored_events_in_order(eventstream_outbox):
    from grip_eventstream import send_event

    send_event("room-ev-1", "message", {"n": 1})
    record("s1", ["room-ev-1", "room-a"], "1")
    record("s2", ["room-ev-1"], None)
    record("s3", ["room-ev-1"], "1")  # the user's second stream: no event
    send_event("room-ev-1", "message", {"n": 2})
    end_stream("s1")
    end_stream("s3")
    expire("s2")
    sweep()
    sent = eventstream_outbox.on("room-ev-1")
    assert [(e.event_type, e.json()) for e in sent] == [
        ("message", {"n": 1}),
        ("presence", {"action": "join", "user": "1", "users": 1, "streams": 1}),
        ("presence", {"action": "join", "user": None, "users": 1, "streams": 2}),
        ("message", {"n": 2}),
        ("presence", {"action": "leave", "user": "1", "users": 0, "streams": 1}),
        ("presence", {"action": "leave", "user": None, "users": 0, "streams": 0}),
    ]
    assert [e.seq for e in sent] == [1, 2, 3, 4, 5, 6]  # stored, in this order
    assert eventstream_outbox.on("room-a") == []  # a presence channel without events


def test_events_of_an_unstored_channel_are_sent_after_the_commit(eventstream_outbox, settings):
    settings.EVENTSTREAM_STORAGE_CLASS = None
    with transaction.atomic():
        record("s1", ["room-ev-1"], "1")
        assert eventstream_outbox == []
    (event,) = eventstream_outbox
    assert (event.event_type, event.seq) == ("presence", None)
    assert event.json() == {"action": "join", "user": "1", "users": 1, "streams": 1}


def test_an_event_that_cannot_be_stored_leaves_nothing_recorded(eventstream_outbox, monkeypatch):
    from django.db import DatabaseError

    def fail(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr("grip_eventstream.storage.DjangoModelStorage.append_events", fail)
    with pytest.raises(DatabaseError):
        record("s1", ["room-ev-1"], "1")
    assert not PresenceStream.objects.exists()
    assert eventstream_outbox == []


# --- other databases: the ORM -------------------------------------------------------------


def test_through_the_orm(monkeypatch, signals, eventstream_outbox):
    monkeypatch.setattr(presence, "_mode", lambda connection: "orm")
    record("s1", ["room-ev-1", "room-a"], "1")
    record("s2", ["room-a"], "1")
    record("s2", ["room-a"], "1")  # again: nothing
    record("s3", ["room-a"], None, exact=False)
    end_stream("s1")
    end_stream("s1")
    expire("s3")
    assert sweep() == 1
    assert signals == [
        ("join", "room-a", "1", 1, 1),
        ("join", "room-ev-1", "1", 1, 1),
        ("join", "room-a", None, 3, 1),
        ("leave", "room-ev-1", "1", 0, 0, False),
        ("leave", "room-a", None, 1, 1, True),
    ]
    assert [e.json()["action"] for e in eventstream_outbox.on("room-ev-1")] == ["join", "leave"]
    assert_counters_match_streams()
    end_stream("s2")
    assert signals[-1] == ("leave", "room-a", "1", 0, 0, False)
    assert not PresenceMember.objects.exists()
    assert not PresenceChannel.objects.exists()


# --- concurrency: threads and processes -----------------------------------------------------


def run_threads(functions, timeout=120):
    """Run each function in its own thread (and database connection), all started at once."""
    barrier = threading.Barrier(len(functions))
    errors = []

    def run(function):
        try:
            barrier.wait(timeout=30)
            function()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's connections

    threads = [threading.Thread(target=run, args=(f,)) for f in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_concurrent_subscribes_of_one_user_join_once_and_leave_once(signals):
    ids = [[f"t{t}-s{n}" for n in range(3)] for t in range(8)]
    channels = ["room-a", "room-b", "room-c"]

    def subscribe(mine, order):
        return lambda: [record(s, order, "1") for s in mine]

    run_threads([subscribe(mine, random.sample(channels, 3)) for mine in ids])
    assert sorted(signals) == [("join", c, "1", 1, 1) for c in channels]
    assert {m.streams for c in channels for m in get_presence(c).members} == {24}
    assert_counters_match_streams()
    signals.clear()

    def unsubscribe(mine):
        return lambda: [end_stream(s) for s in mine]  # type: ignore[func-returns-value]

    run_threads([unsubscribe(mine) for mine in ids])
    assert sorted(signals) == [("leave", c, "1", 0, 0, False) for c in channels]
    assert not PresenceStream.objects.exists()


def test_concurrent_gone_notices_of_one_stream_leave_once(signals):
    record("s1", ["room-a", "room-b"], "1")
    run_threads([lambda: end_stream("s1")] * 8)
    assert sorted(signals.of("leave")) == [
        ("leave", "room-a", "1", 0, 0, False),
        ("leave", "room-b", "1", 0, 0, False),
    ]


def test_concurrent_joins_store_their_counts_in_order(eventstream_outbox):
    users = [str(n) for n in range(10)]
    run_threads([lambda u=u: record(f"s{u}", ["room-ev-1"], u) for u in users])
    stored = Event.objects.filter(channel="room-ev-1").order_by("seq")
    data = [json.loads(text) for text in stored.values_list("data", flat=True)]
    assert [d["users"] for d in data] == list(range(1, 11))
    assert [d["streams"] for d in data] == list(range(1, 11))


def test_a_mixed_concurrent_load_stays_consistent(signals):
    """Subscribes, gone notices, refreshes, expiries and sweeps of many users on overlapping
    channels at once: no deadlock, no error, and every join matched by a leave."""
    channel_sets = [
        ["room-a", "room-b"],
        ["room-b", "room-c"],
        ["room-a", "room-c"],
        ["lobby", "room-a"],
    ]
    users = ["1", "2", "3", None]

    def worker(t):
        rng = random.Random(t)
        open_streams: list[str] = []

        def run():
            for n in range(30):
                roll = rng.random()
                if roll < 0.5 or not open_streams:
                    stream_id = f"t{t}-{n}"
                    channels, user = rng.choice(channel_sets), rng.choice(users)
                    record(stream_id, channels, user, exact=rng.random() < 0.5)
                    open_streams.append(stream_id)
                elif roll < 0.75:
                    end_stream(open_streams.pop(rng.randrange(len(open_streams))))
                elif roll < 0.85:
                    expire(open_streams.pop(rng.randrange(len(open_streams))))  # a ghost
                elif roll < 0.95:
                    refresh_streams(rng.choice(open_streams), TTL)
                else:
                    sweep()

        return run

    run_threads([worker(t) for t in range(6)])
    while sweep():
        pass
    assert_counters_match_streams()
    live = list(PresenceStream.objects.values_list("channel", "user_pk"))
    for channel, user in itertools.product({c for s in channel_sets for c in s}, users):
        joins = sum(1 for s in signals if s[0] == "join" and s[1:3] == (channel, user))
        leaves = sum(1 for s in signals if s[0] == "leave" and s[1:3] == (channel, user))
        present = sum(1 for row in live if row == (channel, user))
        assert joins - leaves == (present if user is None else min(present, 1)), (channel, user)
    for stream_id in set(PresenceStream.objects.values_list("stream_id", flat=True)):
        end_stream(stream_id)
    joins = len(signals.of("join"))
    assert joins > 0
    assert len(signals.of("leave")) == joins
    assert not PresenceMember.objects.exists()
    assert not PresenceChannel.objects.exists()


PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import django
    django.setup()
    from django.test.utils import override_settings
    override_settings(EVENTSTREAM_CHANNELMANAGER_CLASS="tests.test_presence.PresenceManager").enable()
    from grip_eventstream import presence
    from grip_eventstream.signals import presence_joined, presence_left
    got = []
    presence_joined.connect(lambda sender, **kw: got.append(["join", kw["channel"]]), weak=False)
    presence_left.connect(lambda sender, **kw: got.append(["leave", kw["channel"]]), weak=False)
    action, start, *ids = sys.argv[1:]
    while time.time() < float(start):
        time.sleep(0.001)
    for stream_id in ids:
        if action == "record":
            presence.record_streams(stream_id, ["room-a", "room-b"], "7", exact=True, ttl=60)
        else:
            presence.end_stream(stream_id)
    print(json.dumps(got))
    """
)


def test_concurrent_processes_join_once_and_leave_once(test_db_name):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "GES_DB_NAME": test_db_name,
        "PYTHONPATH": str(ROOT),
    }
    ids = [[f"p{p}-s{n}" for n in range(5)] for p in range(3)]

    def run_all(action):
        start = time.time() + 3  # every process is set up by then: they run at once
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", PROCESS_SCRIPT, action, str(start), *mine],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for mine in ids
        ]
        fired = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            fired += json.loads(out.strip().splitlines()[-1])
        return sorted(fired)

    assert run_all("record") == [["join", "room-a"], ["join", "room-b"]]
    assert get_presence("room-a").members[0].streams == 15  # read here, written there
    assert run_all("end") == [["leave", "room-a"], ["leave", "room-b"]]
    assert not PresenceStream.objects.exists()


# --- query plans: index reads, never a scan of the stream rows ------------------------------


def _plans(call):
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    plans = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            sql = query["sql"]
            statements = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
            if not sql.lstrip().upper().startswith(statements):
                continue  # BEGIN, COMMIT, savepoints
            cursor.execute(prefix + sql)
            plans.append(" ".join(str(column) for row in cursor.fetchall() for column in row))
    return plans


@pytest.fixture
def many_streams():
    now = timezone.now()
    PresenceStream.objects.bulk_create(
        PresenceStream(
            stream_id=f"bulk-{n}",
            channel=f"room-{n % 200}",
            user_pk=str(n % 1000),
            exact=True,
            created=now,
            expires=now + timedelta(seconds=TTL + n % 100),
        )
        for n in range(20_000)
    )
    record("s1", ["room-1", "room-2"], "1")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def assert_no_stream_scan(plan):
    table = "grip_eventstream_presencestream"
    if connection.vendor == "sqlite":
        assert f"SCAN {table}" not in plan, plan
    else:
        assert f"Seq Scan on {table}" not in plan, plan


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_presence("room-1"),
        lambda: get_presence_stats("room-1"),
        lambda: refresh_streams("s1", TTL),
        lambda: end_stream("s1"),
        lambda: sweep(),
        lambda: record("s2", ["room-1", "room-3"], "2"),
    ],
    ids=["presence", "stats", "refresh", "end", "sweep", "record"],
)
def test_queries_read_the_stream_rows_by_index(many_streams, call):
    plans = _plans(call)
    assert plans
    for plan in plans:
        assert_no_stream_scan(plan)


def test_reads_use_the_channel_expiry_index(many_streams):
    for plan in _plans(lambda: get_presence_stats("room-1"))[-1:]:
        if connection.vendor == "sqlite":
            assert "USING INDEX grip_es_presence_live (channel=? AND expires>?)" in plan, plan
        else:
            assert "grip_es_presence_live" in plan, plan


def test_a_sweep_with_nothing_expired_reads_the_expiry_index(many_streams):
    (plan,) = _plans(sweep)
    if connection.vendor == "sqlite":
        assert "expires<?" in plan, plan
        assert "SEARCH grip_eventstream_presencestream USING COVERING INDEX" in plan, plan
    else:
        assert "Index Only Scan using grip_eventstream_presencestream_expires" in plan, plan


def test_a_gone_notice_finds_the_stream_by_its_id(many_streams):
    plan = _plans(lambda: end_stream("s1"))[0]
    if connection.vendor == "sqlite":
        # The unique constraint's index (SQLite names it sqlite_autoindex_...).
        assert "SEARCH grip_eventstream_presencestream USING" in plan, plan
        assert "INDEX" in plan, plan
        assert "(stream_id=?)" in plan, plan
    else:
        assert "grip_es_presence_stream_channel" in plan, plan


# --- validation and the package's exports ---------------------------------------------------


@pytest.mark.parametrize("stream_id", ["", "x" * 65, None, 7])
def test_a_bad_stream_id(stream_id):
    for call in (
        lambda: record(stream_id),
        lambda: end_stream(stream_id),
        lambda: refresh_streams(stream_id, TTL),
    ):
        with pytest.raises(ValueError, match="stream_id"):
            call()


@pytest.mark.parametrize("ttl", [0, -1, 1.5, None])
def test_a_bad_ttl(ttl):
    with pytest.raises(ValueError, match="ttl"):
        record("s1", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        refresh_streams("s1", ttl)


def test_a_bad_channel_name_for_a_read():
    from grip_eventstream.exceptions import InvalidChannel

    with pytest.raises(InvalidChannel):
        get_presence("room-\n")


def test_the_package_exports_the_reads():
    assert grip_eventstream.get_presence is get_presence
    assert grip_eventstream.get_presence_stats is get_presence_stats
    assert {"get_presence", "get_presence_stats"} <= set(grip_eventstream.__all__)


def test_the_ttl_setting_outlasts_the_link_timeout(settings):
    from grip_eventstream.conf import conf

    assert conf.EVENTSTREAM_PRESENCE_TTL == settings.EVENTSTREAM_LINK_TIMEOUT + 60
    settings.EVENTSTREAM_LINK_TIMEOUT = 0  # Pushpin's own default: 120 s
    assert conf.EVENTSTREAM_PRESENCE_TTL == 180
    settings.EVENTSTREAM_PRESENCE_TTL = 30
    assert conf.EVENTSTREAM_PRESENCE_TTL == 30

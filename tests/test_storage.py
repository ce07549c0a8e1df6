from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from grip_eventstream import storage as storage_module
from grip_eventstream.cursor import epoch_from_int
from grip_eventstream.models import ChannelCounter, Event
from grip_eventstream.storage import DjangoModelStorage, EventStorage

pytestmark = pytest.mark.django_db


@pytest.fixture
def store():
    return DjangoModelStorage()


def test_sequence_numbers_are_gapless_per_channel(store):
    assert [store.append_event("a", "m", "{}", 60).seq for _ in range(3)] == [1, 2, 3]
    assert store.append_event("b", "m", "{}", 60).seq == 1
    assert store.get_current_ids(["a", "b", "c"]) == {"a": 3, "b": 1, "c": 0}


def test_a_rolled_back_event_gives_its_number_back(store):
    store.append_event("a", "m", "{}", 60)

    def rolled_back():
        with transaction.atomic():
            store.append_event("a", "m", "{}", 60)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    assert store.append_event("a", "m", "{}", 60).seq == 2


def test_order_follows_insertion_across_channels(store):
    events = [store.append_event(c, "m", "{}", 60) for c in ("a", "b", "a")]
    assert [e.order for e in events] == sorted(e.order for e in events)


def test_get_events_after_a_position(store):
    for n in range(5):
        store.append_event("a", "m", f'{{"n": {n}}}', 60)
    got = store.get_events("a", 2, 2)
    assert [(e.seq, e.data) for e in got] == [(3, '{"n": 2}'), (4, '{"n": 3}')]


def test_epoch_is_created_once_and_kept(store):
    epoch = store.get_epoch()
    assert (
        epoch
        == store.get_epoch()
        == epoch_from_int(ChannelCounter.objects.get(channel="").last_seq)
    )
    ChannelCounter.objects.all().delete()  # the tables start afresh
    assert store.get_epoch() != epoch


def test_trim_deletes_expired_oldest_first_and_is_bounded(store):
    old = timezone.now() - timedelta(hours=2)
    Event.objects.bulk_create(
        Event(channel="a", seq=i, event_type="m", data="{}", created=old) for i in range(1, 11)
    )
    ChannelCounter.objects.create(channel="a", last_seq=10)
    assert store.trim("a", 3600, limit=4) == 4
    assert Event.objects.filter(channel="a").earliest("seq").seq == 5
    assert store.trim("a", 3600) == 6
    assert store.trim("a", 3600) == 0


def test_a_bounded_trim_stops_at_the_first_event_not_expired(store):
    now, old = timezone.now(), timezone.now() - timedelta(hours=2)
    ages = [old, old, now, old, now]  # seq 4 stored out of order: left for a later trim
    Event.objects.bulk_create(
        Event(channel="a", seq=i, event_type="m", data="{}", created=created)
        for i, created in enumerate(ages, start=1)
    )
    assert store.trim("a", 3600, limit=10) == 2
    assert list(Event.objects.filter(channel="a").values_list("seq", flat=True)) == [3, 4, 5]
    assert store.trim("a", 3600, limit=10) == 0  # the oldest is recent: nothing to do
    assert store.trim("empty", 3600, limit=10) == 0


def test_send_trims_a_bounded_batch_every_so_often(store, monkeypatch):
    monkeypatch.setattr(storage_module, "TRIM_EVERY", 2)
    monkeypatch.setattr(storage_module, "TRIM_BATCH", 3)
    old = timezone.now() - timedelta(hours=2)
    Event.objects.bulk_create(
        Event(channel="a", seq=i, event_type="m", data="{}", created=old) for i in range(1, 11)
    )
    ChannelCounter.objects.create(channel="a", last_seq=10)
    store.append_event("a", "m", "{}", 3600)  # seq 11: no trim
    assert Event.objects.filter(channel="a").count() == 11
    store.append_event("a", "m", "{}", 3600)  # seq 12: trims at most 3
    assert Event.objects.filter(channel="a").count() == 9


def test_channels_lists_every_channel_with_events(store):
    store.append_event("a", "m", "{}", 60)
    store.append_event("b", "m", "{}", 60)
    assert sorted(store.channels()) == ["a", "b"]


def test_unique_channel_seq_is_enforced():
    Event.objects.create(channel="a", seq=1, event_type="m", data="{}")
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(channel="a", seq=1, event_type="m", data="{}")


def test_base_class_is_abstract():
    base = EventStorage()
    for call in (
        lambda: base.append_event("a", "m", "{}", 1),
        base.get_epoch,
        lambda: base.get_current_ids(["a"]),
        lambda: base.get_events("a", 0, 1),
        lambda: base.trim("a", 1),
        base.channels,
    ):
        with pytest.raises(NotImplementedError):
            call()


def test_model_strings():
    assert str(Event(channel="a", seq=2, event_type="m")) == "a#2 m"
    assert str(ChannelCounter(channel="a", last_seq=3)) == "a@3"


def test_append_events_numbers_per_channel_and_orders_across(store):
    store.append_event("b", "m", "{}", 60)
    events = store.append_events(
        [("a", "t1", "1"), ("b", "t2", "2"), ("a", "t3", "3"), ("c", "t4", "4")],
        {"a": 60, "b": 60, "c": 60},
    )
    assert [(e.channel, e.seq, e.event_type, e.data) for e in events] == [
        ("a", 1, "t1", "1"),
        ("b", 2, "t2", "2"),
        ("a", 2, "t3", "3"),
        ("c", 1, "t4", "4"),
    ]
    assert [e.order for e in events] == sorted(e.order for e in events)
    assert store.get_current_ids(["a", "b", "c"]) == {"a": 2, "b": 2, "c": 1}
    assert store.append_events([], {}) == []


def test_append_events_is_one_transaction(store, monkeypatch):
    from django.db import IntegrityError

    Event.objects.create(channel="a", seq=2, event_type="m", data="{}")  # a clash at seq 2
    with pytest.raises(IntegrityError):
        store.append_events([("b", "m", "1"), ("a", "m", "2"), ("a", "m", "3")], {"a": 1, "b": 1})
    assert store.get_current_ids(["a", "b"]) == {"a": 0, "b": 0}
    assert not Event.objects.filter(channel="b").exists()


def test_a_batch_crossing_the_trim_point_trims(store, monkeypatch):
    monkeypatch.setattr(storage_module, "TRIM_EVERY", 4)
    old = timezone.now() - timedelta(hours=2)
    Event.objects.bulk_create(
        Event(channel="a", seq=i, event_type="m", data="{}", created=old) for i in range(1, 3)
    )
    ChannelCounter.objects.create(channel="a", last_seq=2)
    store.append_events([("a", "m", "{}")], {"a": 3600})  # seq 3: no trim
    assert Event.objects.filter(channel="a").count() == 3
    store.append_events([("a", "m", "{}")] * 3, {"a": 3600})  # 4 to 6 cross 4: trims
    assert Event.objects.filter(channel="a").count() == 4


def test_state_is_one_query(store, django_assert_num_queries):
    store.get_epoch()
    store.append_event("a", "m", "{}", 60)
    with django_assert_num_queries(1):
        epoch, current = store.get_state(["a", "b"])
    assert (epoch, current) == (store.get_epoch(), {"a": 1, "b": 0})


def test_the_epoch_row_is_no_channel(store):
    store.append_event("a", "m", "{}", 60)
    assert store.channels() == ["a"]


# --- query plans: bounded index ranges, never a scan of a channel's history ---------------


def _plans(call) -> list[str]:
    """The database's plan of every query ``call`` makes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    plans = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            cursor.execute(prefix + query["sql"])
            plans.append(" ".join(str(column) for row in cursor.fetchall() for column in row))
    return plans


@pytest.fixture
def big_history(store):
    from django.db import connection

    Event.objects.bulk_create(
        Event(channel=c, seq=i, event_type="m", data="{}")
        for c in ("a", "b")
        for i in range(1, 20_001)
    )
    ChannelCounter.objects.bulk_create(
        [ChannelCounter(channel="a", last_seq=20_000), ChannelCounter(channel="b", last_seq=20_000)]
        + [ChannelCounter(channel=f"other-{n}", last_seq=1) for n in range(3000)]
    )
    store.get_epoch()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def test_replay_reads_a_bounded_range_of_the_channel_seq_index(store, big_history):
    from django.db import connection

    (plan,) = _plans(lambda: store.get_events("a", 19_990, 10))
    if connection.vendor == "sqlite":
        # SQLite names the index of the (channel, seq) unique constraint itself.
        assert "SEARCH grip_eventstream_event USING INDEX" in plan, plan
        assert "(channel=? AND seq>?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort: read in index order
    else:
        assert "Index Scan using grip_es_event_channel_seq" in plan, plan
        assert "Sort" not in plan, plan


def test_a_send_s_trim_reads_the_oldest_events_by_index_only(store, big_history):
    # Nothing has expired: the bounded trim of a send reads the channel's first event on the
    # (channel, seq) index and stops, rather than looking for expired rows through it all.
    from django.db import connection

    (plan,) = _plans(lambda: store.trim("a", 3600, limit=200))
    if connection.vendor == "sqlite":
        assert "SEARCH grip_eventstream_event USING INDEX" in plan, plan
        assert "(channel=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert "Index Scan using grip_es_event_channel_seq" in plan, plan
        assert "Sort" not in plan, plan
        assert "Filter" not in plan, plan  # no created condition to scan for


def test_state_reads_the_counters_by_key(store, big_history):
    from django.db import connection

    (plan,) = _plans(lambda: store.get_state(["a", "b"]))
    if connection.vendor == "sqlite":
        assert "USING INDEX sqlite_autoindex_grip_eventstream_channelcounter_1" in plan, plan
    else:
        assert "Seq Scan" not in plan, plan
        # The primary key's index, or the pattern-ops index Django adds to a CharField key.
        assert "Index Cond: ((channel)::text = ANY" in plan, plan


def test_sequence_numbers_without_update_returning(store, monkeypatch):
    """SQLite before 3.35 has no RETURNING (PostgreSQL always has it)."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the fallback is for old SQLite")
    # As on such a SQLite: no RETURNING anywhere (bulk inserts return no keys either).
    features = connection.features
    for name in ("can_return_columns_from_insert", "can_return_rows_from_bulk_insert"):
        # A plain attribute or a (cached) property, depending on the Django version.
        monkeypatch.setattr(type(features), name, False)
        monkeypatch.delitem(features.__dict__, name, raising=False)
    assert [store.append_event("a", "m", "{}", 60).seq for _ in range(3)] == [1, 2, 3]
    assert [
        e.seq for e in store.append_events([("a", "m", "1"), ("b", "m", "2")], {"a": 1, "b": 1})
    ] == [4, 1]


def test_the_storage_contract_reads_state_from_its_parts():
    from grip_eventstream.storage import EventStorage

    class Minimal(EventStorage):
        def get_epoch(self):
            return "abcdefg"

        def get_current_ids(self, channels):
            return {c: 7 for c in channels}

    assert Minimal().get_state(["x"]) == ("abcdefg", {"x": 7})


def _migrate_to_latest() -> None:
    """Back to the newest schema: the tests after these need every table."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("grip_eventstream"))


@pytest.mark.django_db(transaction=True)
def test_migration_0002_keeps_the_epoch_of_existing_cursors():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("grip_eventstream", "0001_initial")])
    old_apps = executor.loader.project_state([("grip_eventstream", "0001_initial")]).apps
    old_apps.get_model("grip_eventstream", "Epoch").objects.create(pk=1, value="k3x7a2q")
    old_apps.get_model("grip_eventstream", "ChannelCounter").objects.create(channel="a", last_seq=5)

    executor = MigrationExecutor(connection)
    executor.migrate([("grip_eventstream", "0002_epoch_in_counters")])
    assert DjangoModelStorage().get_state(["a"]) == ("k3x7a2q", {"a": 5})

    executor = MigrationExecutor(connection)
    executor.migrate([("grip_eventstream", "0001_initial")])
    old_apps = executor.loader.project_state([("grip_eventstream", "0001_initial")]).apps
    assert old_apps.get_model("grip_eventstream", "Epoch").objects.get(pk=1).value == "k3x7a2q"
    assert (
        not old_apps.get_model("grip_eventstream", "ChannelCounter")
        .objects.filter(channel="")
        .exists()
    )
    _migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_migration_0002_on_tables_without_an_epoch():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    ChannelCounter.objects.all().delete()
    executor = MigrationExecutor(connection)
    executor.migrate([("grip_eventstream", "0001_initial")])
    old_apps = executor.loader.project_state([("grip_eventstream", "0001_initial")]).apps
    # Not an epoch this library wrote: skipped (a new epoch is made on first use).
    old_apps.get_model("grip_eventstream", "Epoch").objects.create(pk=1, value="bad!")
    executor = MigrationExecutor(connection)
    executor.migrate([("grip_eventstream", "0002_epoch_in_counters")])
    assert not ChannelCounter.objects.exists()
    executor = MigrationExecutor(connection)
    executor.migrate([("grip_eventstream", "0001_initial")])
    _migrate_to_latest()


# --- the statements of each operation, and the ORM fallback --------------------------------

_CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT", "ROLLBACK")


def _work(call) -> list[str]:
    """The first keyword of each statement ``call`` runs, transaction control left out."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    keywords = [query["sql"].split(None, 1)[0].upper() for query in captured.captured_queries]
    return [keyword for keyword in keywords if keyword not in _CONTROL]


def test_statements_per_operation(store):
    ttls = {"a": 60, "b": 60}
    assert _work(store.get_epoch) == ["SELECT", "INSERT"]  # first use: the epoch's upsert
    # A reservation (the counter's upsert, creating a new channel's) and the INSERT. In a
    # transaction (here the test's), so on PostgreSQL too.
    assert _work(lambda: store.append_event("a", "m", "{}", 60)) == ["INSERT", "INSERT"]
    assert _work(lambda: store.append_event("a", "m", "{}", 60)) == ["INSERT", "INSERT"]
    # A reservation per channel, then one INSERT for the batch.
    batch = [("a", "m", "1"), ("b", "m", "2"), ("a", "m", "3")]
    assert _work(lambda: store.append_events(batch, ttls)) == ["INSERT", "INSERT", "INSERT"]
    assert _work(lambda: store.get_state(["a", "b"])) == ["SELECT"]
    assert _work(lambda: store.get_events("a", 0, 10)) == ["SELECT"]
    assert _work(store.channels) == ["SELECT"]
    Event.objects.filter(channel="a").update(created=timezone.now() - timedelta(hours=2))
    assert _work(lambda: store.trim("a", 3600, limit=10)) == ["SELECT", "SELECT", "DELETE"]
    Event.objects.filter(channel="b").update(created=timezone.now() - timedelta(hours=2))
    assert _work(lambda: store.trim("b", 3600)) == ["SELECT", "DELETE"]


@pytest.mark.django_db(transaction=True)
def test_a_send_outside_a_transaction(store):
    """One statement on PostgreSQL; a reservation and an INSERT elsewhere."""
    from django.db import connection

    one = ["WITH"] if connection.vendor == "postgresql" else ["INSERT", "INSERT"]
    assert _work(lambda: store.append_event("a", "m", "{}", 60)) == one  # a new channel
    assert _work(lambda: store.append_event("a", "m", "{}", 60)) == one
    assert store.get_current_ids(["a"]) == {"a": 2}


@pytest.mark.django_db(transaction=True)
def test_a_failed_send_outside_a_transaction_gives_its_number_back(store):
    Event.objects.create(channel="a", seq=2, event_type="m", data="{}")  # a clash at seq 2
    assert store.append_event("a", "m", "{}", 60).seq == 1
    with pytest.raises(IntegrityError):
        store.append_event("a", "m", "{}", 60)
    assert store.get_current_ids(["a"]) == {"a": 1}


def test_a_send_whose_trim_fails_stores_nothing(store, monkeypatch):
    from django.db import OperationalError

    monkeypatch.setattr(storage_module, "TRIM_EVERY", 2)
    store.append_event("a", "m", "{}", 60)

    def failing(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(DjangoModelStorage, "trim", failing)
    with pytest.raises(OperationalError):
        store.append_event("a", "m", "{}", 60)  # seq 2 trims, inside its transaction
    assert store.get_current_ids(["a"]) == {"a": 1}
    assert Event.objects.filter(channel="a").count() == 1


def test_a_batch_larger_than_one_insert_takes(store):
    # SQLite's limit on parameters splits it into INSERTs of 199 rows, as bulk_create does.
    events = [(f"c{n % 3}", "m", str(n)) for n in range(500)]
    stored = store.append_events(events, {"c0": 60, "c1": 60, "c2": 60})
    assert [e.data for e in stored] == [str(n) for n in range(500)]
    assert [e.seq for e in stored if e.channel == "c1"] == list(range(1, 168))
    orders = [e.order for e in stored]
    assert orders == sorted(set(orders))  # distinct and increasing
    assert list(Event.objects.order_by("pk").values_list("pk", "data")) == [
        (e.order, e.data) for e in stored
    ]


@pytest.mark.parametrize("backend", ["sql", "orm"])
def test_a_concurrent_first_epoch_is_kept(store, backend):
    from django.db import connection

    from grip_eventstream.cursor import epoch_to_int, new_epoch

    epoch = store.get_epoch()
    steps = storage_module._ORM if backend == "orm" else storage_module._backend(connection)
    with connection.cursor() as cursor:
        kept = steps.make_epoch(cursor, epoch_to_int(new_epoch()))
    assert epoch_from_int(kept) == epoch == store.get_epoch()


@pytest.fixture
def orm_fallback(monkeypatch):
    """Every step through the ORM, as on a database the statements are not written for."""
    monkeypatch.setattr(storage_module, "_backend", lambda connection: storage_module._ORM)


def test_the_orm_fallback_takes_the_same_steps(store, orm_fallback):
    epoch = store.get_epoch()
    assert epoch == store.get_epoch()
    assert [store.append_event("a", "m", str(n), 60).seq for n in range(1, 4)] == [1, 2, 3]
    stored = store.append_events([("b", "m", "1"), ("a", "m", "4")], {"a": 60, "b": 60})
    assert [(e.channel, e.seq) for e in stored] == [("b", 1), ("a", 4)]
    assert [(e.seq, e.data) for e in store.get_events("a", 1, 2)] == [(2, "2"), (3, "3")]
    assert store.get_state(["a", "b", "c"]) == (epoch, {"a": 4, "b": 1, "c": 0})
    assert sorted(store.channels()) == ["a", "b"]
    old = timezone.now() - timedelta(hours=2)
    Event.objects.filter(channel="a", seq__in=[1, 2, 4]).update(created=old)
    assert store.trim("a", 3600, limit=10) == 2  # stops at seq 3, not expired
    assert store.trim("a", 3600) == 2  # 3 and 4: everything up to the last expired
    assert store.trim("b", 3600, limit=10) == 0


def test_the_orm_fallback_numbers_a_new_channel_under_a_clash(store, orm_fallback):
    Event.objects.create(channel="a", seq=2, event_type="m", data="{}")
    assert store.append_event("a", "m", "{}", 60).seq == 1
    with pytest.raises(IntegrityError):
        store.append_events([("b", "m", "1"), ("a", "m", "2")], {"a": 60, "b": 60})
    assert store.get_current_ids(["a", "b"]) == {"a": 1, "b": 0}


# --- the driver's cursor for a subscribe's reads ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_subscribe_reads_take_the_driver_cursor_when_nothing_watches(store, monkeypatch):
    store.append_event("a", "m", "{}", 60)
    taken = []
    real = storage_module._DirectCursor

    def spy(connection):
        taken.append(connection.alias)
        return real(connection)

    monkeypatch.setattr(storage_module, "_DirectCursor", spy)
    assert store.get_state(["a", "b"])[1] == {"a": 1, "b": 0}
    assert [e.seq for e in store.get_events("a", 0, 10)] == [1]
    assert taken == ["default", "default"]


@pytest.mark.django_db(transaction=True)
def test_reads_stay_visible_to_query_capture_wrappers_and_transactions(store, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    store.append_event("a", "m", "{}", 60)
    store.get_state([])  # the epoch, made by the first read
    monkeypatch.setattr(storage_module, "_DirectCursor", None)  # any use would fail
    with CaptureQueriesContext(connection) as captured:
        store.get_state(["a"])
    assert len(captured.captured_queries) == 1
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        store.get_events("a", 0, 10)
    assert len(seen) == 1
    with transaction.atomic():
        assert store.get_state(["a"])[1] == {"a": 1}


@pytest.mark.django_db(transaction=True)
def test_driver_cursor_errors_are_django_s(store):
    from django.db import DatabaseError, connection

    store.get_state([])
    with pytest.raises(DatabaseError), storage_module._DirectCursor(connection) as cursor:
        cursor.execute("SELECT no_such_column FROM grip_eventstream_event WHERE id = %s", [1])
    assert connection.errors_occurred
    with storage_module._DirectCursor(connection) as cursor:
        cursor.execute("SELECT %s + %s", [1, 2])
        assert cursor.fetchall() == [(3,)]

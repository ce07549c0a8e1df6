"""Cost of storing an event when its channel holds many expired rows.

django-eventstream deletes expired rows one by one inside every send (one send with 5,000
expired rows took 2.8 s there). Here a send trims at most TRIM_BATCH rows, on one send in
TRIM_EVERY, in a single range delete. This prints, on a temporary SQLite database (or
PostgreSQL with --db postgres), side by side in one run:

* the storage part of send_event (counter, insert, bounded trim) with 5,000 expired rows;
* the same with no expired rows;
* a row-by-row delete of 5,000 expired rows, as django-eventstream does in a send.

Run: .venv/bin/python bench/trim.py [--db postgres]
"""

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import bench_database  # noqa: E402

EXPIRED = 5000
SENDS = 256
TTL = 3600


def fill(channel: str, count: int) -> None:
    from django.utils import timezone

    from grip_eventstream.models import ChannelCounter, Event

    old = timezone.now() - timedelta(seconds=TTL * 2)
    Event.objects.bulk_create(
        Event(channel=channel, seq=i, event_type="m", data="{}", created=old)
        for i in range(1, count + 1)
    )
    ChannelCounter.objects.update_or_create(channel=channel, defaults={"last_seq": count})


def time_sends(channel: str) -> list[float]:
    from grip_eventstream.storage import DjangoModelStorage

    storage = DjangoModelStorage()
    times = []
    for _ in range(SENDS):
        start = time.perf_counter()
        storage.append_event(channel, "m", '{"x": 1}', TTL)
        times.append(time.perf_counter() - start)
    return times


def row_by_row(channel: str) -> float:
    from django.utils import timezone

    from grip_eventstream.models import Event

    cutoff = timezone.now() - timedelta(seconds=TTL)
    start = time.perf_counter()
    for event in Event.objects.filter(channel=channel, created__lt=cutoff):
        event.delete()
    return time.perf_counter() - start


def describe(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return (
        f"{name:<38} median {statistics.median(ms):7.2f} ms   p95 {ms[int(len(ms) * 0.95)]:7.2f} ms"
        f"   max {ms[-1]:7.2f} ms   ({len(ms)} sends)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    with bench_database(parser.parse_args().db, "trim"):
        import django

        django.setup()
        measure()


def measure() -> None:
    import django
    from django.core.management import call_command
    from django.utils import timezone

    from grip_eventstream.models import Event

    call_command("migrate", verbosity=0)
    fill("expired", EXPIRED)
    with_backlog = time_sends("expired")
    left = Event.objects.filter(
        channel="expired", created__lt=timezone.now() - timedelta(seconds=TTL)
    ).count()
    clean = time_sends("clean")
    fill("naive", EXPIRED)
    naive = row_by_row("naive")
    print(f"database: {django.db.connection.vendor}")
    print(describe(f"send, {EXPIRED} expired rows", with_backlog))
    print(describe("send, no expired rows", clean))
    print(f"{'row-by-row delete of ' + str(EXPIRED) + ' rows':<38} {naive * 1000:9.1f} ms (once)")
    print(f"expired rows left after {SENDS} sends: {left} (trim_events clears the rest)")
    ratio = naive / max(with_backlog)
    print(f"slowest bounded send vs row-by-row delete: 1 : {ratio:.0f}")


if __name__ == "__main__":
    main()

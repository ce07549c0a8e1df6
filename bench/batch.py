"""A batch of 100 events on one channel to 1,000 subscribers: published as one hint (what
send_events does with more than grip.MAX_ITEMS_PER_CHANNEL events of a channel) against
the same events published as items (what it did before), alternated round by round.

    .venv/bin/python bench/batch.py                       # SQLite, 1,000 clients, ~2 min
    .venv/bin/python bench/batch.py --db postgres --quick
    # behind Pushpin 1.41:
    PATH=/root/.cache/grip_eventstream/pushpin-sid/bin:$PATH .venv/bin/python bench/batch.py

The stack and the clients are bench/fanout.py's: one Pushpin in front of gunicorn
(bench/project, 2 workers), N streams on channel "fan" read by one asyncio loop. The
contenders store the same 100 events in one transaction and publish them:

* hint: grip_eventstream.send_events(...), which publishes one hint; each stream fetches
  its next link and the view answers with the 100 events from the database (and each
  stream fetches once more 3 s later: stream.SETTLE_LINK_TIMEOUT);
* items: the storage's append_events and Publisher.post() of the 100 items, with ids and
  build-id content, as send_events published them before the hint.

Per batch: the time from the call until the first, the median and the last client held
all 100 events, the clients that had not after 20 s, and Pushpin's next-link fetches
(Django requests) from the call until the next batch, 5 s later. Every client must get
every event exactly once in the end: the run fails otherwise.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import CHANNEL, LINK_FETCH, Fanout, check  # noqa: E402
from bench.run import _pg_available, bench_database, bench_stack  # noqa: E402

EVENTS = 100
WAIT = 20.0  # seconds for every client to hold a whole batch
GAP = 5.0  # seconds from a batch to the next: the hint's follow-up fetches are over by then
NAMES = ["hint", "items"]


def contenders() -> dict[str, Callable[[int], float]]:
    """Each stores events first..first+99 and publishes them; returns the perf_counter()
    taken just before."""
    from grip_eventstream import buildid, send_events
    from grip_eventstream.registry import get_publisher
    from grip_eventstream.storage import DjangoModelStorage

    def data(n: int, started: float) -> dict[str, float]:
        return {"n": n, "t": started}

    def hint(first: int) -> float:
        started = time.perf_counter()
        send_events([(CHANNEL, "message", data(n, started)) for n in range(first, first + EVENTS)])
        return started

    def items(first: int) -> float:
        import json

        started = time.perf_counter()
        rows = [
            (CHANNEL, "message", json.dumps(data(n, started))) for n in range(first, first + EVENTS)
        ]
        stored = DjangoModelStorage().append_events(rows, {CHANNEL: 3600})
        get_publisher().post(
            [buildid.publish_item(e.channel, e.seq, e.data, e.event_type, None) for e in stored]
        )
        return started

    return {NAMES[0]: hint, NAMES[1]: items}


def run(
    fanout: Fanout, log: Path, rounds: int
) -> tuple[dict[str, list[list[float]]], dict[str, list[int]]]:
    """Per contender, per batch: [first, median, last client whole (ms), clients
    incomplete, next-link fetches]; and the event numbers each contender sent."""
    from grip_eventstream.storage import DjangoModelStorage

    publish = contenders()
    figures: dict[str, list[list[float]]] = {name: [] for name in NAMES}
    sent: dict[str, list[int]] = {name: [] for name in NAMES}
    number = DjangoModelStorage().get_current_ids([CHANNEL])[CHANNEL] + 1

    def one(name: str) -> list[float]:
        nonlocal number
        batch = range(number, number + EVENTS)
        for n in batch:
            fanout.done[n] = threading.Event()
        log_start = log.stat().st_size
        started = publish[name](number)
        sent[name] += batch
        number += EVENTS
        deadline = time.monotonic() + WAIT
        for n in batch:
            fanout.done[n].wait(max(0.0, deadline - time.monotonic()))
        whole = []
        for client in fanout.clients:
            times = [client.got[n][0] for n in batch if n in client.got]
            if len(times) == EVENTS:
                whole.append((max(times) - started) * 1000)
        incomplete = len(fanout.clients) - len(whole)
        time.sleep(max(0.0, GAP - (time.perf_counter() - started)))
        with open(log, "rb") as text:
            text.seek(log_start)
            fetches = len(LINK_FETCH.findall(text.read()))
        whole.sort()
        if not whole:
            return [WAIT * 1000] * 3 + [incomplete, fetches]
        return [whole[0], statistics.median(whole), whole[-1], incomplete, fetches]

    for name in NAMES:  # warm-up
        one(name)
    for r in range(1, rounds + 1):
        for name in NAMES if r % 2 else NAMES[::-1]:
            figures[name].append(one(name))
    return figures, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 8")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    args = parser.parse_args()
    if args.db == "postgres" and not _pg_available():
        sys.exit("PostgreSQL is not reachable on 127.0.0.1:5432")
    rounds = 3 if args.quick else 8
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients + 512
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    started = time.monotonic()
    with bench_database(args.db, "batch", keep=args.keep) as workdir:
        gunicorn, pushpin = bench_stack(workdir, workers=2)
        fanout = Fanout(pushpin.http_port)
        try:
            pushpin.start()
            gunicorn.start(ready_path="/hello/")
            fanout.open(args.clients)
            time.sleep(2)  # past Pushpin's fetch 1 s after the channel's first subscriber
            figures, sent = run(fanout, pushpin.log_path, rounds)
            time.sleep(1)  # a late duplicate would arrive by now
            # The hint's batches must be whole; the items' losses are the figure measured
            # (they would arrive at the link timeout), but never a duplicate.
            print("hint: ", end="")
            failures = check(fanout, sent[NAMES[0]], 0)
            print("items: ", end="")
            failures += [f for f in check(fanout, sent[NAMES[1]], 0) if "missing" not in f]
        finally:
            fanout.close()
            gunicorn.stop()
            pushpin.stop()
    print(
        f"\n{args.db}, Pushpin {pushpin.version_text}, gunicorn {gunicorn.describe()}, "
        f"{args.clients} clients, {rounds} batches of {EVENTS} per contender, "
        f"run {time.monotonic() - started:.0f} s\n"
    )
    print(
        "| contender | first client whole ms | median ms | last ms | clients incomplete "
        "after 20 s | next-link fetches |\n|---|---|---|---|---|---|"
    )
    for name in NAMES:
        cells = [statistics.median(batch[c] for batch in figures[name]) for c in range(5)]
        print(
            f"| {name} | {cells[0]:.1f} | {cells[1]:.1f} | {cells[2]:.1f} | "
            f"{cells[3]:.0f} | {cells[4]:.0f} |"
        )
    ratios = [h[1] / i[1] for h, i in zip(figures[NAMES[0]], figures[NAMES[1]], strict=True)]
    print(f"\nhint / items, median client (median of rounds): {statistics.median(ratios):.2f}")
    if failures:
        sys.exit("FAIL: " + ", ".join(failures))


if __name__ == "__main__":
    main()

"""The performance bench: one command, ratios measured side by side in one run.

    .venv/bin/python bench/run.py            # SQLite and PostgreSQL (if it answers), ~5 min
    .venv/bin/python bench/run.py --quick    # fewer rounds, for a first look

For each database it starts a real Pushpin in front of gunicorn (bench/project: a hello
view and streams behind the same middleware, requests signed with Grip-Sig), then
measures, contenders alternated within each round, the median of each round, and prints
the median over the rounds of each ratio:

* subscribe (no replay), and subscribe replaying 10 and 100 missed events, as a fraction
  of the hello view's rate (1 sync worker: time from request to response headers through
  Pushpin, which sends them once the app has answered); for reference, a view answering a
  static GRIP hold with no work at all: Pushpin's own cost of a hold, which bounds every
  stream figure through Pushpin;
* a reconnect with 10 missed events on a channel holding 1,000,000 events against one
  holding 1,000 (the cost must follow what was missed, not what is stored);
* send_event with storage against a bare loop of one INSERT and one POST to Pushpin;
  send_events of 100 against that floor per event; async_publish=True against
  synchronous send_event.

bench/storm.py measures a reconnect storm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIG_KEY = "grip-eventstream-bench-key-0123456789abcdef"
BIG = 1_000_000
SMALL = 1_000


# --- the parent: one child process per database -------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--db", choices=["sqlite", "postgres"], help="(internal) one database")
    args = parser.parse_args()
    if args.db:
        child(args.db, rounds=3 if args.quick else 7)
        return
    tables = []
    for db in ["sqlite", "postgres"]:
        if db == "postgres" and not _pg_available():
            print("PostgreSQL is not reachable on 127.0.0.1:5432: its column is skipped.")
            continue
        command = [sys.executable, __file__, "--db", db, *(["--quick"] if args.quick else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"bench on {db} failed:\n{done.stdout}\n{done.stderr}")
        tables.append((db, json.loads(done.stdout.strip().splitlines()[-1])))
    print_table(tables)


def print_table(tables: list[tuple[str, dict[str, float]]]) -> None:
    rows = [
        ("subscribe vs hello, in the worker (straight to gunicorn)", "direct", ">= 0.85"),
        ("subscribe, no replay, vs hello, through Pushpin (rate ratio)", "subscribe", ">= 0.85"),
        ("static GRIP hold, no app work, vs hello, through Pushpin", "hold", "(floor)"),
        ("subscribe replaying 10 missed, vs hello", "replay10", ">= 0.6"),
        ("subscribe replaying 100 missed, vs hello", "replay100", ">= 0.3"),
        ("reconnect 10 missed: 1,000,000 stored vs 1,000 (time ratio)", "history", "<= 1.2"),
        ("send_event with storage vs INSERT + POST floor (rate)", "send", ">= 0.8"),
        ("send_events of 100 vs the floor, per event (rate)", "batch", ">= 3"),
        ("send_event(async_publish=True) vs synchronous (rate)", "async", ">= 2"),
    ]
    names = [db for db, _ in tables]
    print()
    print("| figure | " + " | ".join(names) + " | target |")
    print("|---|" + "---|" * len(names) + "---|")
    for label, key, target in rows:
        cells = [f"{figures[key]:.2f}x" for _, figures in tables]
        print(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    for db, figures in tables:
        print(
            f"{db}: through Pushpin hello {figures['hello_ms']:.2f} ms, static hold "
            f"{figures['hold_ms']:.2f} ms, subscribe {figures['subscribe_ms']:.2f} ms, "
            f"replay10 {figures['replay10_ms']:.2f} ms; straight to gunicorn hello "
            f"{figures['hello_direct_ms']:.2f} ms, "
            f"subscribe {figures['subscribe_direct_ms']:.2f} ms"
        )


def _pg_available() -> bool:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts/pg_available.py")], capture_output=True, text=True
    )
    return check.stdout.strip() == "yes"


# --- the child: one database ------------------------------------------------------------


@contextlib.contextmanager
def bench_database(db: str, prefix: str, keep: bool = False) -> Iterator[Path]:
    """A scratch database (SQLite file or PostgreSQL database) and work directory for the
    bench project, dropped afterwards; yields the work directory."""
    workdir = Path(tempfile.mkdtemp(prefix=f"ges-{prefix}-"))
    name = f"ges_{prefix}_{os.getpid()}"
    if db == "postgres":
        _pg_admin(f'CREATE DATABASE "{name}"')
        os.environ["GES_BENCH_DB"] = f"postgres:{name}"
    else:
        os.environ["GES_BENCH_DB"] = str(workdir / f"{prefix}.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.project.settings"
    try:
        yield workdir
    finally:
        from django.db import connections

        connections.close_all()
        if db == "postgres":
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def child(db: str, rounds: int) -> None:
    with bench_database(db, "bench") as workdir:
        figures = measure(workdir, rounds)
    print(json.dumps(figures))


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(sql)


def bench_stack(workdir: Path, *, workers: int = 1, threads: int = 1) -> tuple[Any, Any]:
    """gunicorn serving bench/project and a Pushpin in front of it (bench.procs), not yet
    started; GRIP_URL names that Pushpin in this process and in gunicorn's, and Django is set
    up here with the database migrated."""
    from bench.procs import Gunicorn, Pushpin

    gunicorn = Gunicorn(
        "bench.project.wsgi:application",
        workdir,
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "bench.project.settings", "PYTHONPATH": str(ROOT)},
        workers=workers,
        threads=threads,
    )
    pushpin = Pushpin(gunicorn.address, workdir, sig_key=SIG_KEY)
    grip_url = f"{pushpin.control_url}?iss=pushpin&key={SIG_KEY}"
    os.environ["GRIP_URL"] = gunicorn.env["GRIP_URL"] = grip_url

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return gunicorn, pushpin


def measure(workdir: Path, rounds: int) -> dict[str, float]:
    gunicorn, pushpin = bench_stack(workdir)
    fill()
    try:
        pushpin.start()
        gunicorn.start(ready_path="/hello/")
        return run_rounds(pushpin, gunicorn.port, rounds)
    finally:
        gunicorn.stop()
        pushpin.stop()


def fill() -> None:
    """Channels "big" (BIG events) and "small" (SMALL), and "live" with 100 events."""
    from django.db import connection, transaction

    from grip_eventstream.models import ChannelCounter, Event
    from grip_eventstream.storage import DjangoModelStorage

    table = Event._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        for channel, count in [("big", BIG), ("small", SMALL)]:
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"INSERT INTO {table} (channel, seq, event_type, data, created) "
                    "SELECT %s, n, 'message', '{\"n\": 0}', now() FROM generate_series(1, %s) n",
                    [channel, count],
                )
            else:
                rows = ((channel, n, "message", '{"n": 0}') for n in range(1, count + 1))
                cursor.executemany(
                    f"INSERT INTO {table} (channel, seq, event_type, data, created) "
                    "VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP)",
                    rows,
                )
            ChannelCounter.objects.create(channel=channel, last_seq=count)
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")
    storage = DjangoModelStorage()
    for n in range(100):
        storage.append_event("live", "message", json.dumps({"n": n, "pad": "x" * 100}), 86400)


def cursor_behind(channel: str, missed: int) -> str:
    from grip_eventstream.cursor import format_cursor
    from grip_eventstream.storage import DjangoModelStorage

    storage = DjangoModelStorage()
    current = storage.get_current_ids([channel])[channel]
    return format_cursor(storage.get_epoch(), {channel: current - missed}, [channel])


def timed_get(port: int, path: str, headers: dict[str, str] | None = None) -> float:
    """Seconds from sending a GET to receiving the end of the response headers."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"{path}: connection closed before the headers")
            received += chunk
        elapsed = time.perf_counter() - started
    status = received.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"{path} answered {status!r}: {received[:300]!r}")
    return elapsed


def run_rounds(pushpin: object, app_port: int, rounds: int) -> dict[str, float]:
    import jwt

    port = pushpin.http_port  # type: ignore[attr-defined]
    # Straight to gunicorn, signed as Pushpin signs: the worker's cost without the proxy's.
    signed = {"Grip-Sig": jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, SIG_KEY)}
    contenders: dict[str, Callable[[], float]] = {
        "hello_direct": lambda: timed_get(app_port, "/hello/", signed),
        "subscribe_direct": lambda: timed_get(
            app_port, f"/stream/?channel=live&lastEventId={now}", signed
        ),
        "hello": lambda: timed_get(port, "/hello/"),
        "hold": lambda: timed_get(port, "/hold/"),
        "subscribe": lambda: timed_get(port, f"/stream/?channel=live&lastEventId={now}"),
        "replay10": lambda: timed_get(port, "/stream/?channel=live", {"Last-Event-ID": c10}),
        "replay100": lambda: timed_get(port, "/stream/?channel=live", {"Last-Event-ID": c100}),
        "big": lambda: timed_get(port, "/stream/?channel=big", {"Last-Event-ID": big}),
        "small": lambda: timed_get(port, "/stream/?channel=small", {"Last-Event-ID": small}),
    }
    now, c10, c100 = (cursor_behind("live", n) for n in (0, 10, 100))
    big, small = cursor_behind("big", 10), cursor_behind("small", 10)
    for contender in contenders.values():  # warm up: connections, caches, JIT of the OS
        for _ in range(30):
            contender()
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(rounds):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        for name in order:
            per_round[name].append(statistics.median(contenders[name]() for _ in range(150)))
    ratio = {
        "direct": [
            h / s
            for h, s in zip(per_round["hello_direct"], per_round["subscribe_direct"], strict=True)
        ],
        "subscribe": [
            h / s for h, s in zip(per_round["hello"], per_round["subscribe"], strict=True)
        ],
        "replay10": [h / s for h, s in zip(per_round["hello"], per_round["replay10"], strict=True)],
        "hold": [h / s for h, s in zip(per_round["hello"], per_round["hold"], strict=True)],
        "replay100": [
            h / s for h, s in zip(per_round["hello"], per_round["replay100"], strict=True)
        ],
        "history": [b / s for b, s in zip(per_round["big"], per_round["small"], strict=True)],
    }
    figures = {name: statistics.median(values) for name, values in ratio.items()}
    figures["hello_ms"] = statistics.median(per_round["hello"]) * 1000
    figures["subscribe_ms"] = statistics.median(per_round["subscribe"]) * 1000
    figures["hello_direct_ms"] = statistics.median(per_round["hello_direct"]) * 1000
    figures["subscribe_direct_ms"] = statistics.median(per_round["subscribe_direct"]) * 1000
    figures["hold_ms"] = statistics.median(per_round["hold"]) * 1000
    figures["replay10_ms"] = statistics.median(per_round["replay10"]) * 1000
    figures.update(publish_rounds(pushpin, rounds))
    return figures


def publish_rounds(pushpin: object, rounds: int) -> dict[str, float]:
    import requests
    from django.db import connection, transaction

    from grip_eventstream import send_event, send_events
    from grip_eventstream.registry import get_background_publisher

    url = pushpin.control_url + "/publish/"  # type: ignore[attr-defined]
    session = requests.Session()
    key = "SERIAL PRIMARY KEY" if connection.vendor == "postgresql" else "INTEGER PRIMARY KEY"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE bench_floor (id {key}, data TEXT)")
    count = 100
    body = json.dumps({"n": 1})

    def floor() -> float:
        started = time.perf_counter()
        for n in range(count):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("INSERT INTO bench_floor (data) VALUES (%s)", [body])
            item = {"channel": "floor", "formats": {"http-stream": {"content": f"data: {n}\n\n"}}}
            session.post(url, json={"items": [item]}, timeout=5).raise_for_status()
        return (time.perf_counter() - started) / count

    def sync() -> float:
        started = time.perf_counter()
        for n in range(count):
            send_event("pub", "message", {"n": n})
        return (time.perf_counter() - started) / count

    def batch() -> float:
        started = time.perf_counter()
        send_events([("pub", "message", {"n": n}) for n in range(count)])
        return (time.perf_counter() - started) / count

    def asynchronous() -> float:
        started = time.perf_counter()
        for n in range(count):
            send_event("pub", "message", {"n": n}, async_publish=True)
        get_background_publisher().flush(timeout=60)
        return (time.perf_counter() - started) / count

    contenders = {"floor": floor, "sync": sync, "batch": batch, "async": asynchronous}
    for contender in contenders.values():
        contender()
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(max(rounds, 5)):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        for name in order:
            per_round[name].append(contenders[name]())
    return {
        "send": statistics.median(
            f / s for f, s in zip(per_round["floor"], per_round["sync"], strict=True)
        ),
        "batch": statistics.median(
            f / b for f, b in zip(per_round["floor"], per_round["batch"], strict=True)
        ),
        "async": statistics.median(
            s / a for s, a in zip(per_round["sync"], per_round["async"], strict=True)
        ),
    }


if __name__ == "__main__":
    main()

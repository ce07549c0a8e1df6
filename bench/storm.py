"""A reconnect storm: N streams through a real Pushpin, Pushpin restarted, every client
reconnecting at once with its Last-Event-ID.

    .venv/bin/python bench/storm.py                     # 1,000 and 5,000 clients, SQLite
    .venv/bin/python bench/storm.py --clients 1000 --db postgres
    .venv/bin/python bench/storm.py --clients 5000 5000 5000 --spread 0 --native \
        --pushpin-extra proxy:max_open_requests=50     # no spread, as browsers, 3 runs

Two gunicorn sync workers (gthread with one thread) serve bench/project. The channel holds
HISTORY events; while Pushpin is down MISSED more are stored, so every reconnect replays
them. Each client reconnects after its reconnection delay, sends
the last id it received, and must end with every event exactly once and in order; any
answer other than 200 is counted (a native EventSource gives up on one). Clients wait
before reconnecting as browsers do: the "retry:" the server sent (random per stream, see
EVENTSTREAM_RECONNECT_SPREAD), else 3 s.

Printed: seconds from Pushpin's restart until every client has its events, the statuses,
and the worker CPU per reconnect in the storm against one reconnect alone (the same replay,
measured in the same run).

Options for the knobs (see bench/burst.py for where Pushpin's 502s come from): --workers,
--threads and --backlog of gunicorn; --pushpin-extra SECTION:KEY=VALUE adds a line to
Pushpin's configuration (e.g. proxy:max_open_requests=50); --native makes every client
behave as a browser's EventSource after the restart: it stops for good on any answer but
200 (without it, clients retry as GripEventSource does, and the answers are only counted).
The Pushpin run is whichever `pushpin` is first on PATH (`pushpin --version`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Gunicorn, Pushpin  # noqa: E402
from bench.run import SIG_KEY, bench_database  # noqa: E402

HISTORY = 300_000
MISSED = 10
CHANNEL = "storm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    parser.add_argument(
        "--spread", type=int, default=10, help="EVENTSTREAM_RECONNECT_SPREAD of the app (s)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--backlog", type=int, help="gunicorn --backlog (its default 2048)")
    parser.add_argument(
        "--pushpin-extra",
        action="append",
        default=[],
        metavar="SECTION:KEY=VALUE",
        help="a line added to Pushpin's configuration (repeatable)",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="after the restart, a client stops for good on any answer but 200 (EventSource)",
    )
    parser.add_argument("--json", action="store_true", help="also print each result as JSON")
    args = parser.parse_args()
    # The clients run on asyncio; this process's few database calls are made between them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with bench_database(args.db, "storm", keep=args.keep) as workdir:
        for number, clients in enumerate(args.clients):
            storm(workdir / f"n{clients}-{number}", clients, args.db, args.spread, args)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


class Client:
    def __init__(self, port: int, last_id: str) -> None:
        self.port = port
        self.last_id = last_id
        self.received: list[int] = []
        self.statuses: Counter[str] = Counter()
        self.bodies: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.stop = False
        self.retry = 3.0  # seconds, until the server sends "retry:" (as in browsers)
        self.native = False  # set: stop for good on an answer other than 200 (EventSource)
        self.gave_up = False

    async def run(self) -> None:
        first = True
        while not self.stop:
            if not first:
                await asyncio.sleep(self.retry)  # a browser waits its reconnection time
            first = False
            try:
                await self._stream()
            except OSError:
                # A network error, not an HTTP answer: EventSource reconnects.
                self.statuses["refused"] += 1
            if self.gave_up:
                return

    async def _stream(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            request = (
                f"GET /stream/?channel={CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Accept: text/event-stream\r\nLast-Event-ID: {self.last_id}\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            self.statuses[status] += 1
            if status != "200":
                with contextlib.suppress(asyncio.TimeoutError, OSError):
                    body = await asyncio.wait_for(reader.read(300), 2)
                    lines = body.decode(errors="replace").strip().splitlines()
                    self.bodies[f"{status} {lines[0] if lines else ''}"] += 1
                if self.native:
                    self.gave_up = True
                return
            self.connected.set()
            buffer = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    self._event(block.decode(errors="replace"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def _event(self, block: str) -> None:
        data = event_id = None
        for line in block.splitlines():
            # Chunked framing lines (sizes) are not SSE fields; they never start with these.
            if line.startswith("data: "):
                data = line[6:]
            elif line.startswith("retry: "):
                self.retry = int(line[7:]) / 1000
            elif line.startswith("id: "):
                event_id = line[4:]
        if event_id:
            self.last_id = event_id
        if data is not None:
            self.received.append(json.loads(data)["n"])


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {}
    for item in items:
        section, sep, line = item.partition(":")
        if not sep or "=" not in line:
            raise SystemExit(f"--pushpin-extra wants SECTION:KEY=VALUE, not {item!r}")
        extra.setdefault(section, []).append(line)
    return extra


def storm(workdir: Path, clients: int, db: str, spread: int, args: argparse.Namespace) -> None:
    workdir.mkdir(parents=True)
    gunicorn = Gunicorn(
        "bench.project.wsgi:application",
        workdir,
        cwd=ROOT,
        env={
            "DJANGO_SETTINGS_MODULE": "bench.project.settings",
            "PYTHONPATH": str(ROOT),
            "GES_BENCH_PUBLISH_ERRORS": "log",
            "GES_BENCH_SPREAD": str(spread),
        },
        workers=args.workers,
        threads=args.threads,
        backlog=args.backlog,
    )
    pushpin = Pushpin(
        gunicorn.address, workdir, sig_key=SIG_KEY, extra=parse_extra(args.pushpin_extra)
    )
    os.environ["GRIP_URL"] = gunicorn.env["GRIP_URL"] = (
        f"{pushpin.control_url}?iss=pushpin&key={SIG_KEY}"
    )
    import django

    django.setup()
    from django.core.management import call_command

    from bench.run import cursor_behind
    from grip_eventstream.models import ChannelCounter, Event
    from grip_eventstream.storage import DjangoModelStorage

    call_command("migrate", verbosity=0)
    Event.objects.filter(channel=CHANNEL).delete()
    ChannelCounter.objects.filter(channel=CHANNEL).delete()
    storage = DjangoModelStorage()
    for start in range(0, HISTORY, 10_000):
        storage.append_events(
            [(CHANNEL, "message", json.dumps({"n": -1}))] * min(10_000, HISTORY - start),
            {CHANNEL: 86400},
        )
    try:
        pushpin.start()
        gunicorn.start(ready_path="/stream/?channel=ready")
        port = pushpin.http_port
        workers = gunicorn.worker_pids()
        # One reconnect alone: the same replay of MISSED events, 50 times.
        for n in range(MISSED):
            storage.append_event(CHANNEL, "message", json.dumps({"n": n}), 86400)
        alone_cursor = cursor_behind(CHANNEL, MISSED)
        from bench.run import timed_get

        for _ in range(10):
            timed_get(port, f"/stream/?channel={CHANNEL}", {"Last-Event-ID": alone_cursor})
        before = cpu_seconds(workers)
        for _ in range(50):
            timed_get(port, f"/stream/?channel={CHANNEL}", {"Last-Event-ID": alone_cursor})
        alone = (cpu_seconds(workers) - before) / 50
        result = asyncio.run(run_storm(port, clients, pushpin, storage, workers, args.native))
    finally:
        gunicorn.stop()
        pushpin.cleanup()
    seconds, statuses, ok, storm_cpu, memory, extra = result
    setup = (
        f"Pushpin {pushpin.version_text}, gunicorn {gunicorn.describe()}"
        + (f", Pushpin extra {args.pushpin_extra}" if args.pushpin_extra else "")
        + (", native EventSource clients" if args.native else "")
    )
    caught_up = f"{seconds:.1f} s" if extra["caught_up"] else f"not within {seconds:.0f} s"
    print(
        f"{db}, {clients} clients, {HISTORY:,} events stored, {MISSED} missed each, "
        f"reconnect spread {spread} s ({setup}): "
        f"all caught up {caught_up} after Pushpin's restart; "
        f"{ok}/{clients} clients got every event once and in order; "
        f"answers {dict(statuses)}; worker CPU per reconnect {storm_cpu * 1000:.1f} ms "
        f"in the storm vs {alone * 1000:.1f} ms alone ({storm_cpu / alone:.2f}x); "
        f"worker memory with the streams open vs before {memory:.2f}x; "
        f"5xx answers {extra['fivexx']} ({extra['bodies']}); clients that gave up "
        f"{extra['gave_up']}; clients missing events {extra['missing']}, with an event "
        f"twice {extra['repeated']}",
        flush=True,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "setup": setup,
                    "clients": clients,
                    "spread": spread,
                    "seconds": seconds,
                    "statuses": dict(statuses),
                    "ok": ok,
                    **extra,
                }
            ),
            flush=True,
        )


async def run_storm(port, count, pushpin, storage, workers, native=False):  # type: ignore[no-untyped-def]
    from bench.run import cursor_behind

    first_cursor = cursor_behind(CHANNEL, 0)
    rss_before = rss_kib(workers)
    clients = [Client(port, first_cursor) for _ in range(count)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    for n in range(0, count, 200):  # connect gradually, as a site fills up
        await asyncio.wait_for(
            asyncio.gather(*(c.connected.wait() for c in clients[n : n + 200])), 120
        )
    rss_open = rss_kib(workers)
    for client in clients:
        client.statuses.clear()
        client.bodies.clear()
        client.native = native
    await asyncio.to_thread(pushpin.stop)
    for n in range(MISSED):  # while Pushpin is down: stored, never published
        storage.append_event(CHANNEL, "message", json.dumps({"n": 100 + n}), 86400)
    cpu_before = cpu_seconds(workers)
    await asyncio.to_thread(pushpin.start)
    started = time.monotonic()
    wanted = list(range(100, 100 + MISSED))
    deadline = started + 300
    caught_up = False
    while time.monotonic() < deadline:
        if all(c.received[-MISSED:] == wanted for c in clients if not c.gave_up):
            caught_up = True
            break
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - started
    storm_cpu = (cpu_seconds(workers) - cpu_before) / count
    for client in clients:
        client.stop = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    statuses: Counter[str] = Counter()
    bodies: Counter[str] = Counter()
    for client in clients:
        statuses.update(client.statuses)
        bodies.update(client.bodies)
    ok = sum(1 for c in clients if [n for n in c.received if n >= 100] == wanted)
    extra = {
        "caught_up": caught_up,
        "fivexx": sum(n for status, n in statuses.items() if status.startswith("5")),
        "bodies": dict(bodies),
        "gave_up": sum(1 for c in clients if c.gave_up),
        "missing": sum(1 for c in clients if not set(wanted) <= set(c.received)),
        "repeated": sum(1 for c in clients if len(c.received) != len(set(c.received))),
    }
    return seconds, statuses, ok, storm_cpu, rss_open / rss_before, extra


if __name__ == "__main__":
    main()

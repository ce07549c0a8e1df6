"""Fan-out latency: from a publish to each of 1,000 subscribers, send_event against a direct
POST to Pushpin, alternated round by round.

    .venv/bin/python bench/fanout.py                     # SQLite, 1,000 clients, ~20 s
    .venv/bin/python bench/fanout.py --db postgres --quick  # ~10 s
    # behind Pushpin 1.41 (~40 s):
    PATH=/root/.cache/grip_eventstream/pushpin-sid/bin:$PATH .venv/bin/python bench/fanout.py

One Pushpin (whichever `pushpin` is first on PATH) in front of gunicorn (bench/project, 2
workers); this process holds N streams on channel "fan" through Pushpin, raw sockets on one
asyncio loop in a background thread, opened 50 at a time, each checked held (200,
text/event-stream). The contenders, each message waited for by every client before the next:

* send_event: grip_eventstream.send_event("fan", "message", {...}) in this process (stored
  in the scratch database, then POSTed to Pushpin's control port);
* direct POST: the same event as a plain http-stream item ("event: message\ndata: ...")
  POSTed to Pushpin's /publish/ with one reused requests.Session: no storage, no id line,
  no build-id filter of its own, but an id and prev-id, without which Pushpin drops an item
  on the streams' channel (held with a prev-id). Untimed, after each one the channel's
  counter is moved to its id, so that the next send_event follows on.

Each message's data carries its number and time.perf_counter() taken just before the call;
a client's latency is the time it read the message minus that. Per message: p50, p99 and
max over the clients. Printed: the median over the messages of each, per contender, and the
median over the rounds of send_event's p99 minus direct POST's (target: <= 2 ms). A second
table says where the time goes: the call's own duration, and, from the kernel's receive
timestamps (SO_TIMESTAMPNS: when Pushpin wrote to the client's socket, before this
process's loop read it), when Pushpin wrote to the first, the p99 and the last client.
Every client must get every message exactly once: counts printed, any miss fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import resource
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import _pg_available, bench_database, bench_stack  # noqa: E402

CHANNEL = "fan"
BATCH = 50  # subscriptions opened at once
WAIT = 10.0  # seconds for every client to get a message
MARKER = re.compile(rb'"n": (\d+)')
LINK_FETCH = re.compile(rb"\[handler\] GET \S+/_link/")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same
NAMES = ["send_event", "direct POST"]


class Client:
    """One held stream: for each message number, (read time, kernel arrival time)."""

    def __init__(self, fanout: Fanout, sock: socket.socket, buffer: bytes) -> None:
        self.fanout = fanout
        self.sock = sock
        self.buffer = buffer
        self.got: dict[int, tuple[float, float]] = {}
        self.repeats = 0
        self.closed = False

    def readable(self) -> None:
        read = time.perf_counter()
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, 64)
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self.closed = True
            self.fanout.loop.remove_reader(self.sock.fileno())
            return
        arrived = read
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                arrived = (sec * 1_000_000_000 + nsec - self.fanout.offset_ns) / 1e9
        *blocks, self.buffer = (self.buffer + data).split(b"\n\n")
        for block in blocks:
            match = MARKER.search(block)
            if match:
                self.fanout.received(self, int(match[1]), read, arrived)


class Fanout:
    """N streams held through Pushpin, read by one asyncio loop in a background thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.clients: list[Client] = []
        self.counts: dict[int, int] = {}
        self.done: dict[int, threading.Event] = {}
        self.unexpected = 0
        # Kernel timestamps are CLOCK_REALTIME; perf_counter is CLOCK_MONOTONIC.
        self.offset_ns = min(time.time_ns() - time.perf_counter_ns() for _ in range(5))

    def open(self, count: int) -> None:
        self.thread.start()
        for start in range(0, count, BATCH):  # each batch held before the next is opened
            batch = self._subscribe_all(min(BATCH, count - start))
            self.clients += asyncio.run_coroutine_threadsafe(batch, self.loop).result(120)

    async def _subscribe_all(self, count: int) -> list[Client]:
        return list(await asyncio.gather(*(self._subscribe() for _ in range(count))))

    async def _subscribe(self) -> Client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await self.loop.sock_connect(sock, ("127.0.0.1", self.port))
        request = (
            f"GET /stream/?channel={CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        await self.loop.sock_sendall(sock, request.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await asyncio.wait_for(self.loop.sock_recv(sock, 65536), 60)
            if not chunk:
                raise RuntimeError("a subscription was closed before its response headers")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        held = "text/event-stream" in headers.get("content-type", "")
        if lines[0].split(" ")[1] != "200" or not held:
            raise RuntimeError(f"a subscription was not held: {head[:400]!r}")
        client = Client(self, sock, rest)
        self.loop.add_reader(sock.fileno(), client.readable)
        return client

    def received(self, client: Client, n: int, read: float, arrived: float) -> None:
        if n in client.got:
            client.repeats += 1
            return
        client.got[n] = (read, arrived)
        if n not in self.done:
            self.unexpected += 1
            return
        self.counts[n] = count = self.counts.get(n, 0) + 1
        if count == len(self.clients):
            self.done[n].set()

    def close(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        for client in self.clients:
            client.sock.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def contenders(
    control_url: str,
) -> tuple[dict[str, Callable[[int, int], float]], Callable[[int], None]]:
    """Each publishes event n (the channel's next sequence number) of round r and returns
    the perf_counter() taken just before the call; and what follows a direct POST."""
    import requests

    from grip_eventstream import send_event
    from grip_eventstream.grip import pushpin_channel
    from grip_eventstream.models import ChannelCounter

    session = requests.Session()
    url = control_url + "/publish/"

    def storing(n: int, r: int) -> float:
        started = time.perf_counter()
        send_event(CHANNEL, "message", {"r": r, "n": n, "t": started})
        return started

    def direct(n: int, r: int) -> float:
        started = time.perf_counter()
        data = json.dumps({"r": r, "n": n, "t": started})
        # id and prev-id: the streams hold "fan" with a prev-id, and Pushpin drops an item
        # whose prev-id is not the stream's last id (then fetches the next link).
        item = {
            "channel": pushpin_channel(CHANNEL),
            "id": str(n),
            "prev-id": str(n - 1),
            "formats": {"http-stream": {"content": f"event: message\ndata: {data}\n\n"}},
        }
        session.post(url, json={"items": [item]}, timeout=5).raise_for_status()
        return started

    def after_direct(n: int) -> None:
        """Untimed: the channel's counter takes the number, so send_event follows on."""
        ChannelCounter.objects.update_or_create(channel=CHANNEL, defaults={"last_seq": n})

    return {NAMES[0]: storing, NAMES[1]: direct}, after_direct


def run(fanout: Fanout, control_url: str, rounds: int, per_round: int) -> dict[str, Any]:
    from grip_eventstream.storage import DjangoModelStorage

    publish, after_direct = contenders(control_url)
    # per contender: (round, [p50, p99, max read; call; first, p99, last written])
    figures: dict[str, list[tuple[int, list[float]]]] = {name: [] for name in NAMES}
    first = number = DjangoModelStorage().get_current_ids([CHANNEL])[CHANNEL] + 1

    def one(name: str, r: int) -> list[float]:
        nonlocal number
        fanout.done[number] = done = threading.Event()
        started = publish[name](number, r)
        returned = time.perf_counter()
        if not done.wait(WAIT):
            missing = len(fanout.clients) - fanout.counts.get(number, 0)
            sys.exit(
                f"FAIL: message {number} ({name}, round {r}): {missing} of "
                f"{len(fanout.clients)} clients did not get it within {WAIT:.0f} s"
            )
        if name == NAMES[1]:
            after_direct(number)
        got = [client.got[number] for client in fanout.clients]
        number += 1
        read = [t - started for t, _ in got]
        wrote = [a - started for _, a in got]
        time.sleep(0.01)  # let Pushpin and the loop settle before the next message
        cells = [pct(read, 0.5), pct(read, 0.99), max(read), returned - started]
        return [*cells, min(wrote), pct(wrote, 0.99), max(wrote)]

    for name in NAMES:  # warm-up: connections, caches
        for _ in range(10):
            one(name, 0)
    for r in range(1, rounds + 1):
        for name in NAMES if r % 2 else NAMES[::-1]:
            for _ in range(per_round):
                figures[name].append((r, [x * 1000 for x in one(name, r)]))
    time.sleep(1)  # a late duplicate would arrive by now
    return {"figures": figures, "sent": range(first, number)}


def check(fanout: Fanout, sent: range, links: int) -> list[str]:
    expected = set(sent)
    missing = sum(len(expected - client.got.keys()) for client in fanout.clients)
    repeats = sum(client.repeats for client in fanout.clients)
    closed = sum(client.closed for client in fanout.clients)
    print(
        f"{len(fanout.clients)} clients x {len(sent)} messages: {missing} deliveries missing, "
        f"{repeats} duplicates, {fanout.unexpected} unexpected, {closed} streams closed; "
        f"next links fetched by Pushpin while measuring: {links}"
    )
    counts = {"missing": missing, "duplicates": repeats, "unexpected": fanout.unexpected}
    return [f"{what}: {n}" for what, n in {**counts, "closed": closed}.items() if n]


def report(header: str, figures: dict[str, list[tuple[int, list[float]]]]) -> None:
    def med(name: str, column: int, r: int | None = None) -> float:
        return statistics.median(v[column] for rr, v in figures[name] if r in (None, rr))

    rounds = sorted({r for r, _ in figures[NAMES[0]]})
    diffs = [med(NAMES[0], 1, r) - med(NAMES[1], 1, r) for r in rounds]
    print(f"\n{header}\n")
    print("| contender | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
    for name in NAMES:
        print(f"| {name} | {med(name, 0):.2f} | {med(name, 1):.2f} | {med(name, 2):.2f} |")
    print(
        f"| send_event - direct POST (p99, median of rounds) | | "
        f"{statistics.median(diffs):+.2f} | target <= +2.00 |"
    )
    print("\nper round, p99 difference (ms): " + ", ".join(f"{d:+.2f}" for d in diffs))
    first = [med(NAMES[0], 4, r) - med(NAMES[1], 4, r) for r in rounds]  # median of rounds
    print(f"first client written, send_event - direct POST: {statistics.median(first):+.2f} ms")
    print("\nwhere it goes (medians over messages, ms from just before the call):\n")
    columns = ["call returned", "Pushpin wrote first", "wrote p99", "wrote last"]
    print("| contender | " + " | ".join(columns) + " | read p99 - wrote p99 |\n" + "|---" * 6 + "|")
    for name in NAMES:
        cells = [med(name, c) for c in (3, 4, 5, 6)]
        loop = statistics.median(v[1] - v[5] for _, v in figures[name])
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {loop:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="4 rounds of 5 messages")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    args = parser.parse_args()
    if args.db == "postgres" and not _pg_available():
        sys.exit("PostgreSQL is not reachable on 127.0.0.1:5432")
    # Short rounds, often alternated: the load of a shared machine drifts between them.
    rounds, per_round = (4, 5) if args.quick else (10, 15)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients + 512  # also inherited by Pushpin, which holds the other ends
    if soft != resource.RLIM_INFINITY and soft < need:  # ValueError above the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    started = time.monotonic()
    with bench_database(args.db, "fanout", keep=args.keep) as workdir:
        gunicorn, pushpin = bench_stack(workdir, workers=2)
        fanout = Fanout(pushpin.http_port)
        try:
            pushpin.start()
            gunicorn.start(ready_path="/hello/")
            opening = time.monotonic()
            fanout.open(args.clients)
            opened = time.monotonic() - opening
            # 1 s after a channel's first subscriber, Pushpin makes every stream of it fetch
            # its next link (SUBSCRIBED_DELAY): over before the first message.
            time.sleep(2)
            log_start = pushpin.log_path.stat().st_size
            result = run(fanout, pushpin.control_url, rounds, per_round)
            with open(pushpin.log_path, "rb") as log:
                log.seek(log_start)
                links = len(LINK_FETCH.findall(log.read()))
            failures = check(fanout, result["sent"], links)
        finally:
            fanout.close()
            gunicorn.stop()
            pushpin.stop()
    header = (
        f"{args.db}, Pushpin {pushpin.version_text}, gunicorn {gunicorn.describe()}, "
        f"{args.clients} clients (opened in {opened:.1f} s), {rounds} rounds x {per_round} "
        f"messages per contender, run {time.monotonic() - started:.0f} s"
    )
    report(header, result["figures"])
    if failures:
        sys.exit("FAIL: " + ", ".join(failures))


if __name__ == "__main__":
    main()

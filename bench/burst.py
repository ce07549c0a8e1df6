"""A burst: one client opens many streams at once while another user opens a few.

    .venv/bin/python bench/burst.py                        # 500 + 50 streams, 3 rounds
    .venv/bin/python bench/burst.py --workers 4 --threads 8 --backlog 16
    .venv/bin/python bench/burst.py --pushpin-extra proxy:max_open_requests=50
    .venv/bin/python bench/burst.py --debug --access-log --keep  # where the 502s come from
    .venv/bin/python bench/burst.py --streams 2000 --a-path /refuse/ \
        --pushpin-extra proxy:max_open_requests=50            # an app-side guard, emulated

Pushpin 1.41 (the chroot wrapper first on PATH) needs global:stats_connection_send=false
beside a small proxy:max_open_requests, or its proxy aborts (see the bench report).

gunicorn (bench/project, SQLite) behind a real Pushpin, both on 127.0.0.1. In each round
client A opens STREAMS streams on its channel and user B opens OTHERS on another, all
launched in the same moment (interleaved), each a GET answered by a subscribe held by
Pushpin. Every answer's status is counted per client, with the first line of each non-200
body ("Error while proxying to origin." is Pushpin's proxy failing to forward the request;
"Accept service unavailable." the proxy failing to hand the held stream to its handler),
and the seconds from the burst's start to each 200 (median, 90th percentile, max). The
streams stay open until every answer is in, then all are closed and Pushpin is given a
moment before the next round.

With --debug, Pushpin's proxy logs at debug level and each round prints how many
"target error ... condition=N" lines it logged, by condition (8 = ErrorUnavailable: the
proxy's zhttp queue to zurl/connmgr could not take the request; 7 = ErrorTimeout;
6 = ErrorDisconnected; 0 = ErrorGeneric); with --access-log gunicorn's access log counts
the requests that reached the app. --a-path sends client A elsewhere: /refuse/ answers 429
at once without session or query, what a guard refusing A's excess streams would cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Gunicorn, Pushpin  # noqa: E402
from bench.run import SIG_KEY, bench_database  # noqa: E402

CHANNEL_A = "burst-a"
CHANNEL_B = "burst-b"


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {}
    for item in items:
        section, sep, line = item.partition(":")
        if not sep or "=" not in line:
            raise SystemExit(f"--pushpin-extra wants SECTION:KEY=VALUE, not {item!r}")
        extra.setdefault(section, []).append(line)
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500, help="client A's streams")
    parser.add_argument("--others", type=int, default=50, help="user B's streams")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--backlog", type=int, help="gunicorn --backlog (its default 2048)")
    parser.add_argument(
        "--pushpin-extra",
        action="append",
        default=[],
        metavar="SECTION:KEY=VALUE",
        help="a line added to Pushpin's configuration (repeatable)",
    )
    parser.add_argument("--missed", type=int, default=0, help="events each subscribe replays")
    parser.add_argument(
        "--a-path",
        default=f"/stream/?channel={CHANNEL_A}",
        help="client A's path; /refuse/ answers 429 at once, as an app-side guard would",
    )
    parser.add_argument("--debug", action="store_true", help="Pushpin proxy at debug level")
    parser.add_argument("--access-log", action="store_true", help="count requests at gunicorn")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with bench_database("sqlite", "burst", keep=args.keep) as workdir:
        result = run(workdir, args)
    if args.json:
        print(json.dumps(result))


def run(workdir: Path, args: argparse.Namespace) -> dict[str, object]:
    gunicorn = Gunicorn(
        "bench.project.wsgi:application",
        workdir,
        cwd=ROOT,
        env={
            "DJANGO_SETTINGS_MODULE": "bench.project.settings",
            "PYTHONPATH": str(ROOT),
            "GES_BENCH_PUBLISH_ERRORS": "log",
        },
        workers=args.workers,
        threads=args.threads,
        worker_class=args.worker_class,
        backlog=args.backlog,
        access_log=args.access_log,
    )
    loglevel = "2,pushpin-proxy:3,proxy:3" if args.debug else "2"
    pushpin = Pushpin(
        gunicorn.address,
        workdir,
        sig_key=SIG_KEY,
        extra=parse_extra(args.pushpin_extra),
        loglevel=loglevel,
    )
    os.environ["GRIP_URL"] = gunicorn.env["GRIP_URL"] = (
        f"{pushpin.control_url}?iss=pushpin&key={SIG_KEY}"
    )
    import django

    django.setup()
    from django.core.management import call_command

    from bench.run import cursor_behind
    from grip_eventstream.storage import DjangoModelStorage

    call_command("migrate", verbosity=0)
    storage = DjangoModelStorage()
    for channel in (CHANNEL_A, CHANNEL_B):
        storage.append_events(
            [(channel, "message", json.dumps({"n": n})) for n in range(max(args.missed, 1))],
            {channel: 86400},
        )
    cursors = {
        c: cursor_behind(c, args.missed) if args.missed else None for c in (CHANNEL_A, CHANNEL_B)
    }
    setup = (
        f"Pushpin {pushpin.version_text}, gunicorn {gunicorn.describe()}"
        + (f", Pushpin extra {args.pushpin_extra}" if args.pushpin_extra else "")
        + f"; {args.streams} streams of client A + {args.others} of user B at once"
        + (
            f" (client A on {args.a_path})"
            if args.a_path != f"/stream/?channel={CHANNEL_A}"
            else ""
        )
        + (f", each replaying {args.missed}" if args.missed else "")
    )
    print(setup, flush=True)
    rounds = []
    try:
        pushpin.start()
        gunicorn.start(ready_path="/hello/")
        for number in range(args.rounds):
            log_mark = pushpin.log_path.stat().st_size
            access_mark = gunicorn.log_path.stat().st_size
            result = asyncio.run(
                burst(
                    pushpin.http_port,
                    args.streams,
                    args.others,
                    cursors,
                    seed=number,
                    a_path=args.a_path,
                )
            )
            time.sleep(1)  # let the last log lines land
            result["target_errors"] = target_errors(pushpin.log_path, log_mark)
            if args.access_log:
                result["reached_app"] = reached_app(gunicorn.log_path, access_mark)
            rounds.append(result)
            print(f"  round {number + 1}: {describe(result)}", flush=True)
            time.sleep(2)  # Pushpin closes the streams' subscriptions
    finally:
        gunicorn.stop()
        pushpin.cleanup()
    refused_a = [r["a_non200"] for r in rounds]
    refused_b = [r["b_non200"] for r in rounds]
    print(
        f"  median (range) non-200: client A {fmt(refused_a)} of {args.streams}, "
        f"user B {fmt(refused_b)} of {args.others}",
        flush=True,
    )
    return {"setup": setup, "rounds": rounds}


def fmt(values: list[int]) -> str:
    return f"{statistics.median(values):g} ({min(values)}-{max(values)})"


def describe(result: dict) -> str:  # type: ignore[type-arg]
    text = (
        f"client A {dict(result['a'])}, user B {dict(result['b'])}; "
        f"last answer after {result['seconds']:.1f} s; "
        f"time to a 200, client A {result['a_wait']}, user B {result['b_wait']}"
    )
    if result["reasons"]:
        text += f"; bodies {dict(result['reasons'])}"
    if result["target_errors"]:
        text += f"; proxy target errors by condition {result['target_errors']}"
    if "reached_app" in result:
        text += f"; requests reaching gunicorn {result['reached_app']}"
    return text


def target_errors(log: Path, start: int) -> dict[str, int]:
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    found = Counter(re.findall(r"target error state=\d+, condition=(\d+)", text))
    return dict(sorted(found.items()))


def reached_app(log: Path, start: int) -> int:
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return len(re.findall(r'"GET /stream/', text))


async def burst(  # type: ignore[type-arg]
    port: int, streams: int, others: int, cursors: dict, seed: int, a_path: str
) -> dict:
    release = asyncio.Event()
    statuses = {"a": Counter(), "b": Counter()}
    reasons: Counter[str] = Counter()
    answered: list[float] = []
    waited: dict[str, list[float]] = {"a": [], "b": []}
    started = time.monotonic()

    async def one(who: str, channel: str) -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            path = a_path if who == "a" else f"/stream/?channel={channel}"
            headers = "Accept: text/event-stream\r\n"
            if cursors[channel] and path.startswith("/stream/"):
                headers += f"Last-Event-ID: {cursors[channel]}\r\n"
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            writer.write(f"{request}{headers}\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            status = head.split(b" ", 2)[1].decode()
            statuses[who][status] += 1
            answered.append(time.monotonic() - started)
            if status == "200":
                waited[who].append(answered[-1])
            if status != "200":
                body = await asyncio.wait_for(reader.read(300), 5)
                first = (body.decode(errors="replace").strip().splitlines() or [""])[0]
                reasons[f"{status} {first}"] += 1
                return
            await release.wait()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            statuses[who][type(exc).__name__] += 1
        finally:
            if writer is not None:
                writer.close()

    order = [("a", CHANNEL_A)] * streams + [("b", CHANNEL_B)] * others
    random.Random(seed).shuffle(order)
    tasks = [asyncio.create_task(one(who, channel)) for who, channel in order]
    total = streams + others
    deadline = time.monotonic() + 150
    while sum(sum(c.values()) for c in statuses.values()) < total:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "a": dict(statuses["a"]),
        "b": dict(statuses["b"]),
        "a_non200": streams - statuses["a"]["200"],
        "b_non200": others - statuses["b"]["200"],
        "reasons": dict(reasons),
        "seconds": max(answered) if answered else float("nan"),
        # seconds from the burst's start to each 200 answer's headers, per client
        "a_wait": spread(waited["a"]),
        "b_wait": spread(waited["b"]),
    }


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    return {
        "median": round(statistics.median(values), 3),
        "p90": round(values[int(len(values) * 0.9) - 1 if len(values) > 1 else 0], 3),
        "max": round(values[-1], 3),
    }


if __name__ == "__main__":
    main()

"""Where every microsecond a subscribe costs over the hello view goes.

    .venv/bin/python bench/subscribe_cost.py            # SQLite and PostgreSQL (if it answers)
    .venv/bin/python bench/subscribe_cost.py --db sqlite --quick

For each database it starts gunicorn (1 worker, 1 thread, as bench/run.py) behind a real
Pushpin and measures, contenders alternated within each round, medians of each round, then
the median over the rounds:

* the ladder (bench/project/ladder.py): rung N runs the subscribe's first N steps with the
  package's own functions, then answers like the hello view. Each rung's time over the one
  before is the cost of its step, so the steps add up to the whole difference between the
  hello view and the subscribe; the real subscribe after the last rung leaves what serve()
  adds around them. Timed in the worker (request to response headers, straight to
  gunicorn, signed as Pushpin signs, as bench/run.py's "in the worker" figure) and in the
  process (the WSGI application called in a loop, as bench/profile.py does), and in the
  process with the CPU's caches refilled with other data before each call, as they are
  when a worker that waited for its next request takes it: the steps cost 2-3x more in the
  worker than in a hot loop, and the caches account for most of that;
* through Pushpin: a subscribe against the fixed GRIP hold (bench/project's /hold/), with
  the difference split into the app's part (the same two requests straight to gunicorn)
  and Pushpin's part (the rest: the subscribe's hold asks more of Pushpin).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.profile import per_call, wsgi_caller  # noqa: E402
from bench.run import SIG_KEY, bench_database, bench_stack, cursor_behind, timed_get  # noqa: E402

RUNGS = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    if args.child:
        print(json.dumps(child(args.db, rounds)))
        return
    for db in [args.db] if args.db else ["sqlite", "postgres"]:
        command = [sys.executable, __file__, "--child", "--db", db]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            if db == "postgres" and "connection" in done.stderr.lower() and not args.db:
                print("\n(PostgreSQL on 127.0.0.1:5432 did not answer: skipped)")
                continue
            sys.exit(f"{db}: the bench failed:\n{done.stderr[-3000:]}")
        report(db, json.loads(done.stdout.strip().splitlines()[-1]))


def child(db: str, rounds: int) -> dict[str, Any]:
    with bench_database(db, "cost") as workdir:
        gunicorn, pushpin = bench_stack(workdir)
        from grip_eventstream.storage import DjangoModelStorage

        DjangoModelStorage().append_events(
            [("live", "message", json.dumps({"n": n, "pad": "x" * 100})) for n in range(100)],
            {"live": 86400},
        )
        try:
            pushpin.start()
            gunicorn.start(ready_path="/hello/")
            figures = measure(gunicorn.port, pushpin.http_port, rounds)
        finally:
            gunicorn.stop()
            pushpin.stop()
        from bench.project.ladder import STEPS

        figures["pushpin"] = pushpin.version_text
        figures["steps"] = dict(STEPS)
        return figures


def measure(app_port: int, proxy_port: int, rounds: int) -> dict[str, Any]:
    import jwt
    from django.core.wsgi import get_wsgi_application
    from django.db import connection

    sig = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, SIG_KEY)
    query = f"channel=live&lastEventId={cursor_behind('live', 0)}"
    paths = {0: ("/hello/", "")}
    paths.update({rung: (f"/ladder/{rung}/", query) for rung in range(1, RUNGS + 1)})
    paths[RUNGS + 1] = ("/stream/", query)

    def url(path: str, q: str) -> str:
        return f"{path}?{q}" if q else path

    signed = {"Grip-Sig": sig}

    def direct(target: str) -> Callable[[], float]:
        return lambda: timed_get(app_port, target, signed)

    worker = {str(rung): direct(url(*target)) for rung, target in paths.items()}
    worker["hold"] = lambda: timed_get(app_port, "/hold/", signed)
    worker["proxy hold"] = lambda: timed_get(proxy_port, "/hold/")
    worker["proxy subscribe"] = lambda: timed_get(proxy_port, url(*paths[RUNGS + 1]))
    in_worker = alternate(worker, rounds, per_round=lambda fn: median_of(fn, 150))

    _environ, request = wsgi_caller(get_wsgi_application(), sig)
    process = {str(rung): request(*target) for rung, target in paths.items()}
    in_process = alternate(
        {name: fn for name, fn in process.items()},  # type: ignore[misc]
        rounds,
        per_round=lambda fn: per_call(fn, n=1000, rounds=1) / 1e6,
    )
    cold = alternate(
        {name: fn for name, fn in process.items()},  # type: ignore[misc]
        rounds,
        per_round=lambda fn: cold_call(fn, 200),
    )
    return {
        "vendor": connection.vendor,
        "worker": in_worker,
        "process": in_process,
        "cold": cold,
    }


_SCRATCH = bytearray(32 * 1024 * 1024)


def cold_call(fn: Callable[[], object], count: int) -> float:
    """Median seconds of ``fn`` called with the CPU's caches refilled with other data first,
    as they are when a worker that was waiting for its next request takes it."""
    line = b"\x01" * len(_SCRATCH[::64])
    times = []
    for _ in range(count):
        _SCRATCH[::64] = line  # a byte in every 64-byte cache line of 32 MB
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def median_of(fn: Callable[[], float], count: int) -> float:
    return statistics.median(fn() for _ in range(count))


def alternate(
    contenders: dict[str, Callable[[], float]],
    rounds: int,
    per_round: Callable[[Callable[[], float]], float],
) -> dict[str, float]:
    """Median over rounds (order reversed every other round) of each contender's seconds."""
    for fn in contenders.values():  # warm up: connections, caches
        for _ in range(30):
            fn()
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(rounds):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        for name in order:
            results[name].append(per_round(contenders[name]))
    return {name: statistics.median(values) for name, values in results.items()}


def report(db: str, figures: dict[str, Any]) -> None:
    worker = {k: v * 1e6 for k, v in figures["worker"].items()}
    process = {k: v * 1e6 for k, v in figures["process"].items()}
    cold = {k: v * 1e6 for k, v in figures["cold"].items()}
    steps = {int(rung): text for rung, text in figures["steps"].items()}
    names = {0: "the hello view", **steps, RUNGS + 1: "serve() around the steps"}
    print(f"\n## Subscribe cost, {figures['vendor']} (Pushpin {figures['pushpin']}, µs)\n")
    print(
        "| rung | adds | in the worker | step | in the process | step "
        "| in the process, caches refilled | step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rung in range(RUNGS + 2):
        w, p, c = worker[str(rung)], process[str(rung)], cold[str(rung)]
        if rung == 0:
            print(f"| 0 | {names[0]} | {w:.0f} | | {p:.0f} | | {c:.0f} | |")
            continue
        dw, dp, dc = (
            w - worker[str(rung - 1)],
            p - process[str(rung - 1)],
            c - cold[str(rung - 1)],
        )
        label = "subscribe" if rung == RUNGS + 1 else str(rung)
        print(
            f"| {label} | {names[rung]} | {w:.0f} | {dw:+.0f} | {p:.0f} | {dp:+.0f} "
            f"| {c:.0f} | {dc:+.0f} |"
        )
    last = str(RUNGS + 1)
    total_w, total_p = worker[last] - worker["0"], process[last] - process["0"]
    total_c = cold[last] - cold["0"]
    print(f"| | subscribe over hello | | {total_w:+.0f} | | {total_p:+.0f} | | {total_c:+.0f} |")
    ratio = worker["0"] / worker[str(RUNGS + 1)]
    print(f"\nsubscribe vs hello, in the worker: {ratio:.2f}x (target 0.85x)")
    hold, sub = worker["proxy hold"], worker["proxy subscribe"]
    app_part = worker[str(RUNGS + 1)] - worker["hold"]
    print(
        f"through Pushpin: subscribe {sub:.0f} µs vs fixed hold {hold:.0f} µs = "
        f"{hold / sub:.2f}x (target 0.95x); of the {sub - hold:.0f} µs difference, "
        f"the app's part (the same requests straight to gunicorn) is {app_part:.0f} µs "
        f"and Pushpin's {sub - hold - app_part:.0f} µs"
    )


if __name__ == "__main__":
    main()

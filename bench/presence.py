"""What presence costs: subscribes, gone notices and a disconnect storm, side by side.

    .venv/bin/python bench/presence.py              # SQLite and PostgreSQL (if it answers), ~4 min
    .venv/bin/python bench/presence.py --quick      # fewer rounds and a smaller storm
    .venv/bin/python bench/presence.py --db sqlite  # one database
    .venv/bin/python bench/presence.py --storm-only --storm 200 --keep   # part 3, logs kept

Runs behind Pushpin 1.41 (the one that sends gone notices) when scripts/pushpin-1.41 has
installed it (~/.cache/grip_eventstream/pushpin-sid/bin, put first on PATH for the children),
else behind the `pushpin` on PATH, without the storm. For each database, in a child process:

1. Subscribes, as bench/run.py measures them (1 gthread worker x 1 thread; time from the
   request to the response headers; each figure a rate ratio against the hello view of the
   same gunicorn, or against another contender), straight to gunicorn (signed Grip-Sig and
   Pushpin 1.41's Grip-Feature, as Pushpin sends them) and through Pushpin. Three gunicorns
   serve bench/project: this tree ("now", with presence channels "presence-...",
   bench/project/presence_settings.py); this tree with the subscribe's presence step taken
   out (bench/project/wsgi_without_presence.py); and the package as it was before presence
   existed (the parent of the commit that added grip_eventstream/presence.py, taken with
   `git archive`), on the same database, behind the same Pushpin (below /without/ and
   /before/, prefixes its routes remove). A presence stream through Pushpin is closed after
   its headers like the others; Pushpin then posts its gone notice, which is awaited
   (untimed) before the next request. Each presence channel also holds one resident
   stream, so that a subscribe or a gone notice is the common case (not the channel's
   first or last stream). Plus the SQL statements of each request, captured in-process
   (Django's CaptureQueriesContext around the test client: the same middleware).
2. A gone notice: a POST to a recorded stream's gone link, signed as Pushpin signs it,
   straight to gunicorn, against the hello view.
   For both: microseconds per request and per presence step with the WSGI application
   called in-process (no server, no proxy), and pyinstrument's call trees of a gone
   notice and a presence subscribe (when pyinstrument is installed): where the time goes.
3. A storm behind Pushpin 1.41: STORM streams on one presence channel, one logged-in user
   each (sessions made in advance), 2 gthread workers x 1 thread with an access log; once
   every stream is counted, every client disconnects at once. Twice: behind Pushpin's
   defaults, then with the settings docs/performance.md recommends against bursts
   ([proxy] max_open_requests=50, [global] stats_connection_send=false). Printed: the gone requests
   gunicorn answered, by status (5xx counted), each gone request's outcome in Pushpin's
   log (Pushpin does not retry one that fails), the seconds until get_presence_stats shows
   0 streams, and the presence_joined / presence_left signals (logged by
   bench/project/presence.py from the workers): leaves missing or doubled per user, users
   joined again.

Contenders alternate within each round (the order reversed every other round); a figure is
the median over the rounds of the per-round ratio of medians; the range over the rounds
and the load average are printed to tell how noisy the machine was. Everything binds
127.0.0.1; every process started is stopped by its pid (bench/procs.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The statement count of the package before presence: its tree comes first on the path.
_PACKAGE_DIR = os.environ.get("GES_BENCH_PACKAGE_DIR")
if _PACKAGE_DIR:
    sys.path.insert(0, _PACKAGE_DIR)

SIG_KEY = "grip-eventstream-bench-key-0123456789abcdef"  # bench/run.py's
PUSHPIN_141_BIN = Path.home() / ".cache/grip_eventstream/pushpin-sid/bin"
# What Pushpin 1.41 sends (tests/test_e2e_pushpin_versions.py).
FEATURES_141 = (
    "status, session, link:next, link:gone, filter:skip-self, filter:skip-users, "
    "filter:require-sub, filter:build-id, filter:var-subst"
)
PRESENCE_SETTINGS = "bench.project.presence_settings"
LIVE = "live"  # no presence
PRESENCE_LIVE = "presence-live"  # subscribes
PRESENCE_GONE = "presence-gone"  # gone notices
STORM_CHANNEL = "presence-storm"  # and a suffix per Pushpin configuration
# The storm runs behind Pushpin's defaults, then behind the settings docs/performance.md
# recommends against bursts (docs/performance.md, "Bursts").
STORM_CONFIGS: dict[str, dict[str, list[str]]] = {
    "defaults": {},
    "max_open_requests=50": {
        "proxy": ["max_open_requests=50"],
        "global": ["stats_connection_send=false"],  # needed beside it on 1.41
    },
}
STORM_WAIT = 60  # seconds the storm waits for the count to reach 0
RESIDENT = "resident"  # the resident stream's id on each presence channel
VARIANTS = {"now": "", "without": "/without", "before": "/before"}


# --- the parent ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, 30 samples, 300 streams")
    parser.add_argument("--db", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--rounds", type=int, help="rounds (default 9; --quick 3)")
    parser.add_argument("--samples", type=int, help="requests per contender and round (100)")
    parser.add_argument("--storm", type=int, help="streams in the storm (1000; 0: none)")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    parser.add_argument("--storm-only", action="store_true", help="part 3 only")
    parser.add_argument("--storm-workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--storm-threads", type=int, default=1, help="threads per worker (1)")
    parser.add_argument(
        "--storm-loglevel", default="2", help="Pushpin's --loglevel in the storm (e.g. 3)"
    )
    parser.add_argument("--child", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--count-before", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 9)
    samples = args.samples or (30 if args.quick else 100)
    storm = args.storm if args.storm is not None else (300 if args.quick else 1000)
    if args.count_before:
        print(json.dumps(count_before()))
        return
    if args.child:
        os.environ["GES_BENCH_STORM_LOGLEVEL"] = args.storm_loglevel
        os.environ["GES_BENCH_STORM_GUNICORN"] = f"{args.storm_workers}x{args.storm_threads}"
        child(args.child, rounds, samples, storm, args.keep, args.storm_only)
        return
    started = time.monotonic()
    env = dict(os.environ)
    if (PUSHPIN_141_BIN / "pushpin").exists():
        env["PATH"] = f"{PUSHPIN_141_BIN}:{env.get('PATH', '')}"
    else:
        print(
            f"Pushpin 1.41 is not installed ({PUSHPIN_141_BIN}: scripts/pushpin-1.41): "
            "parts 1 and 2 run behind the pushpin on PATH, the storm is skipped.",
            flush=True,
        )
    results = []
    for db in [args.db] if args.db else ["sqlite", "postgres"]:
        if db == "postgres" and not pg_available():
            print("PostgreSQL is not reachable on 127.0.0.1:5432 (database test): skipped.")
            continue
        print(f"== {db}", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--child", db, "--rounds", str(rounds)]
        command += ["--samples", str(samples), "--storm", str(storm)]
        command += ["--keep"] if args.keep else []
        command += ["--storm-only"] if args.storm_only else []
        command += ["--storm-loglevel", args.storm_loglevel]
        command += ["--storm-workers", str(args.storm_workers)]
        command += ["--storm-threads", str(args.storm_threads)]
        # The child's progress goes to stderr as it runs; its figures, as JSON, to stdout.
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
        if done.returncode:
            sys.exit(f"bench on {db} failed (exit {done.returncode}):\n{done.stdout}")
        *lines, last = done.stdout.strip().splitlines()
        for line in lines:  # "logs kept in ..."
            print(line, file=sys.stderr)
        results.append((db, json.loads(last)))
    if results:
        report(results, rounds, samples)
    print(f"\n({time.monotonic() - started:.0f} s in all)")


def pg_available() -> bool:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts/pg_available.py")], capture_output=True, text=True
    )
    return check.stdout.strip() == "yes"


# --- the report ----------------------------------------------------------------------------


def cell(figure: dict[str, float] | None, unit: str = "x") -> str:
    if figure is None:
        return "-"
    return f"{figure['median']:.2f}{unit} ({figure['low']:.2f}-{figure['high']:.2f})"


TRANSACTION = re.compile(r"(BEGIN|COMMIT|SAVEPOINT|RELEASE SAVEPOINT)\b", re.IGNORECASE)


def count_cell(found: dict[str, Any] | None) -> str:
    if not found:
        return "-"
    plain = [sql for sql in found["sql"] if not TRANSACTION.match(sql)]
    return f"{found['n']} ({len(plain)})"


def report(results: list[tuple[str, dict[str, Any]]], rounds: int, samples: int) -> None:
    names = [db for db, _ in results]
    if "ratios" not in results[0][1]:
        report_storm(results)
        return
    first = results[0][1]
    print(
        f"\nPushpin {first['pushpin']}; before presence = {first['before_commit'][:10]}; "
        f"{rounds} rounds x {samples} requests per contender; median over the rounds of the "
        "per-round ratio of medians, (range over the rounds)."
    )

    def table(title: str, rows: list[tuple[str, str, str]]) -> None:
        print(f"\n{title}\n")
        print("| figure | " + " | ".join(names) + " | target |")
        print("|---|" + "---|" * len(names) + "---|")
        for label, key, target in rows:
            cells = [cell(figures["ratios"].get(key)) for _, figures in results]
            print(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    table(
        "1a. Subscribe on a channel without presence (rate ratios; 1.00x = the same speed)",
        [
            ("now: subscribe / hello, straight to gunicorn", "d_sub_now", "(run.py >= 0.85)"),
            ("before presence: subscribe / hello, straight", "d_sub_before", "(reference)"),
            ("now without the presence step: subscribe / hello, straight", "d_sub_without", ""),
            ("now vs before presence, straight (subscribe rate)", "d_now_vs_before", "~1.00"),
            ("now vs without the presence step, straight", "d_now_vs_without", "~1.00"),
            ("now: subscribe / hello, through Pushpin", "p_sub_now", ">= 0.85"),
            ("before presence: subscribe / hello, through Pushpin", "p_sub_before", "(reference)"),
            (
                "now vs before presence, through Pushpin (subscribe rate)",
                "p_now_vs_before",
                "~1.00",
            ),
            ("now vs without the presence step, through Pushpin", "p_now_vs_without", "~1.00"),
        ],
    )
    table(
        "1b. Subscribe on a presence channel (rate ratios)",
        [
            ("presence subscribe / hello, straight to gunicorn", "d_presence", ""),
            ("presence subscribe vs subscribe without presence, straight", "d_presence_vs_sub", ""),
            ("presence subscribe / hello, through Pushpin", "p_presence", ""),
            ("presence subscribe vs subscribe without, through Pushpin", "p_presence_vs_sub", ""),
        ],
    )
    table(
        "2. Gone notice (POST to a stream's gone link, signed; straight to gunicorn)",
        [("gone / hello (rate ratio)", "d_gone", "about 1 (a plain view)")],
    )
    print("\nMilliseconds (median over the rounds of each round's median):\n")
    keys = [
        (
            "hello, straight (now / without / before)",
            ["d_hello_now", "d_hello_without", "d_hello_before"],
        ),
        (
            "subscribe, straight (now / without / before)",
            ["d_sub_now", "d_sub_without", "d_sub_before"],
        ),
        ("presence subscribe / gone, straight", ["d_presence", "d_gone"]),
        (
            "hello, through Pushpin (now / without / before)",
            ["p_hello_now", "p_hello_without", "p_hello_before"],
        ),
        (
            "subscribe, through Pushpin (now / without / before)",
            ["p_sub_now", "p_sub_without", "p_sub_before"],
        ),
        ("presence subscribe, through Pushpin", ["p_presence"]),
    ]
    print("| request | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, group in keys:
        cells = [" / ".join(f"{figures['ms'][k]:.2f}" for k in group) for _, figures in results]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        "\nSQL statements per request, captured in-process: all of them, then in brackets "
        "without BEGIN / COMMIT / SAVEPOINT (the sweep's probe, at most once a second per "
        "process, left out: the fewest of 3 runs):\n"
    )
    print("| request | " + " | ".join(names) + " | target |")
    print("|---|" + "---|" * len(names) + "---|")
    count_rows = [
        ("hello", "hello", ""),
        ("subscribe, no presence: before presence (anonymous)", "before_sub", ""),
        ("subscribe, no presence: now (anonymous)", "sub", "= before"),
        ("subscribe, no presence: now without the presence step", "without_sub", ""),
        ("subscribe, presence channel (anonymous)", "presence_sub", "<= no presence + 1"),
        ("subscribe, no presence: before presence (logged in)", "before_sub_user", ""),
        ("subscribe, no presence: now (logged in)", "sub_user", "= before"),
        ("subscribe, presence channel (logged in)", "presence_sub_user", "<= no presence + 1"),
        ("gone, anonymous stream (channel keeps others)", "gone", ""),
        ("gone, a user's last stream (channel keeps others)", "gone_user", ""),
    ]
    for label, key, target in count_rows:
        cells = [count_cell(figures["counts"].get(key)) for _, figures in results]
        print(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    for db, figures in results:
        print(f"\n{db}: statements of the presence requests:")
        for key in ["presence_sub", "presence_sub_user", "gone", "gone_user"]:
            found = figures["counts"].get(key)
            if found:
                print(f"  {key}: " + " | ".join(found["sql"]))
    print(
        "\nIn-process microseconds (WSGI application called directly, no server, no proxy; "
        "median of 5 rounds): where the time goes\n"
    )
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    steps = [
        ("hello view", "hello"),
        ("subscribe, channel without presence", "subscribe"),
        (
            "  of which the presence step (views._presence, not a presence channel)",
            "presence_step_without_presence",
        ),
        ("subscribe, presence channel", "presence_subscribe"),
        ("  presence.record_streams alone", "record_streams"),
        ("  presence.record_streams, synchronous_commit off", "record_streams_async_commit"),
        ("gone notice", "gone"),
        ("  presence.end_stream alone", "end_stream"),
        ("  presence.end_stream, synchronous_commit off", "end_stream_async_commit"),
        ("one presence CTE (remove, no row) through Django's cursor", "cte_django"),
        ("  the same, psycopg with server-side binding (prepared)", "cte_prepared"),
        ("SELECT 1 through Django's cursor", "select1"),
    ]
    for label, key in steps:
        cells = [
            f"{figures['in_process'][key]:.1f}" if key in figures["in_process"] else "-"
            for _, figures in results
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    report_storm(results)
    for db, figures in results:
        for name, text in figures.get("profiles", {}).items():
            print(f"\n{db}: pyinstrument, {name} (in-process, frames under 2% hidden):")
            print(text.rstrip())
    print()
    for db, figures in results:
        print(
            f"{db}: load average {figures['load_before']} before, {figures['load_after']} "
            f"after; {figures['seconds']:.0f} s; gone notices awaited after a presence "
            f"subscribe through Pushpin that never came: {figures['gone_missed']}"
        )


def report_storm(results: list[tuple[str, dict[str, Any]]]) -> None:
    columns = [
        (f"{db}, Pushpin {label}", storm)
        for db, figures in results
        for label, storm in figures.get("storm", {}).items()
    ]
    print(
        "\n3. Storm: every stream on one presence channel disconnects at once "
        "(Pushpin's defaults; then [proxy] max_open_requests=50 with [global] "
        "stats_connection_send=false, as docs/performance.md recommends)\n"
    )
    print("| figure | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    storm_rows = [
        ("streams counted before the disconnect", "counted"),
        ("gone requests reaching gunicorn (access log)", "gone_requests"),
        ("  of which 5xx", "gone_5xx"),
        ("  statuses", "gone_statuses"),
        ("gone requests by outcome in Pushpin's log (error: not retried)", "pushpin_gone"),
        ("seconds from Pushpin's first gone request to its last", "pushpin_gone_over"),
        ("seconds from the disconnect to get_presence_stats() = 0", "seconds_to_zero"),
        ("what get_presence_stats() then says of its counts", "says"),
        ("presence_left missing (users without a leave)", "missing"),
        ("presence_left doubled (users with 2 or more)", "doubled"),
        ("users joined again after their gone (a next link answered after it)", "rejoined"),
        ("presence_left expired=True", "expired"),
        ("leave counts consistent (users after: each of 0..N-1 once)", "consistent"),
        ("setup: non-200 answers to the subscribes (retried)", "setup_non200"),
        ("gunicorn", "gunicorn"),
    ]
    for label, key in storm_rows:
        cells = [str(storm.get(key, "-")) for _, storm in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")


# --- the child: one database ---------------------------------------------------------------


def child(db: str, rounds: int, samples: int, storm: int, keep: bool, storm_only: bool) -> None:
    from bench.run import bench_database

    started = time.monotonic()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with bench_database(db, "presence", keep=keep) as workdir:
        os.environ["DJANGO_SETTINGS_MODULE"] = PRESENCE_SETTINGS
        figures = measure(workdir, rounds, samples, storm, storm_only)
    figures["load_before"] = load_before
    figures["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    figures["seconds"] = time.monotonic() - started
    print(json.dumps(figures))


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def before_tree(workdir: Path) -> tuple[Path, str]:
    """The package as it was before presence, in a directory of its own (with bench/)."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "--diff-filter=A", "--", "grip_eventstream/presence.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("cannot find the commit that added grip_eventstream/presence.py")
    commit = subprocess.run(
        ["git", "rev-parse", f"{added[-1]}^"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = workdir / "before"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "grip_eventstream"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / "bench").symlink_to(ROOT / "bench")
    return tree, commit


def measure(
    workdir: Path, rounds: int, samples: int, storm_size: int, storm_only: bool = False
) -> dict[str, Any]:
    from bench.procs import Gunicorn, Pushpin

    tree, commit = before_tree(workdir)
    gunicorns = {
        "now": Gunicorn(
            "bench.project.wsgi:application",
            workdir / "now",
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT)},
            workers=1,
            threads=1,
        ),
        "without": Gunicorn(
            "bench.project.wsgi_without_presence:application",
            workdir / "without",
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT)},
            workers=1,
            threads=1,
        ),
        "before": Gunicorn(
            "bench.project.wsgi:application",
            workdir / "before-log",
            cwd=tree,
            env={"PYTHONPATH": str(tree), "DJANGO_SETTINGS_MODULE": "bench.project.settings"},
            workers=1,
            threads=1,
        ),
    }
    pushpin = Pushpin(gunicorns["now"].address, workdir / "pushpin", sig_key=SIG_KEY)
    # The other two gunicorns behind the same Pushpin, below a prefix Pushpin removes.
    pushpin.settings.extra_routes = tuple(
        f"*,path_beg={prefix}/,path_rem={len(prefix)} {gunicorns[name].address}"
        for name, prefix in VARIANTS.items()
        if prefix
    )
    os.environ["GRIP_URL"] = f"{pushpin.control_url}?iss=pushpin&key={SIG_KEY}"

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    fill()
    figures: dict[str, Any] = {"before_commit": commit, "pushpin": pushpin.version_text}
    if not storm_only:
        progress("counting statements")
        figures["counts"] = count_statements()
        figures["counts"].update(count_before_in(tree))
        figures["in_process"] = in_process_costs()
        figures["profiles"] = profiles()
        try:
            pushpin.start()
            for gunicorn in gunicorns.values():
                gunicorn.start(ready_path="/hello/")
            check_variants(gunicorns)
            progress(f"rounds behind Pushpin {pushpin.version_text}")
            figures.update(run_rounds(pushpin.http_port, gunicorns, rounds, samples))
        finally:
            for gunicorn in gunicorns.values():
                gunicorn.stop()
            pushpin.stop()
            shutil.rmtree(pushpin.rundir, ignore_errors=True)
    if storm_size and pushpin.version >= (1, 41):
        workers, threads = map(int, os.environ["GES_BENCH_STORM_GUNICORN"].split("x"))
        figures["storm"] = {
            label: storm(workdir / f"storm{n}", storm_size, workers, threads, n, extra)
            for n, (label, extra) in enumerate(STORM_CONFIGS.items())
        }
    elif storm_size:
        skipped = {"counted": f"skipped: Pushpin {pushpin.version_text} sends no gone"}
        figures["storm"] = {"defaults": skipped}
    return figures


def fill() -> None:
    import json as _json

    from grip_eventstream import presence
    from grip_eventstream.storage import DjangoModelStorage

    storage = DjangoModelStorage()
    for channel in [LIVE, PRESENCE_LIVE]:
        for n in range(100):
            data = _json.dumps({"n": n, "pad": "x" * 100})
            storage.append_event(channel, "message", data, 86400)
    for channel in [PRESENCE_LIVE, PRESENCE_GONE]:
        presence.record_streams(f"{RESIDENT}-{channel}", [channel], None, exact=True, ttl=86400)


_APPLICATION: list[Any] = []


def wsgi_caller(
    method: str, path: str | Callable[[], str], headers: dict[str, str]
) -> Callable[[], int]:
    """A request to bench/project's application in this process (no server, no proxy);
    ``path`` may be a function giving each call's path."""
    from django.core.wsgi import get_wsgi_application

    if not _APPLICATION:
        _APPLICATION.append(get_wsgi_application())
    application = _APPLICATION[0]
    base = {
        "REQUEST_METHOD": method,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": "0",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "text/event-stream",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    base.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    status: list[int] = []

    def start_response(line: str, _headers: Any, _exc: Any = None) -> None:
        status.append(int(line.split(" ", 1)[0]))

    def call() -> int:
        route, _, query = (path() if callable(path) else path).partition("?")
        environ = dict(base, PATH_INFO=route, QUERY_STRING=query)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = application(environ, start_response)
        for _ in result:
            pass
        result.close()
        code = status.pop()
        if code != 200:
            raise RuntimeError(f"in-process {method} {path} answered {code}")
        return code

    return call


def per_call_us(call: Callable[[], Any], prepare: Callable[[], Any] | None, n: int) -> float:
    """Median over 5 rounds of the mean microseconds of call() (prepare() untimed)."""
    results = []
    for _ in range(6):
        spent = 0.0
        for _ in range(n):
            if prepare is not None:
                prepare()
            started = time.perf_counter()
            call()
            spent += time.perf_counter() - started
        results.append(spent / n * 1e6)
    return statistics.median(results[1:])  # the first round warms up


def in_process_costs(n: int = 100) -> dict[str, float]:
    """Microseconds per request and per presence step, in this process: where the time goes."""
    from django.db import connection
    from django.test import RequestFactory

    from grip_eventstream import grip, links, presence, views

    signed = signed_headers()
    live = f"/stream/?channel={LIVE}&lastEventId={cursor_now(LIVE)}"
    present = f"/stream/?channel={PRESENCE_LIVE}&lastEventId={cursor_now(PRESENCE_LIVE)}"
    stream: list[str] = []

    def record() -> None:
        stream[:] = [secrets.token_urlsafe(12)]
        presence.record_streams(stream[0], [PRESENCE_GONE], None, exact=True, ttl=180)
        stream.append(links.gone_url("/stream/", stream[0]))

    def end() -> None:
        presence.end_stream(stream[0])

    def end_presence_live() -> None:
        from grip_eventstream.models import PresenceStream

        rows = PresenceStream.objects.filter(channel=PRESENCE_LIVE).exclude(
            stream_id=f"{RESIDENT}-{PRESENCE_LIVE}"
        )
        for stream_id in rows.values_list("stream_id", flat=True):
            presence.end_stream(stream_id)

    gone = wsgi_caller("POST", lambda: stream[1], signed)
    request = RequestFactory().get(live)
    features = grip.proxy_features(FEATURES_141)
    costs = {
        "hello": per_call_us(wsgi_caller("GET", "/hello/", signed), None, n),
        "subscribe": per_call_us(wsgi_caller("GET", live, signed), None, n),
        "presence_step_without_presence": per_call_us(
            lambda: views._presence(request, [LIVE], None, None, features), None, n * 10
        ),
        "presence_subscribe": per_call_us(
            wsgi_caller("GET", present, signed), end_presence_live, n
        ),
        "gone": per_call_us(gone, record, n),
        "record_streams": per_call_us(record, end, n),
        "end_stream": per_call_us(end, record, n),
    }
    with connection.cursor() as cursor:
        costs["select1"] = per_call_us(lambda: cursor.execute("SELECT 1"), None, n * 5)
    if connection.vendor == "postgresql":
        costs.update(cte_costs(n * 5))
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        costs["record_streams_async_commit"] = per_call_us(record, end, n)
        costs["end_stream_async_commit"] = per_call_us(end, record, n)
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO on")
    return costs


def cte_costs(n: int) -> dict[str, float]:
    """One of presence's statements (a gone notice's DELETE ... RETURNING CTE, finding no
    row) through Django's cursor (psycopg's client-side binding: parsed and planned on each
    execution) and through a psycopg connection with server-side binding (prepared after 5
    executions); on PostgreSQL."""
    import psycopg
    from django.db import connection

    from grip_eventstream import presence

    statement = presence._statements(connection).pg_remove_stream
    settings = connection.settings_dict
    with connection.cursor() as cursor:
        django_us = per_call_us(lambda: cursor.execute(statement, ["none"]), None, n)
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as raw:
        prepared_us = per_call_us(lambda: raw.execute(statement, ["none"]), None, n)
    return {"cte_django": django_us, "cte_prepared": prepared_us}


def profiles(n: int = 300) -> dict[str, str]:
    """pyinstrument's call trees of ``n`` gone notices and ``n`` presence subscribes, made
    in this process through the WSGI application (what the worker runs, without gunicorn)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {
            "note": "pyinstrument is not installed: .venv/bin/python -m pip install pyinstrument"
        }
    from grip_eventstream import links, presence

    signed = signed_headers()
    present = f"/stream/?channel={PRESENCE_LIVE}&lastEventId={cursor_now(PRESENCE_LIVE)}"
    ids = [secrets.token_urlsafe(12) for _ in range(n)]
    for stream_id in ids:
        presence.record_streams(stream_id, [PRESENCE_GONE], None, exact=True, ttl=180)
    paths = iter([links.gone_url("/stream/", stream_id) for stream_id in ids])
    gone = wsgi_caller("POST", lambda: next(paths), signed)
    subscribe = wsgi_caller("GET", present, signed)
    found = {}
    for name, call in [("gone", gone), ("presence subscribe", subscribe)]:
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(n):
            call()
        profiler.stop()
        found[name] = profiler.output_text(
            time="percent_of_total", processor_options={"filter_threshold": 0.02}
        )
    from grip_eventstream.models import PresenceStream

    rows = PresenceStream.objects.filter(channel=PRESENCE_LIVE).exclude(
        stream_id=f"{RESIDENT}-{PRESENCE_LIVE}"
    )
    for stream_id in rows.values_list("stream_id", flat=True):
        presence.end_stream(stream_id)
    return found


def signed_headers() -> dict[str, str]:
    import jwt

    sig = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, SIG_KEY)
    return {"Grip-Sig": sig, "Grip-Feature": FEATURES_141}


def cursor_now(channel: str) -> str:
    from bench.run import cursor_behind

    return cursor_behind(channel, 0)


# --- statement counts ----------------------------------------------------------------------


def _capture(call: Callable[[], Any], prepare: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The statements of call(), the fewest of three runs (after a warm-up run)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    best: list[str] | None = None
    for _ in range(4):
        if prepare is not None:
            prepare()
        with CaptureQueriesContext(connection) as captured:
            response = call()
        status = getattr(response, "status_code", 200)
        if status != 200:
            raise RuntimeError(f"counting: answered {status}: {getattr(response, 'content', '')!r}")
        sql = [" ".join(q["sql"].split())[:90] for q in captured.captured_queries]
        if best is None or len(sql) < len(best):
            best = sql
    assert best is not None
    return {"n": len(best), "sql": best}


def _user_client(headers: dict[str, str]) -> Any:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username="bench-count")
    client = Client(headers=headers)
    client.force_login(user)
    return client


def count_statements() -> dict[str, Any]:
    from django.test import Client

    from grip_eventstream import links, presence, views

    headers = signed_headers()
    anonymous = Client(headers=headers)
    user = _user_client(headers)
    live = f"/stream/?channel={LIVE}&lastEventId={cursor_now(LIVE)}"
    present = f"/stream/?channel={PRESENCE_LIVE}&lastEventId={cursor_now(PRESENCE_LIVE)}"
    gone_re = re.compile(r"<([^>]+)>; rel=gone")

    def subscribe_presence(client: Any) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(present)
            match = gone_re.search(response["Grip-Link"])
            assert match, response["Grip-Link"]
            ended.append(match.group(1))
            return response

        return call

    ended: list[str] = []

    def end_all() -> None:
        while ended:
            token = ended.pop().rstrip("/").rsplit("/", 1)[1]
            presence.end_stream(links.read_gone_token(token))

    counts = {
        "hello": _capture(lambda: anonymous.get("/hello/")),
        "sub": _capture(lambda: anonymous.get(live)),
        "sub_user": _capture(lambda: user.get(live)),
        "presence_sub": _capture(subscribe_presence(anonymous), end_all),
        "presence_sub_user": _capture(subscribe_presence(user), end_all),
    }
    end_all()
    user_pk = str(user.session["_auth_user_id"])
    stream: list[str] = []

    def record(user_pk: str | None) -> Callable[[], None]:
        def prepare() -> None:
            stream[:] = [secrets.token_urlsafe(12)]
            presence.record_streams(stream[0], [PRESENCE_GONE], user_pk, exact=True, ttl=180)

        return prepare

    def gone() -> Any:
        return anonymous.post(links.gone_url("/stream/", stream[0]))

    counts["gone"] = _capture(gone, record(None))
    counts["gone_user"] = _capture(gone, record(user_pk))
    original = views._presence
    views._presence = lambda *args: (None, None)
    try:
        counts["without_sub"] = _capture(lambda: anonymous.get(live))
    finally:
        views._presence = original
    return counts


def count_before_in(tree: Path) -> dict[str, Any]:
    """count_before() in a child whose path starts with the package before presence."""
    env = {
        **os.environ,
        "GES_BENCH_PACKAGE_DIR": str(tree),
        "DJANGO_SETTINGS_MODULE": "bench.project.settings",
    }
    done = subprocess.run(
        [sys.executable, __file__, "--count-before"],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"counting before presence failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_before() -> dict[str, Any]:
    import django

    django.setup()
    import grip_eventstream

    if not str(grip_eventstream.__file__).startswith(str(_PACKAGE_DIR)):
        raise RuntimeError(f"imported {grip_eventstream.__file__}, not the tree before presence")
    headers = signed_headers()
    from django.test import Client

    anonymous = Client(headers=headers)
    user = _user_client(headers)
    live = f"/stream/?channel={LIVE}&lastEventId={cursor_now(LIVE)}"
    return {
        "before_sub": _capture(lambda: anonymous.get(live)),
        "before_sub_user": _capture(lambda: user.get(live)),
    }


# --- timing --------------------------------------------------------------------------------


def exchange(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[float, int, bytes]:
    """Seconds from sending a request to the end of the response headers; status; headers."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines.append("Accept: text/event-stream" if method == "GET" else "Content-Length: 0")
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
    head = received.split(b"\r\n\r\n", 1)[0]
    return elapsed, int(head.split(b" ", 2)[1]), head


def ok(result: tuple[float, int, bytes], path: str, want: int = 200) -> tuple[float, bytes]:
    elapsed, status, head = result
    if status != want:
        raise RuntimeError(f"{path} answered {status}: {head[:400]!r}")
    return elapsed, head


def check_variants(gunicorns: dict[str, Any]) -> None:
    """Each gunicorn serves the package it should: the gone route exists from presence on."""
    expected = {"now": 405, "without": 405, "before": 404}
    for name, gunicorn in gunicorns.items():
        _, status, _ = exchange(gunicorn.port, "GET", "/stream/_gone/x/")
        if status != expected[name]:
            raise RuntimeError(f"the {name!r} gunicorn answered the gone route {status}")


def live_streams(channel: str) -> int:
    from grip_eventstream.models import PresenceStream

    return PresenceStream.objects.filter(channel=channel).count()


def run_rounds(
    pushpin_port: int, gunicorns: dict[str, Any], rounds: int, samples: int
) -> dict[str, Any]:
    from grip_eventstream import links, presence

    signed = signed_headers()
    live = f"/stream/?channel={LIVE}&lastEventId={cursor_now(LIVE)}"
    present = f"/stream/?channel={PRESENCE_LIVE}&lastEventId={cursor_now(PRESENCE_LIVE)}"
    gone_re = re.compile(rb"<([^>]+)>; rel=gone")
    now_port = gunicorns["now"].port
    missed = [0]

    def wait_resident_only(timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while live_streams(PRESENCE_LIVE) > 1:
            if time.monotonic() > deadline:
                missed[0] += 1
                from grip_eventstream.models import PresenceStream

                left = PresenceStream.objects.filter(channel=PRESENCE_LIVE).exclude(
                    stream_id=f"{RESIDENT}-{PRESENCE_LIVE}"
                )
                for stream_id in set(left.values_list("stream_id", flat=True)):
                    presence.end_stream(stream_id)
                return
            time.sleep(0.002)

    def direct_presence() -> float:
        elapsed, head = ok(exchange(now_port, "GET", present, signed), present)
        match = gone_re.search(head)
        if match is None:
            raise RuntimeError(f"no gone link in {head!r}")
        gone = match.group(1).decode()
        ok(exchange(now_port, "POST", gone, signed), gone)  # untimed: as Pushpin would
        return elapsed

    def pushpin_presence() -> float:
        elapsed, _ = ok(exchange(pushpin_port, "GET", present), present)
        wait_resident_only()  # Pushpin's gone notice, untimed
        return elapsed

    def direct_gone() -> float:
        stream_id = secrets.token_urlsafe(12)
        presence.record_streams(stream_id, [PRESENCE_GONE], None, exact=True, ttl=180)
        path = links.gone_url("/stream/", stream_id)
        elapsed, _ = ok(exchange(now_port, "POST", path, signed), path)
        return elapsed

    def get(port: int, path: str, headers: dict[str, str] | None = None) -> Callable[[], float]:
        return lambda: ok(exchange(port, "GET", path, headers), path)[0]

    contenders: dict[str, Callable[[], float]] = {}
    for name, prefix in VARIANTS.items():
        port = gunicorns[name].port
        contenders[f"d_hello_{name}"] = get(port, "/hello/", signed)
        contenders[f"d_sub_{name}"] = get(port, live, signed)
        contenders[f"p_hello_{name}"] = get(pushpin_port, f"{prefix}/hello/")
        contenders[f"p_sub_{name}"] = get(pushpin_port, f"{prefix}{live}")
    contenders["d_presence"] = direct_presence
    contenders["p_presence"] = pushpin_presence
    contenders["d_gone"] = direct_gone
    for contender in contenders.values():  # warm up
        for _ in range(20):
            contender()
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(rounds):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        for name in order:
            per_round[name].append(statistics.median(contenders[name]() for _ in range(samples)))
        progress(f"round {round_ + 1}/{rounds}")

    def ratio(numerator: str, denominator: str) -> dict[str, float]:
        values = [n / d for n, d in zip(per_round[numerator], per_round[denominator], strict=True)]
        return {"median": statistics.median(values), "low": min(values), "high": max(values)}

    ratios = {}
    for name in VARIANTS:
        ratios[f"d_sub_{name}"] = ratio(f"d_hello_{name}", f"d_sub_{name}")
        ratios[f"p_sub_{name}"] = ratio(f"p_hello_{name}", f"p_sub_{name}")
    for via in "dp":
        ratios[f"{via}_now_vs_before"] = ratio(f"{via}_sub_before", f"{via}_sub_now")
        ratios[f"{via}_now_vs_without"] = ratio(f"{via}_sub_without", f"{via}_sub_now")
        ratios[f"{via}_presence"] = ratio(f"{via}_hello_now", f"{via}_presence")
        ratios[f"{via}_presence_vs_sub"] = ratio(f"{via}_sub_now", f"{via}_presence")
    ratios["d_gone"] = ratio("d_hello_now", "d_gone")
    ms = {name: statistics.median(values) * 1000 for name, values in per_round.items()}
    return {"ratios": ratios, "ms": ms, "gone_missed": missed[0]}


# --- the storm -----------------------------------------------------------------------------


def make_sessions(count: int, prefix: str) -> list[str]:
    """``count`` users, each with a logged-in session; their session keys."""
    from datetime import timedelta

    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    model = get_user_model()
    model.objects.bulk_create(
        [model(username=f"{prefix}{n}", password="!") for n in range(count)], batch_size=500
    )
    users = model.objects.filter(username__startswith=prefix)
    store = SessionStore()
    expires = timezone.now() + timedelta(days=1)
    sessions = []
    for user in users:
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        key = secrets.token_hex(16)
        sessions.append(
            Session(session_key=key, session_data=store.encode(data), expire_date=expires)
        )
    Session.objects.bulk_create(sessions, batch_size=500)
    return [s.session_key for s in sessions]


def open_stream(
    port: int, channel: str, session: str, statuses: Counter[int]
) -> socket.socket | None:
    """A stream through Pushpin held open; None after 5 refusals."""
    request = (
        f"GET /stream/?channel={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Accept: text/event-stream\r\nCookie: sessionid={session}\r\n\r\n"
    ).encode()
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        status = int(received.split(b" ", 2)[1]) if received else 0
        statuses[status] += 1
        if status == 200:
            return sock
        sock.close()
        time.sleep(0.5)
    return None


def conf_ttl() -> int:
    from grip_eventstream.conf import conf

    return int(conf.EVENTSTREAM_PRESENCE_TTL)


def gone_outcomes(log: Path, start: int) -> list[tuple[float, str]]:
    """Pushpin's handler's log line for each gone notice: (seconds of the day, "code=N" or
    "error": Pushpin's own request failed and is not retried)."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    found = []
    pattern = r" (\d\d):(\d\d):([\d.]+) \[handler\] POST \S*/_gone/\S* (code=\d+|error)"
    for hours, minutes, seconds, outcome in re.findall(pattern, text):
        found.append((int(hours) * 3600 + int(minutes) * 60 + float(seconds), outcome))
    return found


def storm(
    workdir: Path,
    size: int,
    workers: int = 2,
    threads: int = 1,
    number: int = 0,
    extra: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    from bench.procs import Gunicorn, Pushpin
    from grip_eventstream import get_presence, get_presence_stats

    channel = f"{STORM_CHANNEL}-{number}"
    progress(f"storm: {size} users' sessions")
    sessions = make_sessions(size, f"storm{number}-")
    leaves_log = workdir / "signals.jsonl"
    workdir.mkdir(parents=True, exist_ok=True)
    gunicorn = Gunicorn(
        "bench.project.wsgi:application",
        workdir,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "GES_BENCH_PRESENCE_LOG": str(leaves_log)},
        workers=workers,
        threads=threads,
        access_log=True,
    )
    pushpin = Pushpin(
        gunicorn.address,
        workdir / "pushpin",
        sig_key=SIG_KEY,
        extra=extra,
        loglevel=os.environ.get("GES_BENCH_STORM_LOGLEVEL", "2"),
    )
    os.environ["GRIP_URL"] = gunicorn.env["GRIP_URL"] = (
        f"{pushpin.control_url}?iss=pushpin&key={SIG_KEY}"
    )
    statuses: Counter[int] = Counter()
    socks: list[socket.socket] = []
    result: dict[str, Any] = {"gunicorn": gunicorn.describe()}
    try:
        pushpin.start()
        gunicorn.start(ready_path="/hello/")
        progress(f"storm: opening {size} streams through Pushpin {pushpin.version_text}")
        with ThreadPoolExecutor(32) as pool:
            opened = list(
                pool.map(lambda s: open_stream(pushpin.http_port, channel, s, statuses), sessions)
            )
        socks = [s for s in opened if s is not None]
        deadline = time.monotonic() + 60
        while get_presence_stats(channel).streams < len(socks):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        result["counted"] = get_presence_stats(channel).streams
        result["setup_non200"] = sum(n for status, n in statuses.items() if status != 200)
        # Past Pushpin's first next-link fetch of each stream (about 1 s after it opens).
        time.sleep(2.5)
        mark = gunicorn.log_path.stat().st_size
        pushpin_mark = pushpin.log_path.stat().st_size
        progress(f"storm: {len(socks)} streams open, {result['counted']} counted; disconnecting")
        started = time.perf_counter()
        for sock in socks:
            sock.close()
        socks = []
        zero = None
        deadline = time.monotonic() + STORM_WAIT
        quiet_since, size_then = time.monotonic(), -1
        while time.monotonic() < deadline:
            if get_presence_stats(channel).streams == 0:
                zero = time.perf_counter() - started
                break
            # Or every notice has its outcome in Pushpin's log and gunicorn is quiet: the
            # streams left stay counted until they expire.
            size_now = gunicorn.log_path.stat().st_size
            if size_now != size_then:
                quiet_since, size_then = time.monotonic(), size_now
            outcomes = len(gone_outcomes(pushpin.log_path, pushpin_mark))
            if outcomes >= result["counted"] and time.monotonic() - quiet_since > 1:
                break
            time.sleep(0.01)
        left = get_presence_stats(channel).streams
        result["seconds_to_zero"] = (
            f"{zero:.2f}"
            if zero is not None
            else f"never: {left} left, counted until they expire "
            f"(EVENTSTREAM_PRESENCE_TTL, {conf_ttl()} s)"
        )
        # Until gunicorn's log stops growing: the last answers.
        size_then, quiet = -1, 0
        while quiet < 10:
            size_now = gunicorn.log_path.stat().st_size
            quiet = quiet + 1 if size_now == size_then else 0
            size_then = size_now
            time.sleep(0.1)
        result["members_left"] = len(get_presence(channel).members)
        stats = get_presence_stats(channel)
        result["says"] = f"exact={stats.exact}, stale_within={stats.stale_within:g} s"
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        gunicorn.stop()
        pushpin.stop()
        shutil.rmtree(pushpin.rundir, ignore_errors=True)
    with open(gunicorn.log_path, "rb") as log:
        log.seek(mark)
        text = log.read().decode(errors="replace")
    gone = re.findall(r'"POST (\S*/_gone/\S*) HTTP/1\.[01]" (\d{3})', text)
    gone_statuses = Counter(status for _, status in gone)
    result["gone_requests"] = len(gone)
    result["gone_distinct"] = len({path for path, _ in gone})
    result["gone_statuses"] = dict(sorted(gone_statuses.items()))
    result["gone_5xx"] = sum(n for status, n in gone_statuses.items() if status.startswith("5"))
    result["server_errors_logged"] = len(re.findall(r"\[ERROR\]|Traceback", text))
    outcomes = gone_outcomes(pushpin.log_path, pushpin_mark)
    result["pushpin_gone"] = dict(sorted(Counter(outcome for _, outcome in outcomes).items()))
    if outcomes:
        result["pushpin_gone_over"] = f"{outcomes[-1][0] - outcomes[0][0]:.2f}"
    signals = [json.loads(line) for line in leaves_log.read_text().splitlines()]
    signals = [s for s in signals if s["channel"] == channel]
    joins = [s for s in signals if s["action"] == "join"]
    leaves = [s for s in signals if s["action"] == "leave"]
    joined = Counter(s["user"] for s in joins)
    left = Counter(s["user"] for s in leaves)
    result["joins"] = len(joins)
    result["leaves"] = len(leaves)
    result["missing"] = sum(1 for user in joined if left[user] == 0)
    result["doubled"] = sum(1 for n in left.values() if n > 1)
    # A next-link fetch answered after the stream's gone notice records it again (as not
    # exact): a second join, and a stream counted until it expires.
    result["rejoined"] = sum(1 for n in joined.values() if n > 1)
    result["expired"] = sum(1 for s in leaves if s["expired"])
    after = sorted(s["users"] for s in leaves)
    result["consistent"] = (
        after == list(range(len(joins))) if len(leaves) == len(joins) else "n/a (leaves missing)"
    )
    progress(f"storm: {json.dumps(result)}")
    return result


if __name__ == "__main__":
    main()

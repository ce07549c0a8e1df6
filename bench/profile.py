"""Where a subscribe's time goes, in-process: the breakdown behind bench/run.py's ratios.

    .venv/bin/python bench/profile.py                 # SQLite
    .venv/bin/python bench/profile.py --db postgres   # PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/profile.py --tree          # also pyinstrument's call tree

Calls bench/project's WSGI application directly (no gunicorn, no Pushpin), with the
environ gunicorn would give it, and prints microseconds per request for the hello view,
a subscribe without replay and one replaying 10 events, then the cost of each part of the
subscribe path measured on its own, in a loop, on the same warm objects. The parts do not
add up exactly to the difference (they are measured apart, without the cache misses of a
whole request), but they rank it. Publishing parts run against a local HTTP server that
answers like Pushpin's control port, so that the POST's cost is real but Pushpin's is not.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import SIG_KEY, bench_database  # noqa: E402


def per_call(fn: Callable[[], object], n: int = 2000, rounds: int = 7) -> float:
    """Median over rounds of the mean microseconds per call."""
    for _ in range(min(n, 200)):
        fn()
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(results)


class _Control(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle the body waits for a delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"Published\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def wsgi_caller(
    app: Any, sig: str
) -> tuple[Callable[..., dict[str, Any]], Callable[..., Callable[[], None]]]:
    """``environ(path, query, **headers)``: the environ gunicorn would give ``app`` for a GET
    signed with ``sig``; ``request(path, query, **headers)``: a function calling ``app`` with
    it, which checks the answer is 200."""

    def environ(path: str, query: str = "", **headers: str) -> dict[str, Any]:
        env: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_ACCEPT": "text/event-stream",
            "HTTP_GRIP_SIG": sig,
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        env.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
        return env

    def request(path: str, query: str = "", **headers: str) -> Callable[[], None]:
        def call() -> None:
            status: list[str] = []
            result = app(environ(path, query, **headers), lambda s, h: status.append(s))
            b"".join(result)
            result.close()  # type: ignore[attr-defined]
            assert status[0].startswith("200"), status

        return call

    return environ, request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--tree", action="store_true")
    parser.add_argument("--all", action="store_true", help="the tree with library frames")
    args = parser.parse_args()
    control = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    control_url = f"http://127.0.0.1:{control.server_address[1]}"
    os.environ["GRIP_URL"] = f"{control_url}?iss=pushpin&key={SIG_KEY}"
    with bench_database(args.db, "profile"):
        run(args.tree, control_url, args.all)
    control.shutdown()


def run(tree: bool, control_url: str, show_all: bool = False) -> None:
    import django

    django.setup()
    import jwt
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)
    from bench.run import cursor_behind
    from grip_eventstream import grip, links, send_event, stream, views
    from grip_eventstream.registry import (
        get_background_publisher,
        get_publisher,
        get_storage,
        get_verifier,
    )
    from grip_eventstream.storage import DjangoModelStorage

    storage = DjangoModelStorage()
    for n in range(100):
        storage.append_event("live", "message", json.dumps({"n": n, "pad": "x" * 100}), 86400)
    app = get_wsgi_application()
    sig = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, SIG_KEY)
    now, c10 = cursor_behind("live", 0), cursor_behind("live", 10)

    environ, request = wsgi_caller(app, sig)

    hello = request("/hello/")
    subscribe = request("/stream/", f"channel=live&lastEventId={now}")
    replay10 = request("/stream/", "channel=live", LAST_EVENT_ID=c10)
    totals = {
        "hello view (whole request)": per_call(hello),
        "subscribe, no replay (whole request)": per_call(subscribe),
        "subscribe replaying 10 (whole request)": per_call(replay10),
    }
    print(f"\n## In-process WSGI, {connection.vendor} (µs per request)\n")
    print("| request | µs |\n|---|---|")
    for name, value in totals.items():
        print(f"| {name} | {value:.1f} |")

    # The parts, each on its own, on a request as the view sees it.
    from django.core.handlers.wsgi import WSGIRequest
    from django.http import HttpResponse

    env = environ("/stream/", f"channel=live&lastEventId={now}")
    req = WSGIRequest(env)
    verifier = get_verifier()
    assert verifier is not None
    state = links.LinkState(("live",), None, filtered=True)
    subs = [grip.Subscription("live", "100")]

    def fresh_token() -> str:
        links._made.clear()
        return links.make_token(state)

    parts: dict[str, Callable[[], object]] = {
        "WSGIRequest(environ)": lambda: WSGIRequest(environ("/stream/", "channel=live")),
        "request.GET parse (QueryDict)": lambda: WSGIRequest(env).GET,
        "Grip-Sig verify (cached)": lambda: verifier.verify(sig),
        "requested_channels()": lambda: views.requested_channels(req, {}),
        "_denied() (permission)": lambda: views._denied(None, ["live"]),
        "storage.get_state() (the SQL query)": lambda: get_storage().get_state(["live"]),  # type: ignore[union-attr]
        "raw cursor SELECT 1 (round-trip floor)": lambda: _select_one(connection),
        "links.link_url (token cached)": lambda: links.link_url("/stream/", state),
        "links.make_token (sign, uncached)": fresh_token,
        "grip.hold_headers": lambda: grip.hold_headers(
            subs, keep_alive=20, id_format="x", link="/l/", link_timeout=120
        ),
        "stream.retry()": lambda: stream.retry(10, random.randint),
        "HttpResponse + 3 headers": lambda: _response(HttpResponse),
        "conf reads (x8)": lambda: _conf_reads(),
    }
    print(f"\n## Parts of the subscribe path, {connection.vendor} (µs per call, apart)\n")
    print("| part | µs |\n|---|---|")
    for name, fn in parts.items():
        print(f"| {name} | {per_call(fn):.1f} |")

    # Publishing: the floor is one INSERT in a transaction and one POST.
    import requests

    session = requests.Session()
    with connection.cursor() as cursor:
        key = "SERIAL PRIMARY KEY" if connection.vendor == "postgresql" else "INTEGER PRIMARY KEY"
        cursor.execute(f"CREATE TABLE IF NOT EXISTS bench_floor (id {key}, data TEXT)")
    body = json.dumps({"n": 1})
    item = {"channel": "floor", "formats": {"http-stream": {"content": "data: 1\n\n"}}}

    def insert() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_floor (data) VALUES (%s)", [body])

    def post() -> None:
        session.post(control_url + "/publish/", json={"items": [item]}, timeout=5)

    def floor() -> None:
        insert()
        post()

    items = [grip.http_stream_item("pub", "data: 1\n\n", item_id="1", prev_id="0")]
    pub = {
        "floor: INSERT + POST": floor,
        "floor: INSERT in a transaction": insert,
        "floor: POST (requests)": post,
        "send_event (sync)": lambda: send_event("pub", "message", {"n": 1}),
        "storage.append_event": lambda: storage.append_event("pub", "message", body, 86400),
        "Publisher.publish (one item)": lambda: get_publisher().publish(items),
        "send_event(async_publish=True), submit only": lambda: send_event(
            "pub", "message", {"n": 1}, async_publish=True
        ),
    }
    print(f"\n## Publishing, {connection.vendor} (µs per call)\n")
    print("| part | µs |\n|---|---|")
    for name, fn in pub.items():
        print(f"| {name} | {per_call(fn, n=300, rounds=5):.1f} |")
        get_background_publisher().flush(timeout=60)

    def async_loop() -> None:
        for n in range(100):
            send_event("pub", "message", {"n": n}, async_publish=True)
        get_background_publisher().flush(timeout=60)

    def sync_loop() -> None:
        for n in range(100):
            send_event("pub", "message", {"n": n})

    print(f"| 100 x send_event sync (per event) | {per_call(sync_loop, 3, 5) / 100:.1f} |")
    print(f"| 100 x async + flush (per event) | {per_call(async_loop, 3, 5) / 100:.1f} |")

    if tree:
        from pyinstrument import Profiler

        for name, fn, n in [
            ("subscribe", subscribe, 3000),
            ("hello", hello, 3000),
            ("replay10", replay10, 1000),
            ("send_event", pub["send_event (sync)"], 500),
            ("async", async_loop, 5),
        ]:
            profiler = Profiler(interval=0.0001)
            profiler.start()
            for _ in range(n):
                fn()
            profiler.stop()
            print(f"\n## pyinstrument: {name} x{n}\n")
            print(profiler.output_text(unicode=False, color=False, show_all=show_all))


def _select_one(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()


def _response(cls: Any) -> object:
    response = cls(content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["Grip-Hold"] = "stream"
    return response


def _conf_reads() -> list[object]:
    from grip_eventstream.conf import conf

    return [
        conf.EVENTSTREAM_ALLOW_ORIGINS,
        conf.EVENTSTREAM_ALLOW_CREDENTIALS,
        conf.EVENTSTREAM_KEEP_ALIVE,
        conf.EVENTSTREAM_LINK_TIMEOUT,
        conf.EVENTSTREAM_REPLAY_LIMIT,
        conf.EVENTSTREAM_REPLAY_MAX_BYTES,
        conf.EVENTSTREAM_RECONNECT_SPREAD,
        conf.EVENTSTREAM_MAX_CHANNELS,
    ]


if __name__ == "__main__":
    main()

"""Database outages with the real parts: a private PostgreSQL stopped and started again, a
SQLite file taken away and put back, while browsers (and Pushpin) hold streams.

The stream view answers a subscribe that cannot reach the database with 200, a ``retry:``
line and no hold (the stream ends, the client reconnects with its Last-Event-ID), and a
next-link request with 503 (Pushpin retries it and keeps the client's stream open). These
tests check that no client is stranded and nothing is lost or repeated across the outage.

Events are sent through gunicorn (``/send-raw/``), so they go to the database gunicorn uses;
this process never opens that database. Every stack runs one gunicorn worker: the view logs
an outage once per process, so its log has exactly one ERROR line per outage.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests import browser
from tests.conftest import Stack, events, manage, start_stack
from tests.procs import Program, free_port, wait_for

pytestmark = pytest.mark.e2e
# Chromium tests skip where it is missing; the others need only Pushpin.
needs_chromium = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")

OUTAGE_LOGGED = "The database is unavailable"
BACK_LOGGED = "The database is reachable again"
# gunicorn's access log: '... "GET /path HTTP/1.1" 200 123 "-" "agent"'.
ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def unique(prefix: str = "outage") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# a private PostgreSQL cluster


class PostgresCluster:
    """A PostgreSQL of its own on a free 127.0.0.1 port, never the one on 5432.

    PostgreSQL refuses to run as root: every program runs as the ``postgres`` user
    (``setpriv`` execs, so the pid we hold is the postmaster's own). Its directory is under
    /tmp, not pytest's tmp_path, which is private to root. ``stop()`` is a fast shutdown
    (SIGINT: sessions are ended, as when a database server goes away), then whatever is left
    of the process group is killed; tests.procs.Program also kills it if this process dies.
    """

    USER = "postgres"

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.logdir.mkdir(parents=True, exist_ok=True)
        owner = pwd.getpwnam(self.USER)
        self.root = Path(tempfile.mkdtemp(prefix="gespg", dir="/tmp"))
        try:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.datadir = self.root / "data"
        self.port = free_port()
        self.dbname = "ges_outage"
        self.starts = 0
        self._program: Program | None = None

    def _as_postgres(self, *command: str) -> list[str]:
        drop = ["setpriv", f"--reuid={self.USER}", f"--regid={self.USER}", "--clear-groups"]
        return [*drop, "--", *command]

    @property
    def env(self) -> dict[str, str]:
        """What tests/settings.py reads to use this cluster."""
        return {
            "GES_TEST_DB": "postgres",
            "GES_PG_HOST": "127.0.0.1",
            "GES_PG_PORT": str(self.port),
            "GES_PG_USER": self.USER,
            "GES_DB_NAME": self.dbname,
        }

    def init(self) -> None:
        subprocess.run(
            self._as_postgres(
                "initdb", "-D", str(self.datadir), "-A", "trust", "-U", self.USER,
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ),
            cwd=self.root,
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        """Start on the same port as before; return once it accepts connections."""
        assert self._program is None, "already started"
        self.starts += 1
        self._program = Program(
            self._as_postgres(
                "postgres", "-D", str(self.datadir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
            ),
            cwd=self.root,
            # A log per start: readiness is read from the log.
            log_path=self.logdir / f"postgres-{self.starts}.log",
            ready=lambda log: "database system is ready to accept connections" in log,
        )  # fmt: skip
        self._program.start()

    def stop(self) -> None:
        """Fast shutdown by pid; whatever is left after 10 s is killed with its group."""
        program, self._program = self._program, None
        if program is None:
            return
        pid = program.pid
        if pid is not None and program.running:
            os.kill(pid, signal.SIGINT)
            with contextlib.suppress(TimeoutError):  # program.stop() below kills it
                wait_for(lambda: not program.running, 10, "PostgreSQL to shut down")
        program.stop()

    def create_database(self) -> None:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.USER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{self.dbname}"')

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresCluster]:
    """A private, migrated PostgreSQL cluster, always stopped (by pid) and removed."""
    missing = [p for p in ("initdb", "postgres", "setpriv") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (PostgreSQL server, util-linux)")
    cluster = PostgresCluster(tmp_path / "postgres")
    try:
        cluster.init()
        cluster.start()
        cluster.create_database()
        manage("migrate", "--noinput", env=cluster.env)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_stack(postgres: PostgresCluster, tmp_path: Path) -> Iterator[Stack]:
    """Pushpin + one gunicorn worker on the private PostgreSQL."""
    stack = start_stack(tmp_path / "stack", postgres.dbname, workers=1, env=postgres.env)
    try:
        yield stack
    finally:
        stack.stop()


# --------------------------------------------------------------------------------------------
# a SQLite file that goes away


class SQLiteFile:
    """The stack's SQLite database file, which can be taken away and put back.

    chmod does not stop root, and a file renamed away is created again, empty, by the next
    connect (then "no such table"). A directory left where the file was makes every new
    connection fail with OperationalError "unable to open database file", root or not.
    tests.settings leaves CONN_MAX_AGE at 0, so each request opens a new connection; a
    persistent connection (CONN_MAX_AGE > 0) would keep reading the renamed file through its
    open descriptor and see no outage at all.
    """

    SUFFIXES = ("", "-wal", "-shm")

    def __init__(self, path: Path) -> None:
        self.path = path

    def _files(self) -> list[Path]:
        return [Path(f"{self.path}{suffix}") for suffix in self.SUFFIXES]

    def take_away(self) -> None:
        for file in self._files():  # the WAL goes with its database
            if file.exists():
                file.rename(f"{file}.away")
        self.path.mkdir()

    def put_back(self) -> None:
        if self.path.is_dir():
            self.path.rmdir()
        for file in self._files():
            away = Path(f"{file}.away")
            if away.exists():
                away.rename(file)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[SQLiteFile]:
    path = tmp_path / "db" / "outage.sqlite3"
    path.parent.mkdir()
    manage("migrate", "--noinput", env={"GES_DB_NAME": str(path)})
    db = SQLiteFile(path)
    try:
        yield db
    finally:
        db.put_back()


@pytest.fixture
def sqlite_stack(sqlite_db: SQLiteFile, tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(tmp_path / "stack", str(sqlite_db.path), workers=1)
    try:
        yield stack
    finally:
        stack.stop()


# --------------------------------------------------------------------------------------------
# gunicorn's log


class GunicornLog:
    """gunicorn's log (access log and the app's logging, one worker), read from marks."""

    def __init__(self, stack: Stack) -> None:
        self.path = stack.gunicorn.log_path

    def mark(self) -> int:
        return self.path.stat().st_size

    def text(self, start: int = 0, end: int | None = None) -> str:
        data = self.path.read_bytes()[start:end]
        return data.decode("utf-8", errors="replace")

    def requests(self, start: int = 0, end: int | None = None) -> list[tuple[str, int]]:
        """(path, status) of every request in the access log, in order."""
        return [(m["path"], int(m["status"])) for m in ACCESS.finditer(self.text(start, end))]

    def subscribes(self, channel: str, start: int = 0, end: int | None = None) -> list[int]:
        """Statuses of the subscribe requests on ``channel`` (Pushpin forwards the browser's)."""
        prefix = f"/stream/?channel={channel}"
        return [status for path, status in self.requests(start, end) if path.startswith(prefix)]

    def links(self, start: int = 0, end: int | None = None) -> list[int]:
        """Statuses of the next-link requests (Pushpin's own)."""
        return [status for path, status in self.requests(start, end) if "/_link/" in path]

    def count(self, needle: str) -> int:
        return self.text().count(needle)


def send(stack: Stack, channel: str, data: str) -> None:
    """send_event in gunicorn: stored in its database, published to its Pushpin."""
    body = {"channel": channel, "data": data}
    with requests.post(f"{stack.gunicorn.url}/send-raw/", json=body, timeout=30) as response:
        response.raise_for_status()


def close_streams(stack: Stack, channel: str, last_seq: int) -> None:
    """Make Pushpin end the streams on ``channel`` (at ``last_seq``): their clients reconnect.

    On a reliable subscription a close item needs a ``prev-id`` equal to the last id the
    stream got: without one Pushpin fetches the next link instead of closing (seen).
    """
    item = {
        "channel": channel,
        "id": f"close-{uuid.uuid4().hex[:8]}",
        "prev-id": str(last_seq),
        "formats": {"http-stream": {"action": "close"}},
    }
    stack.pushpin.publish([item])


def hint(stack: Stack, channel: str) -> None:
    """Make Pushpin fetch the next link of the streams on ``channel`` at once."""
    stack.pushpin.publish([{"channel": channel, "formats": {"http-stream": {"action": "hint"}}}])


def wait_first_link(log: GunicornLog, start: int = 0) -> None:
    """Wait for the next link Pushpin fetches about 1 s after a channel's first subscriber,
    so that it does not fall into the outage."""
    wait_for(lambda: 200 in log.links(start), 10, "the first next-link fetch", log=log.path)


# --------------------------------------------------------------------------------------------
# the browser side


class StreamRequests:
    """The page's /stream/ requests as DevTools saw them: status, and whether the response
    ended (a held stream does not; an answer without a hold ends at once).

    Reading the performance log consumes it: one instance per driver.
    """

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self._requests: dict[str, dict[str, Any]] = {}
        self._headers: dict[str, dict[str, str]] = {}  # as sent (Last-Event-ID included)

    def all(self) -> list[dict[str, Any]]:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message["method"], message["params"]
            request_id = params.get("requestId")
            if method == "Network.requestWillBeSent":
                if "/stream/" in params["request"]["url"]:
                    self._requests[request_id] = {
                        "url": params["request"]["url"],
                        "time": params["timestamp"],
                        "status": None,
                        "ended": False,
                        "error": None,
                    }
            elif method == "Network.requestWillBeSentExtraInfo":
                self._headers[request_id] = {k.lower(): v for k, v in params["headers"].items()}
            elif request_id in self._requests:
                request = self._requests[request_id]
                if method == "Network.responseReceived":
                    request["status"] = params["response"]["status"]
                elif method == "Network.loadingFinished":
                    request["ended"] = True
                elif method == "Network.loadingFailed":
                    request["ended"] = True
                    request["error"] = params["errorText"]
        for request_id, request in self._requests.items():
            request["headers"] = self._headers.get(request_id, {})
        return sorted(self._requests.values(), key=lambda r: r["time"])

    def answered_without_hold(self, since: int) -> list[dict[str, Any]]:
        """Requests after the first ``since`` ones answered 200 and ended by the server."""
        return [
            r for r in self.all()[since:] if r["status"] == 200 and r["ended"] and not r["error"]
        ]


class Page:
    """One of the clients under test on a page of the test project, showing numbered events."""

    def __init__(self, client: str, driver: Any) -> None:
        self.client = client
        self.driver = driver

    def url(self, base: str, channel: str) -> str:
        if self.client == "native":
            return f"{base}/page/?channel={channel}"
        if self.client == "grip":  # static/grip_eventstream/eventsource.js
            return f"{base}/page/?client=grip&channel={channel}"
        return f"{base}/htmx/?version={self.client.removeprefix('htmx')}&channel={channel}"

    def data(self, n: int) -> str:
        if self.client.startswith("htmx"):
            return f"<li>item {n}</li>"  # swapped into the page's list
        return json.dumps({"n": n})

    def numbers(self) -> list[int]:
        if self.client.startswith("htmx"):
            texts = self.driver.execute_script(
                "return [...document.querySelectorAll('#list li')].map(li => li.textContent)"
            )
            return [int(text.removeprefix("item ")) for text in texts]
        return [m["n"] for m in browser.messages(self.driver)]

    def ready_state(self) -> int | None:
        """The EventSource's readyState (0 connecting, 1 open, 2 closed for good); htmx 4
        uses fetch, not EventSource: 1 while its connection loop runs, else 2."""
        script = {
            "native": "return window.source.readyState",
            "grip": "return window.source.readyState",
            "htmx2": (
                "const d = document.querySelector('[sse-connect]')['htmx-internal-data'];"
                "return d && d.sseEventSource ? d.sseEventSource.readyState : null"
            ),
            "htmx4": (
                "const c = document.getElementById('list')._htmx?.sse;"
                "return c ? (c.status === 200 ? 1 : 0) : 2"
            ),
        }[self.client]
        state = self.driver.execute_script(script)
        return None if state is None else int(state)

    def wait_numbers(self, count: int, timeout: float = 15) -> list[int]:
        wait_until(
            lambda: len(self.numbers()) >= count,
            f"{count} events",
            timeout,
            lambda: f"numbers={self.numbers()} readyState={self.ready_state()}",
        )
        return self.numbers()


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float,
    describe: Callable[[], str],
) -> None:
    try:
        wait_for(condition, timeout, what, interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"no {what} within {timeout:g} s; {describe()}") from exc


# --------------------------------------------------------------------------------------------
# the tests


def browser_across_outage(
    stack: Stack,
    driver: Any,
    client: str,
    take_down: Callable[[], None],
    bring_back: Callable[[], None],
) -> None:
    """The scenario both outage tests share; see test_browser_across_postgres_restart."""
    log = GunicornLog(stack)
    page = Page(client, driver)
    network = StreamRequests(driver)
    channel = unique()
    driver.get(page.url(stack.url, channel))
    for n in range(3):
        send(stack, channel, page.data(n))
    assert page.wait_numbers(3) == [0, 1, 2]
    wait_first_link(log)
    held = len(network.all())

    outage = log.mark()
    take_down()
    close_streams(stack, channel, 3)  # the clients reconnect while the database is down
    # Two answers in a row: the client reconnects after an answer without a hold, too.
    wait_until(
        lambda: len(network.answered_without_hold(held)) >= 2,
        "two reconnects answered during the outage",
        20,
        lambda: f"requests={network.all()} log:\n{log.text(outage)}",
    )
    answered = network.answered_without_hold(held)
    restart = log.mark()
    during = log.subscribes(channel, outage, restart)
    bring_back()

    for n in (3, 4):
        send(stack, channel, page.data(n))
    page.wait_numbers(5, timeout=20)
    send(stack, channel, page.data(5))  # fence: a repeat of anything earlier came before it
    page.wait_numbers(6)

    assert page.numbers() == [0, 1, 2, 3, 4, 5]
    assert page.ready_state() == 1, "the client is not open after the outage"
    # The browser: every stream request answered 200; during the outage, without a hold.
    first, *reconnects = network.all()
    assert {r["status"] for r in [first, *reconnects]} == {200}, network.all()
    assert len(answered) >= 2, network.all()
    assert not reconnects[-1]["ended"], reconnects  # held again
    # Each reconnect resumed from the last event received before the outage.
    resumed_from = {r["headers"].get("last-event-id") for r in reconnects}
    assert len(resumed_from) == 1, reconnects
    assert None not in resumed_from, reconnects
    # gunicorn: the reconnects during the outage were answered, 200 each, no error status
    # ever; the outage was logged once and its end once.
    assert len(during) >= 2, log.text(outage, restart)
    assert set(during) == {200}, log.text(outage, restart)
    assert set(log.subscribes(channel)) == {200}, log.text()
    assert log.count(OUTAGE_LOGGED) == 1, log.text()
    assert log.count(BACK_LOGGED) == 1, log.text()


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("client", ["native", "grip", "htmx2", "htmx4"])
def test_browser_across_postgres_restart(pg_stack, postgres, driver, client, request):
    """PostgreSQL stops while a page holds a stream; the stream is ended (as by a network
    hiccup) so the client reconnects during the outage; PostgreSQL starts again on the same
    port. The client must end with every event exactly once and still be open."""
    if client.startswith("htmx"):
        request.getfixturevalue("npm_packages")
    browser_across_outage(pg_stack, driver, client, postgres.stop, postgres.start)
    assert "OperationalError" in GunicornLog(pg_stack).text()


@pytest.mark.browser
@needs_chromium
def test_browser_across_sqlite_file_outage(sqlite_stack, sqlite_db, driver):
    """The same with SQLite: the database file is taken away (a directory in its place),
    then put back."""
    browser_across_outage(sqlite_stack, driver, "native", sqlite_db.take_away, sqlite_db.put_back)
    assert "unable to open database file" in GunicornLog(sqlite_stack).text()


def test_held_stream_survives_a_next_link_during_the_outage(pg_stack, postgres):
    """A next link Pushpin fetches while the database is down gets 503; Pushpin retries it
    and keeps the client's stream open. The database is back after three failed fetches
    (about 4 s): the same connection carries on and gets what is sent afterwards, exactly
    once.

    Measured: Pushpin fetches a failing link again about 1.5, 4, 8.5 and 17 s after the
    first failure, then once more and ends the stream: at about 18 s on 1.36, 34 s on 1.41.
    """
    stack = pg_stack
    log = GunicornLog(stack)
    channel = unique()
    with stack.stream(f"/stream/?channel={channel}") as reader:
        send(stack, channel, "0")
        reader.wait_text(lambda text: len(events(text)) >= 1, 10, "event 0")
        wait_first_link(log)

        outage = log.mark()
        postgres.stop()
        hint(stack, channel)  # Pushpin fetches the next link now, during the outage
        wait_for(
            lambda: log.links(outage).count(503) >= 3,
            15,
            "three next-link fetches answered 503",
            log=log.path,
        )
        assert not reader.ended, reader.text()
        postgres.start()
        back = log.mark()
        for n in (1, 2):
            send(stack, channel, str(n))  # before Pushpin fetches the link again
        wait_for(lambda: 200 in log.links(back), 15, "the next link answered", log=log.path)
        send(stack, channel, "3")  # fence: a repeat of anything earlier came before it
        text = reader.wait_text(lambda text: len(events(text)) >= 4, 10, "events 1 to 3")
        assert not reader.ended, text

    assert [e.data for e in events(text)] == ["0", "1", "2", "3"], text
    assert log.links(outage) == [503, 503, 503, 200], log.text(outage)
    # No reconnect: the one subscribe of this channel is the first one.
    assert log.subscribes(channel) == [200], log.text()
    assert log.count(OUTAGE_LOGGED) == 1, log.text()
    assert log.count(BACK_LOGGED) == 1, log.text()

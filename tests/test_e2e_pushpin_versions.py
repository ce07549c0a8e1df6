"""Raw Pushpin behaviour the package depends on, pinned for Pushpin 1.36 and 1.41.

A private Pushpin (grip_eventstream.pushpin) routes to a tiny GRIP origin running in this
process, which answers each path with the GRIP headers a test gives it and records every
request Pushpin makes. No Django: what is measured is Pushpin alone. The assertions branch
on the installed version (1.41 when scripts/pushpin-1.41's directory is first on PATH).

Sources (github.com/fastly/pushpin, tags v1.36.0 and v1.41.0):
src/handler/httpsession.cpp (filters, next links, RETRY_TIMEOUT / RETRY_MAX, gone links),
src/handler/engine.cpp / handlerengine.cpp (SUBSCRIBED_DELAY: the update a channel's first
subscriber gets), src/handler/httpsessionupdatemanager.cpp (link timeouts),
src/proxy/proxyutil.cpp (Grip-Feature), src/proxy/proxysession.cpp
(MAX_ACCEPT_RESPONSE_BODY), src/runner/app.cpp / runnerapp.cpp (services).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from grip_eventstream.buildid import body_filtered
from grip_eventstream.grip import parse_grip_last, proxy_features
from grip_eventstream.pushpin import (
    SERVICES_1_36,
    SERVICES_1_40,
    PushpinConfig,
    PushpinProcess,
    free_ports,
    version,
)
from grip_eventstream.sseclient import EventStream, StreamEnded
from tests.procs import log_tail

pytestmark = pytest.mark.e2e

# The header's text in src/proxy/proxyutil.cpp.
GRIP_FEATURE_1_36 = (
    "status, session, link:next, filter:skip-self, filter:skip-users, filter:require-sub, "
    "filter:build-id, filter:var-subst"
)
GRIP_FEATURE_1_41 = (
    "status, session, link:next, link:gone, filter:skip-self, filter:skip-users, "
    "filter:require-sub, filter:build-id, filter:var-subst"
)
# SSE comments: what the streams carry, so that any SSE client would ignore them.
OPEN = b":open\n\n"
KEEP_ALIVE = b":kal\n\n"  # 6 bytes: base64 without '=' padding (a header-parameter separator)
KEEP_ALIVE_B64 = base64.b64encode(KEEP_ALIVE).decode("ascii")
MEASURED: list[str] = []  # printed at the end of the module (pytest -s shows them)


def measured(text: str) -> None:
    MEASURED.append(text)


# --------------------------------------------------------------------------------------------
# the GRIP origin


@dataclass(frozen=True)
class Seen:
    """A request Pushpin made to the origin, with the time it arrived."""

    at: float
    method: str
    target: str  # path and query
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


# A route answers a request with a Reply, or with None: close the connection, answering nothing.
Route = Callable[[Seen], Reply | None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        self.origin.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.origin.handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class Origin:
    """A GRIP origin on 127.0.0.1: answers by exact path, records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.errors: list[str] = []
        self._seen: list[Seen] = []
        self._cond = threading.Condition()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        seen = Seen(
            time.monotonic(),
            handler.command,
            handler.path,
            tuple(handler.headers.items()),
            handler.rfile.read(length) if length else b"",
        )
        with self._cond:
            self._seen.append(seen)
            self._cond.notify_all()
        route = self.routes.get(seen.path)
        reply = route(seen) if route else Reply(404, body=b"no route\n")
        if reply is None:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.send_response(reply.status)
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(reply.body)

    def seen(self, prefix: str) -> list[Seen]:
        with self._cond:
            return [s for s in self._seen if s.path.startswith(prefix)]

    def wait_seen(self, prefix: str, count: int, timeout: float) -> list[Seen]:
        """The first ``count`` requests under ``prefix``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self._seen if s.path.startswith(prefix)]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} requests under {prefix} in {timeout:g} s: "
                        f"{[(s.method, s.target) for s in found]}"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def hold(
    channels: Mapping[str, str | None],
    *,
    filters: tuple[str, ...] = (),
    id_format: str | None = None,
    links: tuple[str, ...] = (),
    keep_alive: int | None = None,
    body: bytes = OPEN,
    mode: str = "stream",
    status: int = 200,
) -> Reply:
    """A hold instruct: ``channels`` maps each channel to its prev-id (None: none)."""
    entries = []
    for name, prev_id in channels.items():
        entry = name + (f"; prev-id={prev_id}" if prev_id is not None else "")
        entries.append(entry + "".join(f"; filter={f}" for f in filters))
    headers = [
        ("Content-Type", "text/event-stream"),
        ("Grip-Hold", mode),
        ("Grip-Channel", ", ".join(entries)),
    ]
    if id_format is not None:
        headers.append(("Grip-Set-Meta", f'id_format="{id_format}"'))
    if keep_alive is not None:
        headers.append(
            ("Grip-Keep-Alive", f"{KEEP_ALIVE_B64}; format=base64; timeout={keep_alive}")
        )
    headers += [("Grip-Link", link) for link in links]
    return Reply(status, tuple(headers), body)


def page(body: bytes, *links: str) -> Reply:
    """A next-link response that holds nothing: its body, then Pushpin follows its link."""
    headers = [("Content-Type", "text/event-stream")]
    headers += [("Grip-Link", link) for link in links]
    return Reply(200, tuple(headers), body)


# --------------------------------------------------------------------------------------------
# fixtures


@functools.cache
def is_141() -> bool:
    return version() >= (1, 41)


@pytest.fixture(scope="module")
def pushpin_version() -> tuple[int, ...]:
    if shutil.which("pushpin") is None:
        pytest.fail("pushpin is not installed: apt-get install pushpin (Debian/Ubuntu)")
    found = version()
    if found[:2] not in ((1, 36), (1, 41)):
        pytest.skip(f"these measurements are of Pushpin 1.36 and 1.41, not {found}")
    return found


@pytest.fixture(scope="module")
def module_origin() -> Iterator[Origin]:
    origin = Origin()
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture
def origin(module_origin: Origin) -> Iterator[Origin]:
    yield module_origin
    errors, module_origin.errors[:] = list(module_origin.errors), []
    assert not errors, "the origin failed:\n" + "\n".join(errors)


@dataclass
class Running:
    process: PushpinProcess
    workdir: Path
    readers: list[EventStream] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.process.config.url

    def stream(self, path: str, timeout: float = 5) -> EventStream:
        reader = EventStream(self.url + path, timeout=timeout)
        self.readers.append(reader)
        return reader

    def publish(self, *items: dict[str, object]) -> None:
        response = requests.post(
            f"{self.process.config.control_url}/publish/", json={"items": list(items)}, timeout=5
        )
        with response:
            assert response.status_code == 200, response.text

    def log(self) -> str:
        return log_tail(self.workdir / "pushpin.log")


@pytest.fixture(scope="module")
def module_pushpin(pushpin_version, module_origin: Origin) -> Iterator[Running]:
    # A short directory: ipc socket paths must fit in 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="ppv", dir="/tmp"))
    http_port, control_port, dead_port = free_ports(3)
    config = PushpinConfig(
        module_origin.address,
        workdir / "run",
        http_port=http_port,
        control_port=control_port,
        # Nothing listens there: a route to an app that is down.
        extra_routes=(f"*,path_beg=/down/ 127.0.0.1:{dead_port}",),
    )
    process = PushpinProcess(config, workdir, log=workdir / "pushpin.log")
    running = Running(process, workdir)
    try:
        process.start(timeout=20)
        # Pushpin's readiness probe does not go through its outbound client: wait for a
        # request proxied to the origin (the first one can stall for a moment).
        module_origin.routes["/warm"] = lambda seen: Reply(200, body=b"ok\n")
        deadline = time.monotonic() + 10
        while True:
            try:
                with requests.get(running.url + "/warm", timeout=1) as response:
                    if response.status_code == 200:
                        break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"no request reached the origin: {running.log()}"
            time.sleep(0.05)
    except BaseException:
        print(f"last lines of Pushpin's log:\n{running.log()}")
        process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        yield running
    finally:
        process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if MEASURED:
            print(f"\nmeasured on Pushpin {'.'.join(map(str, pushpin_version))}:")
            for line in MEASURED:
                print("  " + line)


@pytest.fixture
def pushpin(module_pushpin: Running, origin: Origin) -> Iterator[Running]:
    try:
        yield module_pushpin
    finally:
        for reader in module_pushpin.readers:
            reader.close()
        module_pushpin.readers.clear()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------------------------
# (a) the build-id filter's id format on a live event


def test_id_format_reads_the_events_own_channel_one_behind_on_1_41(pushpin, origin):
    """1.36 updates the event's channel, then renders the id format; 1.41 renders first."""
    ch, other = unique("a"), unique("a-other")
    base = f"/a/{ch}"
    id_format = f"%({ch})s/%({other})s"

    def next_link(seen: Seen) -> Reply:  # the first-subscription update, ~1 s in
        last = parse_grip_last(seen.all("Grip-Last"))
        links = (f"<{base}/next>; rel=next",)
        return hold(last, filters=("build-id",), id_format=id_format, links=links, body=b"")

    origin.routes[f"{base}/stream"] = lambda seen: hold(
        {ch: "1", other: "x"},
        filters=("build-id",),
        id_format=id_format,
        links=(f"<{base}/next>; rel=next",),
    )
    origin.routes[f"{base}/next"] = next_link
    reader = pushpin.stream(f"{base}/stream")
    reader.wait_contains(OPEN.decode())
    for seq in (2, 3):
        pushpin.publish(
            {
                "channel": ch,
                "id": str(seq),
                "prev-id": str(seq - 1),
                "formats": {
                    "http-stream": {
                        "content": f"id: %I\ndata: {seq}\n\n",
                        "content-filters": ["build-id"],
                    }
                },
            }
        )
    text = reader.wait_text(lambda t: t.count("data: ") >= 2, 5, "two events")
    ids = [line[4:] for line in text.splitlines() if line.startswith("id: ")]
    if is_141():
        assert ids == ["1/x", "2/x"]
    else:
        assert ids == ["2/x", "3/x"]
    measured(f"(a) ids of events 2 and 3 rendered from '%(ch)s/%(other)s': {ids}")


# --------------------------------------------------------------------------------------------
# (b) which filters a next-link response's body goes through


def _four_bodies(pushpin: Running, origin: Origin) -> tuple[str, str]:
    """Runs (b)'s four responses on a fresh channel; its path and the text received."""
    ch = unique("b")
    base = f"/b/{ch}"
    meta = "fixed"  # build-id needs an id format; these bodies have no %I
    origin.routes[f"{base}/h0"] = lambda seen: hold(
        {ch: None},
        filters=("build-id",),
        id_format=meta,
        links=(f"<{base}/p1>; rel=next",),
        body=b":h0 %%\n\n",
    )
    # Fetched by the first-subscription update (~1 s); p1 links on, fetched at once.
    origin.routes[f"{base}/p1"] = lambda seen: page(b":p1 %%\n\n", f"<{base}/h2>; rel=next")
    origin.routes[f"{base}/h2"] = lambda seen: hold(
        {ch: None},
        filters=("build-id",),
        id_format=meta,
        links=(f"<{base}/h3>; rel=next",),
        body=b":h2 %%\n\n",
    )
    origin.routes[f"{base}/h3"] = lambda seen: hold({ch: None}, body=b":h3 %%\n\n")
    reader = pushpin.stream(f"{base}/h0")
    reader.wait_contains(":h2", timeout=5)
    pushpin.publish({"channel": ch, "formats": {"http-stream": {"action": "hint"}}})
    return base, reader.wait_contains(":h3", timeout=5)


def test_next_link_bodies_are_filtered_by_the_old_hold_on_1_36_and_their_own_on_1_41(
    pushpin, origin
):
    """Four responses in a row, each body carrying '%%' (build-id makes it '%').

    h0 (filtered hold) -> p1 (page: no hold) -> h2 (filtered hold) -> h3 (unfiltered hold).
    """
    try:
        base, text = _four_bodies(pushpin, origin)
    except StreamEnded as exc:
        # Once, in a full run under load, Pushpin 1.36 cut this stream right after h0's
        # body (the client saw the connection end mid-chunk; the origin had no error). A
        # client reconnects with its Last-Event-ID then, so nothing is lost; the filtering
        # measured here is another question, so the scenario starts once more, afresh, and
        # the cut is reported with Pushpin's log.
        measured(f"(b) stream cut before the second hold, run again: {exc}\n{pushpin.log()}")
        base, text = _four_bodies(pushpin, origin)
    bodies = [line for line in text.splitlines() if line]
    assert bodies[0] == ":h0 %"  # a first hold's body: its own filters, on both
    if is_141():
        assert bodies[1:] == [":p1 %%", ":h2 %", ":h3 %%"]
    else:
        assert bodies[1:] == [":p1 %", ":h2 %%", ":h3 %"]
    # buildid.body_filtered predicts each from the Grip-Feature of the link requests.
    requests_seen = {s.path.rsplit("/", 1)[1]: s for s in origin.seen(base)}
    for name, old, new in (("p1", True, False), ("h2", False, True), ("h3", True, False)):
        features = proxy_features(requests_seen[name].header("Grip-Feature"))
        filtered = body_filtered(features, old_hold_filtered=old, new_hold_filtered=new)
        assert (f":{name} %" in bodies) == filtered, (name, bodies)
    measured(f"(b) bodies h0 (filtered hold), p1 (page), h2 (filtered hold), h3: {bodies}")


# --------------------------------------------------------------------------------------------
# (c) Grip-Feature


def test_grip_feature_on_every_forwarded_request_lists_link_gone_on_1_41(pushpin, origin):
    ch = unique("c")
    base = f"/c/{ch}"
    origin.routes[f"{base}/stream"] = lambda seen: hold(
        {ch: None}, links=(f"<{base}/next>; rel=next",)
    )
    origin.routes[f"{base}/next"] = lambda seen: hold({ch: None}, body=b":next\n\n")
    reader = EventStream(pushpin.url + f"{base}/stream", headers={"Grip-Feature": "forged"})
    pushpin.readers.append(reader)
    reader.wait_contains(OPEN.decode())
    pushpin.publish({"channel": ch, "formats": {"http-stream": {"action": "hint"}}})
    reader.wait_contains(":next")
    first, link = origin.wait_seen(base, 2, 5)
    expected = GRIP_FEATURE_1_41 if is_141() else GRIP_FEATURE_1_36
    for seen in (first, link):
        assert seen.all("Grip-Feature") == [expected]  # the client's own is replaced
    assert ("link:gone" in proxy_features(link.header("Grip-Feature"))) == is_141()
    measured(f"(c) Grip-Feature: {link.header('Grip-Feature')}")


# --------------------------------------------------------------------------------------------
# (d) the other generation's services


@dataclass
class Scratch:
    """A directory for Pushpins a test starts itself; the fixture stops what they left."""

    workdir: Path
    processes: list[PushpinProcess] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def log(self) -> str:
        path = self.workdir / "pushpin.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def config(self) -> PushpinConfig:
        http_port, control_port = free_ports(2)
        return PushpinConfig("127.0.0.1:9", self.workdir / "run", http_port, control_port)

    def spawn(self, config: PushpinConfig, services: tuple[str, ...]) -> subprocess.Popen[bytes]:
        """Pushpin with ``services``, as PushpinProcess.start would run it, not waited for."""
        config.rundir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "routes").write_text(config.routes())
        (self.workdir / "pushpin.conf").write_text(config.config(services))
        with open(self.workdir / "pushpin.log", "ab") as log:
            popen = subprocess.Popen(
                ["pushpin", "--config", str(self.workdir / "pushpin.conf"), "--merge-output"],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.popens.append(popen)
        return popen


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.02)


@pytest.fixture
def scratch(pushpin_version) -> Iterator[Scratch]:
    scratch = Scratch(Path(tempfile.mkdtemp(prefix="ppd", dir="/tmp")))
    try:
        yield scratch
    finally:
        for process in scratch.processes:
            process.stop(grace=2)
        for popen in scratch.popens:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)  # its session: the runner alone here
                popen.wait(10)
        # Services outlive a runner that died first; each pid checked to still be ours.
        for path in (scratch.workdir / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(path.read_text().strip())
                if str(scratch.workdir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(scratch.workdir, ignore_errors=True)


def test_services_of_the_other_generation(scratch, monkeypatch):
    if is_141():
        # PushpinProcess, told that this Pushpin takes 1.36's services.
        monkeypatch.setattr("grip_eventstream.pushpin.services_for", lambda _: SERVICES_1_36)
        process = PushpinProcess(scratch.config(), scratch.workdir, scratch.workdir / "pushpin.log")
        scratch.processes.append(process)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="pushpin exited with status 1"):
            process.start(timeout=10)
        took = time.monotonic() - started
        # The runner starts a zurl service, and sid's Pushpin has no zurl program (Debian
        # 12's Pushpin depends on zurl, sid's does not): it stops everything and exits.
        assert "zurl: Error running: zurl" in scratch.log, scratch.log
        measured(f"(d) 1.41 with {SERVICES_1_36}: exit status 1 after {took:.2f} s")
    else:
        # Raw: PushpinProcess.stop() would wait its SIGTERM grace for a runner that ignores it.
        config = scratch.config()
        popen = scratch.spawn(config, SERVICES_1_40)
        _wait_until(lambda: "starting..." in scratch.log, 5, "'starting...' in the log")
        time.sleep(0.7)  # with its own services, this Pushpin is ready in ~0.2 s
        # 1.36's runner knows none of these names: it starts no service and does not exit.
        assert popen.poll() is None
        assert [line.split()[-1] for line in scratch.log.splitlines()] == ["starting..."]
        with pytest.raises(requests.ConnectionError):
            requests.get(config.url + "/", timeout=1)
        popen.send_signal(signal.SIGTERM)
        _wait_until(lambda: "stopping..." in scratch.log, 5, "'stopping...' in the log")
        # ... and waits for services it never started: only SIGKILL ends it.
        with pytest.raises(subprocess.TimeoutExpired):
            popen.wait(0.5)
        measured(f"(d) 1.36 with {SERVICES_1_40}: no service started, SIGTERM does not stop it")


# --------------------------------------------------------------------------------------------
# (e) gone links


def test_gone_link_is_posted_after_a_disconnect_or_a_close_on_1_41_only(pushpin, origin):
    ch_a, ch_b = unique("e"), unique("e")
    for ch in (ch_a, ch_b):
        base = f"/e/{ch}"
        origin.routes[f"{base}/stream"] = lambda seen, base=base, ch=ch: hold(
            {ch: None}, links=(f"<{base}/gone?x=1>; rel=gone",)
        )
        origin.routes[f"{base}/gone"] = lambda seen: Reply(200)
    disconnecting = pushpin.stream(f"/e/{ch_a}/stream")
    closed = pushpin.stream(f"/e/{ch_b}/stream")
    disconnecting.wait_contains(OPEN.decode())
    closed.wait_contains(OPEN.decode())
    disconnected_at = time.monotonic()
    disconnecting.close()
    close_at = time.monotonic()
    pushpin.publish({"channel": ch_b, "formats": {"http-stream": {"action": "close"}}})
    closed.wait_ended(5)
    if is_141():
        [gone_a] = origin.wait_seen(f"/e/{ch_a}/gone", 1, 3)
        [gone_b] = origin.wait_seen(f"/e/{ch_b}/gone", 1, 3)
        for gone in (gone_a, gone_b):
            assert gone.method == "POST"
            assert gone.target.endswith("/gone?x=1")
            assert gone.body == b""
            assert "link:gone" in proxy_features(gone.header("Grip-Feature"))
        delays = (gone_a.at - disconnected_at, gone_b.at - close_at)
        assert all(delay < 0.5 for delay in delays), delays
        measured(f"(e) gone POST after disconnect {delays[0]:.3f} s, after close {delays[1]:.3f} s")
    else:
        time.sleep(0.5)  # 1.41 posts within a few ms
        assert origin.seen(f"/e/{ch_a}/gone") == origin.seen(f"/e/{ch_b}/gone") == []
        measured("(e) no gone POST within 0.5 s of a disconnect or a close")


# --------------------------------------------------------------------------------------------
# next-link timing


def test_first_subscription_fetch_after_1_s_then_the_link_timeout(pushpin, origin):
    """A channel's first subscriber gets a next-link fetch SUBSCRIBED_DELAY (1 s) later,
    with Grip-Last for channels that have a prev-id; then ``timeout=3`` fetches after 3 s."""
    reliable, volatile = unique("t"), unique("t")
    for ch, prev_id in ((reliable, "p0"), (volatile, None)):
        base = f"/t/{ch}"
        link = (f"<{base}/next>; rel=next; timeout=3",)

        def next_link(seen: Seen, ch: str = ch, link: tuple[str, ...] = link) -> Reply:
            last = parse_grip_last(seen.all("Grip-Last"))
            return hold({ch: last.get(ch)}, links=link, body=b"")

        origin.routes[f"{base}/stream"] = lambda seen, ch=ch, p=prev_id, link=link: hold(
            {ch: p}, links=link
        )
        origin.routes[f"{base}/next"] = next_link
    for ch in (reliable, volatile):
        pushpin.stream(f"/t/{ch}/stream").wait_contains(OPEN.decode())
    results = {}
    for ch in (reliable, volatile):
        held, first, second = origin.wait_seen(f"/t/{ch}/", 3, 6)
        results[ch] = (first.at - held.at, second.at - first.at)
        grip_last = [first.all("Grip-Last"), second.all("Grip-Last")]
        if ch == reliable:
            assert grip_last == [[f"{ch}; last-id=p0"]] * 2
        else:
            assert grip_last == [[], []]
        assert 0.9 < first.at - held.at < 2.0, results
        assert 2.7 < second.at - first.at < 4.0, results
    measured(
        "first-subscription fetch / link timeout=3 fetch after: "
        + ", ".join(f"{a:.2f} s / {b:.2f} s" for a, b in results.values())
    )


def test_next_link_503_retries_and_keep_alives(pushpin, origin):
    """A next link answered 503 is fetched again after RETRY_TIMEOUT (1 s) doubled per retry
    plus up to RETRY_RAND_MAX (1 s); after RETRY_MAX (5) retries the stream ends. Measured
    once without keep-alives: six requests over 31-36 s on both versions (gaps 1.5, 2.6,
    4.9, 8.7, 16.4 s on 1.36; 1.6, 2.9, 4.8, 8.2, 16.9 s on 1.41), then the stream ends.

    Keep-alives differ. On 1.36 every keep-alive written while a retry waits fetches the
    link again at once (req_bytesWritten -> tryProcessOutReq -> requestNextLink), using up a
    retry: with keep-alives the stream ends sooner (about 19 s with a 20 s keep-alive, a few
    seconds with 1 s). On 1.41 the 503 response replaces the stream's instruct (the instruct
    is taken from the response headers before the status is checked) and it has no
    keep-alive: the client gets no keep-alive until a next link succeeds.
    """
    quiet, chatty = unique("r-quiet"), unique("r-ka")
    for ch, keep_alive in ((quiet, None), (chatty, 1)):
        base = f"/r/{ch}"
        origin.routes[f"{base}/stream"] = lambda seen, ch=ch, base=base, ka=keep_alive: hold(
            {ch: None}, links=(f"<{base}/next>; rel=next",), keep_alive=ka
        )
        origin.routes[f"{base}/next"] = lambda seen: Reply(503, body=b"down\n")
    quiet_reader = pushpin.stream(f"/r/{quiet}/stream")
    chatty_reader = pushpin.stream(f"/r/{chatty}/stream")
    quiet_reader.wait_contains(OPEN.decode())
    chatty_reader.wait_contains(KEEP_ALIVE.decode(), timeout=3)  # keep-alives run at first
    for ch in (quiet, chatty):
        pushpin.publish({"channel": ch, "formats": {"http-stream": {"action": "hint"}}})
    [failed] = origin.wait_seen(f"/r/{chatty}/next", 1, 3)
    if is_141():
        # Past the 503's arrival (a keep-alive may still be written before it is read) ...
        time.sleep(max(0.0, failed.at + 0.2 - time.monotonic()))
        keep_alives = chatty_reader.text().count(KEEP_ALIVE.decode())
        *_, retry2 = origin.wait_seen(f"/r/{chatty}/next", 3, 7)
        # ... until the second retry, 3-5 s later: no keep-alive, where 3 or more came before.
        silent = retry2.at - failed.at - 0.2
        assert silent > 2.5
        assert chatty_reader.text().count(KEEP_ALIVE.decode()) == keep_alives
        assert not chatty_reader.ended
        chatty_result = f"no keep-alive in {silent:.2f} s, until the second retry"
    else:
        keep_alives = chatty_reader.text().count(KEEP_ALIVE.decode())
        chatty_reader.wait_ended(8)
        text = chatty_reader.text()
        attempts = origin.seen(f"/r/{chatty}/next")
        assert len(attempts) == 6  # the first request and RETRY_MAX retries
        took = attempts[-1].at - failed.at
        assert took < 6  # not the 31-36 s of the backoff
        assert text.count(KEEP_ALIVE.decode()) > keep_alives
        chatty_result = f"6 requests in {took:.2f} s, then the stream ended"
    first, retry1, retry2 = origin.wait_seen(f"/r/{quiet}/next", 3, 6)
    gaps = (retry1.at - first.at, retry2.at - retry1.at)
    assert 0.9 <= gaps[0] < 2.5, gaps
    assert 1.9 <= gaps[1] < 3.5, gaps
    assert not quiet_reader.ended
    measured(
        f"(503) retries after {gaps[0]:.2f} s and {gaps[1]:.2f} s more; with 1 s keep-alives: "
        + chatty_result
    )


# --------------------------------------------------------------------------------------------
# what the client sees when the origin's answer is unusable


@pytest.mark.parametrize(
    ("case", "size"),
    [
        ("stream build-id", 100_000),
        ("stream build-id", 100_001),
        ("stream", 110_000),
        ("response", 110_000),
    ],
)
def test_hold_response_body_over_100_kb(pushpin, origin, case, size):
    ch = unique("big")
    base = f"/big/{ch}"
    body = b":" + b"x" * (size - 2) + b"\n"
    mode = case.split()[0]
    filters = ("build-id",) if "build-id" in case else ()
    origin.routes[f"{base}/stream"] = lambda seen: hold(
        {ch: None},
        filters=filters,
        # No channel in it: build-id renders a channel without a prev-id as an error.
        id_format="fixed" if filters else None,
        body=body,
        mode=mode,
    )
    reader = pushpin.stream(f"{base}/stream")
    if mode == "stream" and (size <= 100_000 or not filters):
        assert reader.status == 200
        reader.wait_text(lambda t: len(t) >= size, 5, f"{size} bytes")
        received_at = time.monotonic()
        # Held: a publish reaches the stream. Over 100 KB without build-id, Pushpin's proxy
        # sends the body itself and hands the request to the handler afterwards: publishes
        # made before the handler subscribes are lost, so publish until one arrives.
        for n in range(50):
            pushpin.publish({"channel": ch, "formats": {"http-stream": {"content": f":{n}\n\n"}}})
            with contextlib.suppress(TimeoutError):
                text = reader.wait_text(lambda t: t.endswith("\n\n"), 0.1, "a publish")
                break
        else:
            raise AssertionError(f"no publish reached the stream: {reader.text()[-100:]!r}")
        first = int(text[size:].split("\n")[0][1:])
        took = time.monotonic() - received_at
        if size <= 100_000:
            assert first == 0  # the handler sent the body: subscribed before the client has it
        measured(
            f"(big) {case} {size} bytes: 200, body streamed, then held; first publish received: "
            f"#{first}, {took:.2f} s after the body"
        )
    else:
        reader.wait_ended(5)
        text = reader.text()
        assert reader.status == 502, (reader.status, text[:200])
        assert text == "Error while proxying to origin.\n"
        measured(f"(big) {case} {size} bytes: 502 {text!r}")


@pytest.mark.parametrize("case", ["500", "500 with Grip-Hold", "closed", "down"])
def test_stream_request_answered_with_an_error(pushpin, origin, case):
    """A 500 passes through (with GRIP headers, a stream is held with status 500); a closed
    connection or a refused one gives 502, and Pushpin does not send the request again."""
    ch = unique("err")
    path = f"/down/{ch}" if case == "down" else f"/err/{ch}"  # /down/ routes to a dead port
    if case == "500":
        origin.routes[path] = lambda seen: Reply(500, (("Content-Type", "text/plain"),), b"boom\n")
    elif case == "500 with Grip-Hold":
        origin.routes[path] = lambda seen: hold({ch: None}, status=500)
    elif case == "closed":
        origin.routes[path] = lambda seen: None
    reader = pushpin.stream(path)
    if case == "500 with Grip-Hold":
        assert reader.status == 500
        reader.wait_contains(OPEN.decode())
        pushpin.publish({"channel": ch, "formats": {"http-stream": {"content": ":live\n\n"}}})
        text = reader.wait_contains(":live")
    else:
        reader.wait_ended(5)
        text = reader.text()
        if case == "500":
            assert (reader.status, text) == (500, "boom\n")
        else:
            assert (reader.status, text) == (502, "Error while proxying to origin.\n")
    time.sleep(0.2)  # room for a retry that should not come
    assert len(origin.seen(path)) == (0 if case == "down" else 1)
    measured(f"(error) {case}: {reader.status} {text[:40]!r}")

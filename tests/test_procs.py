"""Tests of the process harness: tests/procs.py, tests/pushpin_process.py and
tests/gunicorn_process.py (real Pushpin and gunicorn, no Django)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from grip_eventstream.pushpin import wait_proxied
from grip_eventstream.sseclient import EventStream
from tests.gunicorn_process import Gunicorn
from tests.procs import free_port, free_ports, pid_alive, processes_mentioning, wait_for
from tests.pushpin_process import PUSHPIN_SERVICES, Pushpin

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent

# A GRIP stream hold: Pushpin keeps the connection open and subscribes it to channel "test".
GRIP_APP = """\
import os


def application(environ, start_response):
    if environ["PATH_INFO"] == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/event-stream"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "test"),
        ],
    )
    return [b"event: hello\\ndata: x\\n\\n"]
"""

MESSAGE = {"channel": "test", "formats": {"http-stream": {"content": "event: m\ndata: hi\n\n"}}}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    workdir = tmp_path_factory.mktemp("gunicorn")
    (workdir / "gripapp.py").write_text(GRIP_APP)
    with Gunicorn("gripapp:application", workdir, cwd=workdir, env={}, workers=2) as server:
        yield server


@pytest.fixture
def pushpin(app: Gunicorn, tmp_path: Path) -> Iterator[Pushpin]:
    with Pushpin(app.address, tmp_path / "pushpin") as proxy:
        # Ready by its own probe, which does not go through zurl: a first proxied stream
        # opened at once was seen to hang past its 10 s timeout in a loaded run.
        wait_proxied(proxy.url + "/", want_status=200)
        yield proxy


def assert_streams_through(proxy: Pushpin) -> None:
    # Pushpin's readiness probe can pass before proxied streams work (see conftest.wait_proxied).
    wait_proxied(proxy.url + "/", want_status=200)
    with EventStream(proxy.url + "/") as reader:
        assert reader.status == 200
        assert reader.headers["Content-Type"] == "text/event-stream"
        assert "Grip-Hold" not in reader.headers
        reader.wait_contains("event: hello\ndata: x\n\n")
        proxy.publish([MESSAGE])
        text = reader.wait_contains("event: m\ndata: hi\n\n")
    assert text == "event: hello\ndata: x\n\nevent: m\ndata: hi\n\n"


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert 0 < free_port() < 65536


def test_wait_for_timeout_shows_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    with pytest.raises(TimeoutError, match=r"(?s)the moon.*line 99") as info:
        wait_for(lambda: False, 0.1, "the moon", log=log)
    assert "line 10\n" not in str(info.value)


def test_publish_reaches_a_stream_held_by_the_app(pushpin: Pushpin) -> None:
    assert_streams_through(pushpin)


def test_publish_error_is_raised(pushpin: Pushpin) -> None:
    with pytest.raises(RuntimeError, match="400"):
        pushpin.publish([{"channel": "test"}])


def test_stop_leaves_nothing_and_is_idempotent(app: Gunicorn, tmp_path: Path) -> None:
    proxy = Pushpin(app.address, tmp_path)
    proxy.start()
    # One pid file per service (named after its program: 1.41's "proxy" is pushpin-proxy.pid).
    assert len(proxy.child_pids()) == len(PUSHPIN_SERVICES)
    assert len(proxy.processes()) == 1 + len(PUSHPIN_SERVICES)  # the runner and its services
    runner = proxy.pid
    assert runner is not None
    proxy.stop()
    proxy.stop()
    assert proxy.processes() == []
    assert not pid_alive(runner)
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.url + "/", timeout=1)


def start_time(pid: int) -> str | None:
    """The start time of a process (clock ticks after boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def test_kill_leaves_no_process_and_restart_reuses_the_ports(pushpin: Pushpin) -> None:
    with EventStream(pushpin.url + "/") as reader:
        reader.wait_contains("data: x")
        services = {pid: start_time(pid) for pid in pushpin.child_pids().values()}
        ports = (pushpin.http_port, pushpin.control_port)
        pushpin.kill()
        pushpin.kill()
        reader.wait_ended()
    assert pushpin.processes() == []
    # The same processes (pid and start time: pids are reused quickly when pid_max is 32768).
    assert not any(pid_alive(pid) and start_time(pid) == t for pid, t in services.items())

    pushpin.start()
    assert (pushpin.http_port, pushpin.control_port) == ports
    assert {(pid, start_time(pid)) for pid in pushpin.child_pids().values()}.isdisjoint(
        services.items()
    )
    assert_streams_through(pushpin)


@pytest.mark.parametrize("crash", [False, True], ids=["graceful", "crash"])
def test_restart_with_streams_open(pushpin: Pushpin, crash: bool) -> None:
    # Used connections (a stream, a publish) leave sockets in TIME_WAIT on the old ports.
    assert_streams_through(pushpin)
    with EventStream(pushpin.url + "/") as reader:
        reader.wait_contains("data: x")
        pushpin.restart(crash=crash)
        reader.wait_ended()
    assert_streams_through(pushpin)


def test_long_workdir_gets_a_short_rundir(app: Gunicorn, tmp_path: Path) -> None:
    workdir = tmp_path / ("d" * 60) / ("e" * 60)
    with Pushpin(app.address, workdir) as proxy:
        assert len(str(proxy.rundir)) < 40
        rundir = proxy.rundir
        assert_streams_through(proxy)
    assert not rundir.exists()


def test_gunicorn_respawns_a_killed_worker(app: Gunicorn) -> None:
    before = app.wait_for_workers()
    assert len(before) == 2
    victim = app.kill_worker()
    assert victim in before
    wait_for(
        lambda: victim not in app.worker_pids() and len(app.worker_pids()) == 2,
        10,
        "gunicorn to respawn the killed worker",
        log=app.log_path,
    )
    pids = set()
    for _ in range(10):
        with requests.get(app.url + "/pid", timeout=5) as response:
            pids.add(int(response.text))
    assert victim not in pids
    assert pids <= set(app.worker_pids())


def test_gunicorn_start_failure_shows_the_log(tmp_path: Path) -> None:
    server = Gunicorn("no_such_module:app", tmp_path, cwd=tmp_path, env={}, workers=1)
    with pytest.raises(RuntimeError, match=r"(?s)gunicorn exited.*no_such_module"):
        server.start(timeout=20)
    assert not server.running


def test_gunicorn_stop_kills_its_workers(tmp_path: Path) -> None:
    (tmp_path / "gripapp.py").write_text(GRIP_APP)
    server = Gunicorn("gripapp:application", tmp_path, cwd=tmp_path, env={}, workers=2)
    server.start()
    workers = server.wait_for_workers()
    master = server.pid
    assert master is not None
    server.stop()
    server.stop()
    assert not any(pid_alive(pid) for pid in [master, *workers])


ORPHAN_SCRIPT = """\
import os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.gunicorn_process import Gunicorn
from tests.pushpin_process import Pushpin
workdir = Path({workdir!r})
(workdir / "gripapp.py").write_text({app!r})
server = Gunicorn("gripapp:application", workdir, cwd=workdir, env={{}}, workers=1).start()
proxy = Pushpin(server.address, workdir / "pp").start()
print(proxy.rundir, proxy.config_path, server.pid, flush=True)
time.sleep(60)
"""


def test_everything_dies_with_a_sigkilled_test_process(tmp_path: Path) -> None:
    script = ORPHAN_SCRIPT.format(repo=str(REPO), workdir=str(tmp_path), app=GRIP_APP)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, "the child failed to start Pushpin and gunicorn"
        rundir, config, gunicorn_pid = line.split()
        assert len(processes_mentioning(rundir + "/", config)) == 1 + len(PUSHPIN_SERVICES)
        assert pid_alive(int(gunicorn_pid))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        processes_mentioning(rundir + "/", config) or pid_alive(int(gunicorn_pid))
    ):
        time.sleep(0.05)
    assert processes_mentioning(rundir + "/", config) == []
    assert not pid_alive(int(gunicorn_pid))

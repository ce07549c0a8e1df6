"""Real Pushpin and gunicorn processes for end-to-end tests, and a streaming SSE client.

Everything binds 127.0.0.1 on free ports and is always torn down:

- ``stop()`` / ``__exit__`` stop a process and everything it spawned;
- an ``atexit`` hook stops whatever a test forgot (pytest crashed inside a fixture, Ctrl-C);
- every started process also gets a tiny *reaper* process holding a pipe to us: when the test
  process dies without cleaning up (SIGKILL, SIGTERM, ``os._exit`` from pytest-timeout's thread
  method), the pipe closes and the reaper SIGKILLs what it was told about. atexit alone cannot
  cover those deaths.

Linux only (reads /proc). No Django import: the harness tests itself without settings.
"""

from __future__ import annotations

import abc
import atexit
import codecs
import contextlib
import datetime
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import requests

from grip_eventstream.pushpin import (
    SERVICES_1_36,
    PushpinConfig,
    free_port,
    free_ports,
    not_ready,
    services_for,
    version,
)

__all__ = [
    "Gunicorn",
    "MissingExecutableError",
    "Pushpin",
    "SSEReader",
    "free_port",
    "free_ports",
    "read_sse",
    "wait_for",
    "wait_on",
]

# Pushpin's services, by the version on PATH.
PUSHPIN_SERVICES = services_for(version()) if shutil.which("pushpin") else SERVICES_1_36
# AF_UNIX sun_path is 108 bytes with the terminating NUL; Pushpin's longest ipc name in the rundir
# is "pp-condure-out-stream" (21) plus the slash: keep a margin for future names.
_MAX_RUNDIR_LEN = 107 - 40
_LOG_TAIL_LINES = 40


class MissingExecutableError(RuntimeError):
    """A required program is not installed (a conftest may turn this into a skip)."""


# --------------------------------------------------------------------------------------------
# small helpers


def log_tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    log: Path | None = None,
) -> None:
    """Poll ``predicate`` until it returns true; raise ``TimeoutError`` after ``timeout`` s.

    Exceptions from ``predicate`` propagate: a predicate may raise to abort the wait early (for
    example when the process it waits for has exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if log is not None:
                message += f"; last log lines of {log}:\n{log_tail(log)}"
            raise TimeoutError(message)
        time.sleep(interval)


def wait_on(
    cond: threading.Condition,
    predicate: Callable[[], bool],
    timeout: float,
    describe: Callable[[], str],
) -> None:
    """Wait on ``cond`` until ``predicate`` holds; raise ``TimeoutError(describe())`` after
    ``timeout`` s.

    The caller holds ``cond``; ``predicate`` and ``describe`` run with it held, and exceptions
    from ``predicate`` propagate (to abort the wait early).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(describe())
        cond.wait(remaining)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie counts as dead (nothing may reap orphans in a container)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def processes_mentioning(*needles: str) -> list[int]:
    """Live pids whose command line contains any of ``needles`` (ours excluded)."""
    me = os.getpid()
    return sorted(
        pid
        for pid in _all_pids()
        if pid != me and pid_alive(pid) and any(n in _cmdline(pid) for n in needles)
    )


def child_pids(parent: int) -> list[int]:
    """Live direct children of ``parent`` (from /proc, so no psutil needed)."""
    found = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == parent and stat[0] not in ("Z", "X"):
            found.append(pid)
    return sorted(found)


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _open_log(path: Path, title: str) -> io.BufferedWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("ab")
    stamp = datetime.datetime.now().isoformat(timespec="milliseconds")
    log.write(f"\n===== {title} at {stamp} =====\n".encode())
    log.flush()
    return log


# --------------------------------------------------------------------------------------------
# cleanup: atexit registry + reaper processes


class _Stoppable(Protocol):
    def stop(self) -> None: ...


# The one module-level mutable registry, allowed in tests/ only: atexit must find instances a
# test forgot to stop. It is weak so it never keeps an instance (and its Popen) alive by itself.
_LIVE: weakref.WeakSet[_Stoppable] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for instance in list(_LIVE):
        with contextlib.suppress(Exception):
            instance.stop()


# Runs as `python -I -S -c` beside every started process. Lines on stdin say what to kill;
# "release" means the owner cleaned up; EOF without "release" means the owner died: kill it all.
_REAPER_SOURCE = r"""
import os, shutil, signal, sys
pids, groups, piddirs, trees = set(), set(), set(), set()
for line in sys.stdin:
    kind, _, arg = line.strip().partition(" ")
    if kind == "release":
        sys.exit(0)
    {"pid": pids, "pgid": groups, "piddir": piddirs, "rmtree": trees}[kind].add(arg)
for piddir in piddirs:
    try:
        names = os.listdir(piddir)
    except OSError:
        names = []
    for name in names:
        if name.endswith(".pid"):
            try:
                with open(os.path.join(piddir, name)) as f:
                    pids.add(f.read().strip())
            except OSError:
                pass
for pgid in groups:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except (OSError, ValueError):
        pass
for pid in pids:
    try:
        os.kill(int(pid), signal.SIGKILL)
    except (OSError, ValueError):
        pass
for tree in trees:
    shutil.rmtree(tree, ignore_errors=True)
"""


class _Reaper:
    """Kills registered processes if this Python process dies without releasing it."""

    def __init__(self) -> None:
        # Own session: a Ctrl-C in the terminal must not kill the reaper before pytest's own
        # cleanup has run.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _REAPER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )

    def watch(self, kind: str, value: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{kind} {value}\n")
        self._proc.stdin.flush()

    def release(self) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.write("release\n")
                stdin.flush()
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _require(executable: str, hint: str) -> str:
    path = shutil.which(executable)
    if path is None:
        raise MissingExecutableError(f"{executable} is not installed: {hint}")
    return path


def _http_answers(url: str, timeout: float = 1.0) -> requests.Response | None:
    try:
        with requests.get(url, timeout=timeout) as response:
            _ = response.content  # read it all so the connection is released cleanly
            return response
    except requests.RequestException:
        return None


def _terminate(popen: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``popen`` if it runs, then SIGKILL it if it is not gone after ``grace`` s."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


# --------------------------------------------------------------------------------------------
# what Pushpin and gunicorn share


class _ManagedProcess(abc.ABC):
    """One started program with its output appended to ``log_path``, in a session of its own,
    watched by a reaper and by the atexit registry until it is stopped.

    Subclasses start it with ``_spawn`` and ``_wait_ready`` and end ``stop()`` with ``_release``.
    """

    _name: str  # the program, as in error messages

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._reaper: _Reaper | None = None

    @property
    def pid(self) -> int | None:
        """The started process's pid (Pushpin's runner, gunicorn's master) while started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @abc.abstractmethod
    def start(self) -> Self: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def _spawn(
        self, command: list[str], *, cwd: Path, title: str, env: Mapping[str, str] | None = None
    ) -> _Reaper:
        """Start ``command`` and register it for cleanup; return its reaper to watch more."""
        log = _open_log(self.log_path, title)
        try:
            self._popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        _LIVE.add(self)
        self._reaper = _Reaper()
        self._reaper.watch("pgid", self._popen.pid)
        return self._reaper

    def _wait_ready(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """``wait_for(predicate)``; stop everything if it fails, then let the error through."""
        try:
            wait_for(predicate, timeout, what, log=self.log_path)
        except BaseException:
            self.stop()
            raise

    def _raise_if_exited(self) -> None:
        """For readiness checks: a program that exited while starting will never be ready."""
        popen = self._popen
        assert popen is not None
        if popen.poll() is not None:
            raise RuntimeError(
                f"{self._name} exited with status {popen.returncode} while starting; last log "
                f"lines of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _release(self) -> None:
        """Forget the process once it and everything it spawned are gone (or given up on)."""
        self._popen = None
        _LIVE.discard(self)
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None

    def __enter__(self) -> Self:
        return self.start() if self._popen is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Pushpin


class Pushpin(_ManagedProcess):
    """A private Pushpin (condure, zurl, pushpin-proxy, pushpin-handler) in front of ``target``.

    See /work/shared/PUSHPIN.md for why each config key is needed.
    """

    _name = "pushpin"

    def __init__(
        self,
        target: str,
        workdir: Path,
        *,
        sig_key: str = "grip-eventstream-test-key",
        sig_iss: str = "pushpin",
        message_wait_ms: int = 500,
        id_cache_ttl: int = 60,
        extra_routes: Sequence[str] = (),
        loglevel: int = 2,
    ) -> None:
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"target must look like '127.0.0.1:8000', not {target!r}")
        self.target = target
        self.workdir = Path(workdir).resolve()
        self.sig_key = sig_key
        self.sig_iss = sig_iss
        self.message_wait_ms = message_wait_ms
        self.id_cache_ttl = id_cache_ttl
        self.extra_routes = tuple(extra_routes)
        self.loglevel = loglevel
        # Picked once: restart() must come back on the same ports, as a real deployment would.
        (
            self.http_port,
            self.control_port,
            self.push_in_port,
            self.push_in_sub_port,
            self.command_port,
        ) = free_ports(5)
        super().__init__(self.workdir / "pushpin.log")
        self.config_path = self.workdir / "pushpin.conf"
        self.routes_path = self.workdir / "routes"
        rundir = self.workdir / "run"
        self._own_rundir = len(str(rundir)) > _MAX_RUNDIR_LEN
        if self._own_rundir:
            rundir = Path(tempfile.mkdtemp(prefix="pp", dir="/tmp"))
        self.rundir = rundir
        self._children: dict[str, int] = {}
        self._not_ready = "not probed yet"

    # -- addresses

    @property
    def url(self) -> str:
        """Where clients connect."""
        return self.settings.url

    @property
    def control_url(self) -> str:
        """The publish endpoint base: what GRIP_URL points to."""
        return self.settings.control_url

    def child_pids(self) -> dict[str, int]:
        """Service name -> pid, from the rundir's pid files (recorded at start if they vanished)."""
        return {**self._children, **self._read_pid_files()}

    def processes(self) -> list[int]:
        """Every live process that belongs to this instance, found by its rundir/config in /proc.

        Tests use it to prove nothing is left behind.
        """
        return processes_mentioning(str(self.rundir) + "/", str(self.config_path))

    # -- files

    @property
    def settings(self) -> PushpinConfig:
        """The configuration, written by grip_eventstream.pushpin (one implementation)."""
        return PushpinConfig(
            target=self.target,
            rundir=self.rundir,
            http_port=self.http_port,
            control_port=self.control_port,
            sig_key=self.sig_key,
            sig_iss=self.sig_iss,
            push_in_port=self.push_in_port,
            push_in_sub_port=self.push_in_sub_port,
            command_port=self.command_port,
            message_wait_ms=self.message_wait_ms,
            id_cache_ttl=self.id_cache_ttl,
            extra_routes=self.extra_routes,
        )

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.routes_path.write_text(self.settings.routes())
        self.config_path.write_text(self.settings.config(PUSHPIN_SERVICES, self.routes_path.name))

    def _read_pid_files(self) -> dict[str, int]:
        # Every *.pid: the files are named after the programs, which differ from the
        # service names (1.41: connmgr.pid, pushpin-proxy.pid, pushpin-handler.pid).
        found: dict[str, int] = {}
        for path in self.rundir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                found[path.stem] = int(path.read_text().strip())
        return found

    def _our_children(self) -> list[int]:
        """Known service pids that are alive and still ours (guards against pid reuse)."""
        marks = (str(self.rundir) + "/", str(self.config_path))
        return sorted(
            pid
            for pid in set(self.child_pids().values())
            if pid_alive(pid) and any(m in _cmdline(pid) for m in marks)
        )

    # -- lifecycle

    def start(self, timeout: float = 15) -> Self:
        if self._popen is not None:
            raise RuntimeError("Pushpin is already started: call stop() or restart()")
        executable = _require("pushpin", "apt-get install pushpin (Debian/Ubuntu)")
        self._write_files()
        # Pid files left by a kill() are harmless to Pushpin (seen), but would make child_pids()
        # report dead processes until the new services rewrite them.
        for path in self.rundir.glob("*.pid"):
            path.unlink(missing_ok=True)
        self._children = {}
        reaper = self._spawn(
            [
                executable,
                "--config",
                str(self.config_path),
                "--merge-output",
                "--loglevel",
                str(self.loglevel),
            ],
            cwd=self.workdir,
            title=f"pushpin start ({self.url}, control {self.control_url})",
        )
        # The services run in process groups of their own: only their pid files find them.
        reaper.watch("piddir", self.rundir)
        if self._own_rundir:
            reaper.watch("rmtree", self.rundir)
        try:
            self._wait_ready(self._ready, timeout, f"Pushpin on {self.url} to be ready")
        except TimeoutError as exc:
            # _wait_ready has stopped it already.
            raise TimeoutError(f"{exc}\nlast failed readiness check: {self._not_ready}") from None
        self._children = self._read_pid_files()
        for pid in self._children.values():
            reaper.watch("pid", pid)
        return self

    def _ready(self) -> bool:
        self._raise_if_exited()
        reason = not_ready(self.settings)
        if reason is not None:
            self._not_ready = reason
        return reason is None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after 5 s) and make sure no service survives."""
        popen = self._popen
        if popen is None:
            return
        services = self._our_children()
        _terminate(popen, 5)
        self._finish(popen, services)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the runner and its 4 services at the same time."""
        popen = self._popen
        if popen is None:
            return
        services = self._our_children()
        for pid in [popen.pid, *services]:
            _signal_pid(pid, signal.SIGKILL)
        popen.wait()
        self._finish(popen, services)

    def _finish(self, popen: subprocess.Popen[bytes], services: Sequence[int]) -> None:
        # After a runner crash (or a kill()) the services keep running: finish them off.
        leftovers = self._our_children()
        for pid in leftovers:
            _signal_pid(pid, signal.SIGKILL)
        _signal_group(popen.pid, signal.SIGKILL)
        # Also the services known before the signals: a process that is exiting has an
        # empty /proc cmdline, so _our_children() no longer sees it, yet it is not gone.
        alive = _wait_gone(sorted({*leftovers, *services}), 5)
        self._release()
        if self._own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)
        if alive:
            raise RuntimeError(f"Pushpin services {alive} survived SIGKILL (stuck in the kernel?)")

    def restart(self, *, crash: bool = False, timeout: float = 15) -> None:
        """Stop (or, with ``crash=True``, kill) and start again on the same ports."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def publish(self, items: list[dict[str, Any]]) -> None:
        """POST items to /publish/ (a test convenience: the library publishes by itself)."""
        response = requests.post(f"{self.control_url}/publish/", json={"items": items}, timeout=5)
        with response:
            if response.status_code != 200:
                raise RuntimeError(
                    f"Pushpin refused the publish: {response.status_code} {response.text!r}"
                )

    def __repr__(self) -> str:
        return f"<Pushpin {self.url} -> {self.target} pid={self.pid}>"


# --------------------------------------------------------------------------------------------
# gunicorn


class Gunicorn(_ManagedProcess):
    """``python -m gunicorn`` serving ``wsgi_app`` (``module:callable``) with gthread workers."""

    _name = "gunicorn"

    def __init__(
        self,
        wsgi_app: str,
        workdir: Path,
        *,
        cwd: Path,
        env: Mapping[str, str],
        workers: int = 2,
        threads: int = 4,
        timeout: int = 30,
        python: str = sys.executable,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.workdir = Path(workdir)
        self.cwd = Path(cwd)
        self.env = dict(env)
        self.workers = workers
        self.threads = threads
        self.timeout = timeout
        self.python = python
        self.port = free_port()
        super().__init__(self.workdir / "gunicorn.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "gunicorn",
            "--bind",
            self.address,
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--worker-class",
            "gthread",
            "--timeout",
            str(self.timeout),
            "--graceful-timeout",
            "2",
            # gunicorn >= 24 opens a control socket at ~/.gunicorn/gunicorn.ctl by default:
            # parallel instances would fight over it.
            "--no-control-socket",
            "--access-logfile",
            "-",
            "--error-logfile",
            "-",
            self.wsgi_app,
        ]

    def start(self, timeout: float = 20, ready_path: str = "/") -> Self:
        if self._popen is not None:
            raise RuntimeError("gunicorn is already started: call stop() first")
        self._spawn(
            self.command(),
            cwd=self.cwd,
            env={"PYTHONUNBUFFERED": "1", **os.environ, **self.env},
            title=f"gunicorn start ({self.url}, {self.wsgi_app})",
        )
        self._wait_ready(
            lambda: self._ready(ready_path),
            timeout,
            f"gunicorn on {self.url} to answer GET {ready_path}",
        )
        return self

    def _ready(self, ready_path: str) -> bool:
        self._raise_if_exited()
        return _http_answers(f"{self.url}{ready_path}") is not None

    def worker_pids(self) -> list[int]:
        """Live worker pids (children of the master)."""
        return child_pids(self._popen.pid) if self._popen is not None else []

    def kill_worker(self, pid: int | None = None) -> int:
        """SIGKILL one worker (the first one unless ``pid`` is given); the master respawns it."""
        workers = self.worker_pids()
        if pid is None:
            if not workers:
                raise RuntimeError(f"gunicorn has no live worker; see {self.log_path}")
            pid = workers[0]
        elif pid not in workers:
            raise ValueError(f"{pid} is not a worker of this gunicorn (workers: {workers})")
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_for_workers(self, count: int | None = None, timeout: float = 10) -> list[int]:
        """Wait until ``count`` (default: all) workers run; return their pids."""
        wanted = self.workers if count is None else count
        wait_for(
            lambda: len(self.worker_pids()) >= wanted,
            timeout,
            f"{wanted} gunicorn workers",
            log=self.log_path,
        )
        return self.worker_pids()

    def stop(self) -> None:
        """SIGTERM the master, wait up to 10 s, then SIGKILL its whole process group."""
        popen = self._popen
        if popen is None:
            return
        workers = self.worker_pids()
        _terminate(popen, 10)
        # Workers share the master's group (start_new_session made the master its leader).
        _signal_group(popen.pid, signal.SIGKILL)
        alive = _wait_gone(workers, 5)
        self._release()
        if alive:
            raise RuntimeError(f"gunicorn workers {alive} survived SIGKILL")

    def __repr__(self) -> str:
        return f"<Gunicorn {self.url} {self.wsgi_app} pid={self.pid}>"


# --------------------------------------------------------------------------------------------
# any other program (runserver, manage.py runpushpin)


class Program(_ManagedProcess):
    """``command`` run until stopped; ready once ``ready(log text)`` holds."""

    _name = "program"

    def __init__(
        self,
        command: list[str],
        *,
        cwd: Path,
        log_path: Path,
        ready: Callable[[str], bool],
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> None:
        super().__init__(log_path)
        self.command = command
        self.cwd = cwd
        self.env = env
        self.ready = ready
        self.timeout = timeout
        self._name = " ".join(command[-3:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> Self:
        reaper = self._spawn(self.command, cwd=self.cwd, title=self._name, env=self.env)
        del reaper  # the group is watched: a program's children share it

        def ready() -> bool:
            self._raise_if_exited()
            return self.ready(self.log())

        self._wait_ready(ready, self.timeout, f"{self._name} to be ready")
        return self

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s, then SIGKILL whatever is left in its group."""
        popen = self._popen
        if popen is None:
            return
        _terminate(popen, 10)
        _signal_group(popen.pid, signal.SIGKILL)
        self._release()


# --------------------------------------------------------------------------------------------
# SSE client


class SSEReader:
    """Reads a streaming HTTP response in a background thread and keeps every byte.

    It does not parse SSE (grip_eventstream.sseclient does): it exposes the raw text and a
    thread-safe ``wait_for``. Close it (or use ``with``) so the socket is not leaked.
    """

    def __init__(self, response: requests.Response, read_timeout: float | None = None) -> None:
        self._response = response
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self.url: str = response.url
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._ended = False
        self._closing = False
        self.error: BaseException | None = None
        self._sock = self._find_socket()
        if self._sock is not None:
            # requests applied its timeout to the headers; the body of a quiet stream may take
            # longer, and close() interrupts a blocked read by shutting the socket down.
            self._sock.settimeout(read_timeout)
        self._thread = threading.Thread(
            target=self._run, name=f"SSEReader {response.url}", daemon=True
        )
        self._thread.start()

    def _find_socket(self) -> socket.socket | None:
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        return sock if isinstance(sock, socket.socket) else None

    def _run(self) -> None:
        raw = self._response.raw
        try:
            while True:
                # read1 returns whatever arrived (chunked or not) instead of waiting for a count.
                data = raw.read1(65536, decode_content=True)
                if not data:
                    break
                with self._cond:
                    self._buffer += data
                    self._cond.notify_all()
        except Exception as exc:
            if not self._closing:
                self.error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """True once the server closed the stream (or reading failed: see ``error``)."""
        with self._cond:
            return self._ended

    def raw(self) -> bytes:
        with self._cond:
            return bytes(self._buffer)

    def text(self) -> str:
        """Everything received so far, decoded as UTF-8 (an incomplete last character is held)."""
        with self._cond:
            return self._decode()

    def _decode(self) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(bytes(self._buffer), final=self._ended)

    def wait_for(
        self, predicate: Callable[[str], bool], timeout: float = 5, what: str = "the condition"
    ) -> str:
        """Block until ``predicate(text)`` holds and return the text.

        Raises ``TimeoutError``, or ``EOFError`` if the stream ended first; both show what was
        received.
        """
        text = ""

        def satisfied() -> bool:
            nonlocal text
            text = self._decode()
            if predicate(text):
                return True
            if self._ended:
                reason = f" ({self.error!r})" if self.error else ""
                raise EOFError(
                    f"stream from {self.url} ended{reason} before {what}; received: {text!r}"
                )
            return False

        with self._cond:
            wait_on(
                self._cond,
                satisfied,
                timeout,
                lambda: f"no {what} within {timeout:g} s from {self.url}; received: {text!r}",
            )
            return text

    def wait_contains(self, needle: str, timeout: float = 5) -> str:
        return self.wait_for(lambda text: needle in text, timeout, repr(needle))

    def wait_ended(self, timeout: float = 5) -> str:
        """Block until the server closes the stream; return the full text."""
        with self._cond:
            wait_on(
                self._cond,
                lambda: self._ended,
                timeout,
                lambda: (
                    f"stream from {self.url} still open after {timeout:g} s; "
                    f"received: {self._decode()!r}"
                ),
            )
            return self._decode()

    def close(self) -> None:
        """Disconnect (idempotent)."""
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_sse(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
    read_timeout: float | None = None,
) -> SSEReader:
    """Open ``url`` and stream its body into an ``SSEReader``.

    ``timeout`` bounds connecting and receiving the headers (status and headers are available on
    return); ``read_timeout`` bounds each wait for body bytes (None: until close()).
    """
    sent = {"Accept": "text/event-stream", **(headers or {})}
    response = requests.get(url, headers=sent, stream=True, timeout=timeout)
    try:
        return SSEReader(response, read_timeout=read_timeout)
    except BaseException:
        response.close()
        raise

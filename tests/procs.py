"""Processes that tests start and always stop, and the waits and /proc look-ups around them.

``ManagedProcess`` is the base of the programs the tests run (``Program`` here, Pushpin in
tests/pushpin_process.py, gunicorn in tests/gunicorn_process.py). Everything is torn down:

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
import contextlib
import datetime
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from grip_eventstream.pushpin import free_port, free_ports

__all__ = [
    "ManagedProcess",
    "Program",
    "Reaper",
    "child_pids",
    "cmdline",
    "free_port",
    "free_ports",
    "kill_group",
    "kill_pid",
    "log_tail",
    "pid_alive",
    "processes_mentioning",
    "require_executable",
    "wait_for",
    "wait_gone",
]

_LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------------------------
# waiting, and what /proc says


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


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ("" once it is gone or exiting)."""
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
        if pid != me and pid_alive(pid) and any(n in cmdline(pid) for n in needles)
    )


def child_pids(parent: int) -> list[int]:
    """Live direct children of ``parent`` (from /proc, so no psutil needed)."""
    found = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == parent and stat[0] not in ("Z", "X"):
            found.append(pid)
    return sorted(found)


def kill_pid(pid: int) -> None:
    """SIGKILL ``pid``, quiet if it is gone (or no longer ours)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group, quiet if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def require_executable(executable: str, hint: str) -> str:
    """The path of ``executable`` on PATH; ``RuntimeError`` with ``hint`` if it is missing."""
    path = shutil.which(executable)
    if path is None:
        raise RuntimeError(f"{executable} is not installed: {hint}")
    return path


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


class Reaper:
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
        """Kill ``value`` too: a "pid", a "pgid", the pids in a "piddir"'s *.pid files; or
        remove an "rmtree" directory."""
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


# --------------------------------------------------------------------------------------------
# the base of every started program


class ManagedProcess(abc.ABC):
    """One started program with its output appended to ``log_path``, in a session of its own,
    watched by a reaper and by the atexit registry until it is stopped.

    Subclasses start it with ``_spawn`` and ``_wait_ready`` and end ``stop()`` with ``_release``.
    """

    _name: str  # the program, as in error messages

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._reaper: Reaper | None = None

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
    ) -> Reaper:
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
        self._reaper = Reaper()
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

    @staticmethod
    def _terminate(popen: subprocess.Popen[bytes], grace: float) -> None:
        """SIGTERM ``popen`` if it runs, then SIGKILL it if it is not gone after ``grace`` s."""
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

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
# any other program (runserver, manage.py runpushpin)


class Program(ManagedProcess):
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
        # The group is watched (by _spawn): a program's children share it.
        self._spawn(self.command, cwd=self.cwd, title=self._name, env=self.env)

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
        self._terminate(popen, 10)
        kill_group(popen.pid)
        self._release()

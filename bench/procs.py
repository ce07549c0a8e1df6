"""gunicorn and Pushpin for the load benches (bench/storm.py, bench/burst.py), with the knobs
they vary: gunicorn's workers, threads, worker class and listen backlog; Pushpin's log level
and extra configuration lines.

Pushpin's configuration comes from grip_eventstream.pushpin (one implementation); the
program is whichever ``pushpin`` is first on PATH (1.36 from Debian, or 1.41 when the
chroot wrapper written by scripts/pushpin-1.41 comes first). Everything binds 127.0.0.1.
Every process is stopped by its pid: SIGTERM, then SIGKILL of the pid and, for Pushpin, of
each service named by its pid file. Linux only (reads /proc).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from grip_eventstream.pushpin import (
    PushpinConfig,
    executable,
    free_port,
    free_ports,
    not_ready,
    services_for,
    version,
)

# Started instances, stopped at exit if a failure skipped their stop() (weak: never keeps
# one alive by itself).
_STARTED: weakref.WeakSet[Gunicorn | Pushpin] = weakref.WeakSet()
_RUNDIRS: list[Path] = []


@atexit.register
def _stop_started() -> None:
    for instance in list(_STARTED):
        with contextlib.suppress(Exception):
            instance.stop()
    for rundir in _RUNDIRS:
        shutil.rmtree(rundir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def child_pids(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] not in "ZX":
            found.append(int(entry.name))
    return sorted(found)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


class Gunicorn:
    """``python -m gunicorn`` serving ``wsgi_app`` on a free port of 127.0.0.1."""

    def __init__(
        self,
        wsgi_app: str,
        workdir: Path,
        *,
        cwd: Path,
        env: Mapping[str, str],
        workers: int = 2,
        threads: int = 1,
        worker_class: str = "gthread",
        backlog: int | None = None,
        timeout: int = 30,
        access_log: bool = False,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.workdir = Path(workdir)
        self.cwd = Path(cwd)
        self.env = dict(env)
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.backlog = backlog
        self.timeout = timeout
        self.access_log = access_log
        self.port = free_port()
        self.log_path = self.workdir / "gunicorn.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def describe(self) -> str:
        text = f"{self.workers} {self.worker_class} workers"
        if self.worker_class == "gthread":
            text += f" x {self.threads} threads"
        return text + f", backlog {self.backlog or 2048}"

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            self.address,
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--timeout",
            str(self.timeout),
            "--graceful-timeout",
            "2",
            "--no-control-socket",
            "--error-logfile",
            "-",
        ]
        if self.worker_class == "gthread":
            command += ["--threads", str(self.threads)]
        if self.backlog is not None:
            command += ["--backlog", str(self.backlog)]
        if self.access_log:
            command += ["--access-logfile", "-"]
        return [*command, self.wsgi_app]

    def start(self, ready_path: str = "/", timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env={"PYTHONUNBUFFERED": "1", **os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://{self.address}{ready_path}", timeout=1)
                if len(self.worker_pids()) >= self.workers:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"gunicorn not ready; see {self.log_path}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        return child_pids(self.popen.pid) if self.popen is not None else []

    def stop(self) -> None:
        popen, self.popen = self.popen, None
        if popen is None:
            return
        workers = child_pids(popen.pid)
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        for pid in _wait_gone(workers, 5):
            _kill(pid, signal.SIGKILL)


class Pushpin:
    """A private Pushpin in front of ``target``; ``extra`` adds configuration lines by
    section (e.g. ``{"runner": ["client_maxconn=100"]}``); ``loglevel`` is passed to
    ``pushpin --loglevel`` (e.g. "2" or "2,pushpin-proxy:3")."""

    def __init__(
        self,
        target: str,
        workdir: Path,
        *,
        sig_key: str,
        extra: Mapping[str, Sequence[str]] | None = None,
        loglevel: str = "2",
        message_wait_ms: int = 500,
        id_cache_ttl: int = 60,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.program = executable()
        self.version = version(self.program)
        # ipc socket paths must stay under 108 bytes: a short run directory of our own.
        self.rundir = Path(tempfile.mkdtemp(prefix="pp", dir="/tmp"))
        _RUNDIRS.append(self.rundir)  # removed at exit, also when start() is never reached
        self.http_port, self.control_port = free_ports(2)
        self.settings = PushpinConfig(
            target=target,
            rundir=self.rundir,
            http_port=self.http_port,
            control_port=self.control_port,
            sig_key=sig_key,
            message_wait_ms=message_wait_ms,
            id_cache_ttl=id_cache_ttl,
        )
        self.extra = {k: list(v) for k, v in (extra or {}).items()}
        self.loglevel = loglevel
        self.log_path = self.workdir / "pushpin.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.services: list[int] = []

    @property
    def control_url(self) -> str:
        return self.settings.control_url

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def config_text(self) -> str:
        text = self.settings.config(services_for(self.version))
        lines = text.splitlines()
        for section, added in self.extra.items():
            header = f"[{section}]"
            if header not in lines:
                lines += ["", header]
            at = lines.index(header) + 1
            lines[at:at] = added
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "routes").write_text(self.settings.routes())
        config = self.workdir / "pushpin.conf"
        config.write_text(self.config_text())
        for path in self.rundir.glob("*.pid"):
            path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.time():.3f} =====\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [
                    self.program,
                    "--config",
                    str(config),
                    "--merge-output",
                    "--loglevel",
                    self.loglevel,
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED.add(self)
        deadline = time.monotonic() + timeout
        while not_ready(self.settings) is not None:
            if self.popen.poll() is not None:
                raise RuntimeError(f"pushpin exited; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Pushpin was not ready; see {self.log_path}")
            time.sleep(0.05)
        self.services = self._pid_files()

    def _pid_files(self) -> list[int]:
        found = []
        for path in self.rundir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                found.append(int(path.read_text().strip()))
        return found

    def pids(self) -> list[int]:
        """The runner and its services (for CPU accounting)."""
        if self.popen is None:
            return []
        return [self.popen.pid, *[p for p in self.services if pid_alive(p)]]

    def stop(self) -> None:
        popen, self.popen = self.popen, None
        if popen is None:
            return
        services = sorted({*self.services, *self._pid_files()})
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        for pid in _wait_gone(services, 5):
            if self._ours(pid):  # not a reused pid
                _kill(pid, signal.SIGKILL)
        _wait_gone(services, 5)

    def _ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return str(self.rundir) in cmdline or str(self.workdir) in cmdline

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.rundir, ignore_errors=True)

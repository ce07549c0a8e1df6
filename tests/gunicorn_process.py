"""gunicorn serving a WSGI app for end-to-end tests, on a free port, always stopped (see
tests/procs.py). No Django import: the app's settings come through ``env``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import requests

from tests.procs import ManagedProcess, child_pids, free_port, kill_group, wait_for, wait_gone

__all__ = ["Gunicorn"]

_WORKER_TIMEOUT = 30  # seconds: gunicorn's --timeout, after which a silent worker is killed


def _http_answers(url: str, timeout: float = 1.0) -> bool:
    """True if a GET of ``url`` gets any HTTP answer."""
    try:
        with requests.get(url, timeout=timeout) as response:
            _ = response.content  # read it all so the connection is released cleanly
            return True
    except requests.RequestException:
        return False


class Gunicorn(ManagedProcess):
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
    ) -> None:
        self.wsgi_app = wsgi_app
        self.workdir = Path(workdir)
        self.cwd = Path(cwd)
        self.env = dict(env)
        self.workers = workers
        self.threads = threads
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
            sys.executable,
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
            str(_WORKER_TIMEOUT),
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
        return _http_answers(f"{self.url}{ready_path}")

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
        self._terminate(popen, 10)
        # Workers share the master's group (start_new_session made the master its leader).
        kill_group(popen.pid)
        alive = wait_gone(workers, 5)
        self._release()
        if alive:
            raise RuntimeError(f"gunicorn workers {alive} survived SIGKILL")

    def __repr__(self) -> str:
        return f"<Gunicorn {self.url} {self.wsgi_app} pid={self.pid}>"

"""A private Pushpin for end-to-end tests, on free ports, always stopped (see tests/procs.py).

Its configuration is written by grip_eventstream.pushpin (one implementation); the program
is whichever ``pushpin`` is first on PATH (1.36 from Debian, or 1.41 when the chroot wrapper
written by scripts/pushpin-1.41 comes first). No Django import.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import requests

from grip_eventstream.pushpin import (
    SERVICES_1_36,
    PushpinConfig,
    free_ports,
    not_ready,
    services_for,
    version,
)
from tests.procs import (
    ManagedProcess,
    cmdline,
    kill_group,
    kill_pid,
    pid_alive,
    processes_mentioning,
    require_executable,
    wait_gone,
)

__all__ = ["PUSHPIN_SERVICES", "Pushpin"]

# Pushpin's services, by the version on PATH.
PUSHPIN_SERVICES = services_for(version()) if shutil.which("pushpin") else SERVICES_1_36
# AF_UNIX sun_path is 108 bytes with the terminating NUL; Pushpin's longest ipc name in the rundir
# is "pp-condure-out-stream" (21) plus the slash: keep a margin for future names.
_MAX_RUNDIR_LEN = 107 - 40
# The handler's message_wait: how long an out-of-order item waits for the gap before it
# (default 5000 ms: 500 keeps the gap tests fast).
_MESSAGE_WAIT_MS = 500
# The handler's id_cache_ttl: a repeated item id on a channel within it is dropped (0 when
# absent from the config; 60 as in Pushpin's stock file).
_ID_CACHE_TTL = 60
_LOGLEVEL = 2


class Pushpin(ManagedProcess):
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
        extra_routes: Sequence[str] = (),
    ) -> None:
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"target must look like '127.0.0.1:8000', not {target!r}")
        self.target = target
        self.workdir = Path(workdir).resolve()
        self.sig_key = sig_key
        self.sig_iss = sig_iss
        self.extra_routes = tuple(extra_routes)
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
            message_wait_ms=_MESSAGE_WAIT_MS,
            id_cache_ttl=_ID_CACHE_TTL,
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
            if pid_alive(pid) and any(m in cmdline(pid) for m in marks)
        )

    # -- lifecycle

    def start(self, timeout: float = 15) -> Self:
        if self._popen is not None:
            raise RuntimeError("Pushpin is already started: call stop() or restart()")
        executable = require_executable("pushpin", "apt-get install pushpin (Debian/Ubuntu)")
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
                str(_LOGLEVEL),
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
        self._terminate(popen, 5)
        self._finish(popen, services)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the runner and its 4 services at the same time."""
        popen = self._popen
        if popen is None:
            return
        services = self._our_children()
        for pid in [popen.pid, *services]:
            kill_pid(pid)
        popen.wait()
        self._finish(popen, services)

    def _finish(self, popen: subprocess.Popen[bytes], services: Sequence[int]) -> None:
        # After a runner crash (or a kill()) the services keep running: finish them off.
        leftovers = self._our_children()
        for pid in leftovers:
            kill_pid(pid)
        kill_group(popen.pid)
        # Also the services known before the signals: a process that is exiting has an
        # empty /proc cmdline, so _our_children() no longer sees it, yet it is not gone.
        alive = wait_gone(sorted({*leftovers, *services}), 5)
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

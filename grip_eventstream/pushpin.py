"""Running Pushpin for development and tests: a private configuration, start, readiness, stop.

Used by ``manage.py runpushpin`` and by this project's test harness. Not for production:
there, run Pushpin as a service with your own configuration (the documentation's Deploy
and Pushpin versions pages name the settings that matter).

* The configuration is private (its own run directory and ports), so it never touches
  ``/etc/pushpin`` and several instances can run side by side. For 1.36 it includes zurl's
  ipc addresses: Debian's stock configuration without a running zurl makes every request
  hang.
* The services are chosen from ``pushpin --version``: 1.36's (condure, zurl, pushpin-proxy,
  pushpin-handler), 1.38's (no zurl) or 1.40's (connmgr, proxy, handler).
* Ready means that a stream held by Pushpin's built-in test target answers through it and
  the control port answers: Pushpin's own startup message comes before its first proxied
  requests can succeed.
* On Linux the Pushpin runner gets SIGTERM when the process that started it dies, even by
  SIGKILL, and then stops its services.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

SERVICES_1_36 = ("condure", "zurl", "pushpin-proxy", "pushpin-handler")
# 1.38 built condure into Pushpin and makes its outbound requests itself: zurl is no longer
# a service (1.41 fails to start with it listed). 1.40 renamed the services.
SERVICES_1_38 = ("condure", "pushpin-proxy", "pushpin-handler")
SERVICES_1_40 = ("connmgr", "proxy", "handler")
READY_PREFIX = "/__ready/"
_STREAM_OPENED = b"[stream opened]"
_PR_SET_PDEATHSIG = 1


class PushpinNotInstalled(RuntimeError):
    pass


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1.

    The sockets stay open until all ports are picked so the kernel cannot hand out one port
    twice; another process may still take one before it is bound (an accepted race).
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def executable() -> str:
    found = shutil.which("pushpin")
    if found is None:
        raise PushpinNotInstalled(
            "the pushpin program is not installed: on Debian/Ubuntu run "
            "'sudo apt-get install pushpin' (see https://pushpin.org/docs/install/)"
        )
    return found


def version(program: str | None = None) -> tuple[int, ...]:
    """Pushpin's version, from ``pushpin --version`` (e.g. "pushpin 1.36.0")."""
    output = subprocess.run(
        [program or executable(), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", output)
    if match is None:
        raise RuntimeError(f"cannot read a version in `pushpin --version`: {output!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


def services_for(pushpin_version: Sequence[int]) -> tuple[str, ...]:
    """The ``[runner] services`` of this Pushpin version (each version's example config)."""
    if tuple(pushpin_version) >= (1, 40):
        return SERVICES_1_40
    if tuple(pushpin_version) >= (1, 38):
        return SERVICES_1_38
    return SERVICES_1_36


@dataclass
class PushpinConfig:
    """A private Pushpin in front of ``target`` ("host:port")."""

    target: str
    rundir: Path
    http_port: int = 7999
    control_port: int = 5561
    sig_key: str | None = None
    sig_iss: str = "pushpin"
    # Pushpin's internal ZeroMQ sockets: tcp ports on 127.0.0.1, or (None) ipc sockets in
    # the run directory, which no other program can be using.
    push_in_port: int | None = None
    push_in_sub_port: int | None = None
    command_port: int | None = None
    message_wait_ms: int | None = None
    id_cache_ttl: int | None = None
    extra_routes: Sequence[str] = field(default_factory=tuple)

    def routes(self) -> str:
        routes = [f"*,path_beg={READY_PREFIX} test,path_rem={len(READY_PREFIX) - 1}"]
        routes += self.extra_routes
        routes.append(f"* {self.target}")
        return "\n".join(routes) + "\n"

    def config(self, services: Sequence[str], routes_file: str = "routes") -> str:
        proxy = [f"routesfile={routes_file}", f"sig_iss={self.sig_iss}", "updates_check=off"]
        if self.sig_key is not None:
            proxy.append(f"sig_key={self.sig_key}")
        if "zurl" in services:
            proxy += [
                "zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in",
                "zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream",
                "zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out",
            ]

        def spec(port: int | None, name: str) -> str:
            return f"tcp://127.0.0.1:{port}" if port else f"ipc://{{rundir}}/{{ipc_prefix}}{name}"

        handler = [
            f"push_in_spec={spec(self.push_in_port, 'push-in')}",
            f"push_in_sub_specs={spec(self.push_in_sub_port, 'push-in-sub')}",
            "push_in_http_addr=127.0.0.1",
            f"push_in_http_port={self.control_port}",
            f"command_spec={spec(self.command_port, 'command')}",
            "stats_spec=ipc://{rundir}/{ipc_prefix}stats",
        ]
        if self.message_wait_ms is not None:
            handler.append(f"message_wait={self.message_wait_ms}")
        if self.id_cache_ttl is not None:
            handler.append(f"id_cache_ttl={self.id_cache_ttl}")
        return "\n".join(
            [
                "[global]",
                "include={libdir}/internal.conf",
                f"rundir={self.rundir}",
                "ipc_prefix=pp-",
                "",
                "[runner]",
                f"services={','.join(services)}",
                f"http_port=127.0.0.1:{self.http_port}",
                "logdir=",
                "",
                "[proxy]",
                *proxy,
                "",
                "[handler]",
                *handler,
                "",
            ]
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"


def wait_proxied(url: str, timeout: float = 20, want_status: int | None = None) -> None:
    """Wait until a request through Pushpin reaches the app (with ``want_status``, if given).

    Pushpin's readiness probe (:func:`not_ready`) uses its built-in test handler, which does
    not exercise zurl, the part that forwards requests to the app; a first proxied stream
    opened too early was seen to hang past a 10 s timeout under load. Short attempts,
    retried, until one gets an HTTP answer.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with requests.get(url, timeout=2, stream=True) as response:  # headers are enough
                if want_status is None or response.status_code == want_status:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} answered {response.status_code}")
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def not_ready(config: PushpinConfig) -> str | None:
    """Why Pushpin is not ready yet, or None when it is (see the module docstring)."""
    probe = f"{config.url}{READY_PREFIX}stream"
    try:
        # A stream, not a plain request: holds fail ("500 Accept service unavailable") for a
        # moment after plain requests already pass; one that never sends its first bytes is
        # given up on quickly and probed again.
        with requests.get(probe, stream=True, timeout=(1, 0.3)) as response:
            if response.status_code != 200:
                return f"GET {probe} answered {response.status_code}"
            first = response.raw.read(len(_STREAM_OPENED))
            if first != _STREAM_OPENED:
                return f"GET {probe} sent {first!r}, not {_STREAM_OPENED!r}"
        # The handler does not log a failed bind of its control port: a port taken by another
        # program shows up only here.
        control = requests.get(f"{config.control_url}/", timeout=1)
    except (requests.RequestException, OSError) as exc:
        return f"{probe} or the control port failed: {exc}"
    if "Pushpin API" not in control.text:
        return (
            f"the control API {config.control_url}/ does not answer 'Pushpin API' "
            "(is its port taken by another program?)"
        )
    return None


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PushpinProcess:
    """Pushpin started with a :class:`PushpinConfig`, for as long as this object runs it."""

    def __init__(self, config: PushpinConfig, workdir: Path, log: Path | None = None) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> None:
        program = executable()
        services = services_for(version(program))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.rundir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "routes").write_text(self.config.routes())
        config_path = self.workdir / "pushpin.conf"
        config_path.write_text(self.config.config(services))
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.popen = subprocess.Popen(
                [program, "--config", str(config_path), "--merge-output"],
                cwd=self.workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        finally:
            if self.log:
                output.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        reason = not_ready(self.config)
        while reason is not None:
            if self.popen.poll() is not None:
                raise RuntimeError(f"pushpin exited with status {self.popen.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Pushpin was not ready within {timeout} s: {reason}")
            time.sleep(0.1)
            reason = not_ready(self.config)

    def stop(self, grace: float = 5) -> None:
        """SIGTERM (Pushpin's runner then stops its services), SIGKILL after ``grace``."""
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()

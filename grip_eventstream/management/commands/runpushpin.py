from __future__ import annotations

import base64
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grip_eventstream.conf import conf
from grip_eventstream.proxies import (
    DEFAULT_SIG_ISSUER,
    ProxyConfigError,
    is_public_key,
    parse_proxies,
)
from grip_eventstream.pushpin import (
    PushpinConfig,
    PushpinNotInstalled,
    PushpinProcess,
    executable,
)

DEFAULT_CONTROL_PORT = 5561
# Where PushpinConfig's control port listens (127.0.0.1 only: ::1 or 127.0.0.2 are other
# addresses), and the name that resolves to it.
_CONTROL_HOSTS = {"127.0.0.1", "localhost"}


@dataclass(frozen=True)
class ControlPlan:
    """Pushpin's control port and Grip-Sig signing, as the app's settings expect them."""

    port: int
    sig_key: str | None = None
    sig_iss: str = DEFAULT_SIG_ISSUER
    # Where the port came from, for the "Control port:" line.
    source: str = ""
    # Things that will not stop Pushpin from starting but will likely surprise the user.
    notes: list[str] = field(default_factory=list)


def control_plan(control_port: int | None) -> ControlPlan:
    """The control port and signing of a development Pushpin for the current settings.

    The app publishes to GRIP_URL (or GRIP_PROXIES' first entry) and verifies Grip-Sig with
    its key and issuer, so Pushpin must listen and sign exactly there: a port or key that
    differs gives a Pushpin that starts fine and then never shows an event.
    """
    name = "GRIP_PROXIES[0]" if conf.GRIP_PROXIES else "GRIP_URL"
    try:
        proxies = parse_proxies(conf.GRIP_URL, conf.GRIP_PROXIES)
    # A GRIP_URL that is not a string fails inside urllib with one of these.
    except (ProxyConfigError, TypeError, AttributeError, ValueError) as exc:
        raise CommandError(
            f"GRIP_URL / GRIP_PROXIES cannot be read ({exc}): run `manage.py check` and fix "
            "what it reports."
        ) from None
    if not proxies:
        chosen = DEFAULT_CONTROL_PORT if control_port is None else control_port
        return ControlPlan(
            port=chosen,
            source="GRIP_URL is not set",
            notes=[
                "Neither GRIP_URL nor GRIP_PROXIES is set, so send_event publishes nowhere: "
                f'set GRIP_URL = "http://127.0.0.1:{chosen}?key=<a random key of 32+ bytes>" '
                "and run this command again (Pushpin then signs with that key)."
            ],
        )
    proxy = proxies[0]
    notes: list[str] = []
    if len(proxies) > 1:
        notes.append(
            f"GRIP_PROXIES lists {len(proxies)} proxies; this Pushpin is the first "
            f"({proxy.control_uri}). Publishes to the others fail unless they run too."
        )
    parts = urlsplit(proxy.control_uri)
    example = f'GRIP_URL = "http://127.0.0.1:{DEFAULT_CONTROL_PORT}?key=..."'
    try:
        port = parts.port
    except ValueError:  # not a number, or over 65535
        raise CommandError(
            f"{name} {proxy.control_uri!r} has no valid port: give Pushpin's control port, "
            f"e.g. {example}."
        ) from None
    if port is None:
        raise CommandError(
            f"{name} {proxy.control_uri!r} names no control port (publishes would go to "
            f"{parts.scheme}'s default port): write it out, e.g. {example}."
        )
    if control_port is not None and control_port != port:
        raise CommandError(
            f"--control-port {control_port} disagrees with {name} ({proxy.control_uri}), "
            f"where send_event publishes: port {port}. Leave --control-port out (it defaults "
            f"to {name}'s port), or change the port in {name} to {control_port}."
        )
    if parts.scheme != "http":
        raise CommandError(
            f"{name} {proxy.control_uri!r} uses {parts.scheme}://, but Pushpin's control "
            f'port speaks plain HTTP: use "http://127.0.0.1:{port}" for development.'
        )
    if (parts.hostname or "").lower() not in _CONTROL_HOSTS:
        notes.append(
            f"{name} names host {parts.hostname!r}, but this Pushpin's control port listens "
            f"on 127.0.0.1 only: unless that name resolves to 127.0.0.1, send_event's "
            f"publishes miss it. For development use http://127.0.0.1:{port}."
        )
    key = proxy.signature_key
    if key is None:
        return ControlPlan(port=port, source=name, notes=notes)
    if is_public_key(key):
        raise CommandError(
            f"{name} verifies Grip-Sig with a public key (verify-key, as for Fastly Fanout), "
            "but a development Pushpin signs with a shared HS256 key. For development set "
            f'GRIP_URL = "http://127.0.0.1:{port}?key=<a random key of 32+ bytes>".'
        )
    # What the app checks Grip-Sig's "iss" against: verify-iss, else Pushpin's default.
    # GRIP_URL's plain iss= names the issuer of publish tokens, which Pushpin never checks.
    issuer = proxy.signature_issuer
    if not issuer.isprintable() or issuer != issuer.strip():
        raise CommandError(
            f"{name}'s verify-iss {issuer!r} has control characters or spaces at its ends, which "
            "Pushpin's configuration file cannot hold: use a plain name."
        )
    return ControlPlan(
        port=port, sig_key=_pushpin_key(key), sig_iss=issuer, source=name, notes=notes
    )


def _pushpin_key(key: str | bytes) -> str:
    """``key`` as Pushpin's sig_key line reads it (see its stock pushpin.conf)."""
    if isinstance(key, str) and _plain(key):
        return key
    # Binary keys (GRIP_URL's key=base64:...), and text Pushpin would misread: padding
    # spaces are trimmed, "file:" and "base64:" are prefixes, a newline ends the line.
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return "base64:" + base64.b64encode(raw).decode("ascii")


def _plain(key: str) -> bool:
    return key.isprintable() and key == key.strip() and not key.startswith(("base64:", "file:"))


class Command(BaseCommand):
    help = (
        "Run Pushpin for development, in front of the development server (runserver), with "
        "a private configuration; stop it with Ctrl-C. Open the URL it prints, not "
        "runserver's: streams only work through Pushpin. Its control port, signing key and "
        "issuer come from GRIP_URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--target", default="127.0.0.1:8000", help="the app server (default: runserver's)"
        )
        parser.add_argument("--port", type=int, default=7999, help="Pushpin's HTTP port")
        parser.add_argument(
            "--control-port",
            type=int,
            default=None,
            help=f"Pushpin's control port (default: GRIP_URL's port, {DEFAULT_CONTROL_PORT} "
            "without GRIP_URL); must agree with GRIP_URL",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Settings first: a mismatch is reported even where Pushpin is not installed yet.
        plan = control_plan(options["control_port"])
        if plan.port == options["port"]:
            raise CommandError(
                f"Pushpin's HTTP port (--port) and its control port ({plan.source}) are both "
                f"{plan.port}: give --port another one, e.g. --port 7999."
            )
        try:
            executable()
        except PushpinNotInstalled as exc:
            raise CommandError(str(exc)) from None
        for note in plan.notes:
            self.stderr.write(f"Note: {note}")
        workdir = Path(tempfile.mkdtemp(prefix="runpushpin-"))
        config = PushpinConfig(
            target=options["target"],
            rundir=workdir / "run",
            http_port=options["port"],
            control_port=plan.port,
            sig_key=plan.sig_key,
            sig_iss=plan.sig_iss,
        )
        process = PushpinProcess(config, workdir, log=workdir / "pushpin.log")
        signing = (
            f"Grip-Sig is signed with {plan.source}'s key, issuer {plan.sig_iss!r}."
            if plan.sig_key is not None
            else "Grip-Sig is not signed with a key the app knows (GRIP_URL has no key)."
        )
        stop = threading.Event()
        # Installed before the start, which can take seconds: a SIGTERM then still stops
        # Pushpin and removes the directory.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        failed_start = False
        try:
            try:
                process.start()
            except (TimeoutError, RuntimeError) as exc:
                failed_start = True
                raise CommandError(f"{exc} (log: {workdir / 'pushpin.log'})") from None
            # scripts/demo finds the log on the line with " Log: ".
            self.stdout.write(
                f"Pushpin is running in front of {config.target}.\n"
                f"Open {config.url}/ (not the app server's own port).\n"
                f"Control port: {config.control_url} ({plan.source}). "
                f"Log: {workdir / 'pushpin.log'}\n"
                f"{signing}\n"
                "Quit with CONTROL-C."
            )
            self.stdout.flush()
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            process.stop()
            # Under call_command the process goes on: SIGTERM must not keep our handler.
            signal.signal(signal.SIGTERM, previous)
            # The log goes too, unless the error message points at it: it was printed where
            # to find it while Pushpin ran, and every run would otherwise leave a directory.
            if not failed_start:
                shutil.rmtree(workdir, ignore_errors=True)
                self.stdout.write("Pushpin stopped.")

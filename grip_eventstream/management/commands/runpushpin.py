from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grip_eventstream.pushpin import (
    PushpinConfig,
    PushpinNotInstalled,
    PushpinProcess,
    executable,
)
from grip_eventstream.registry import get_proxies


class Command(BaseCommand):
    help = (
        "Run Pushpin for development, in front of the development server (runserver), with "
        "a private configuration; stop it with Ctrl-C. Open the URL it prints, not "
        "runserver's: streams only work through Pushpin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--target", default="127.0.0.1:8000", help="the app server (default: runserver's)"
        )
        parser.add_argument("--port", type=int, default=7999, help="Pushpin's HTTP port")
        parser.add_argument(
            "--control-port", type=int, default=5561, help="Pushpin's control port (GRIP_URL)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            executable()
        except PushpinNotInstalled as exc:
            raise CommandError(str(exc)) from None
        proxies = get_proxies()
        # Pushpin signs with sig_key; the app verifies with GRIP_URL's key: the same one.
        sig_key = proxies[0].key if proxies and isinstance(proxies[0].key, str) else None
        workdir = Path(tempfile.mkdtemp(prefix="runpushpin-"))
        config = PushpinConfig(
            target=options["target"],
            rundir=workdir / "run",
            http_port=options["port"],
            control_port=options["control_port"],
            sig_key=sig_key,
        )
        process = PushpinProcess(config, workdir, log=workdir / "pushpin.log")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            process.start()
        except (TimeoutError, RuntimeError) as exc:
            raise CommandError(f"{exc} (log: {workdir / 'pushpin.log'})") from None
        self.stdout.write(
            f"Pushpin is running in front of {config.target}.\n"
            f"Open {config.url}/ (not the app server's own port).\n"
            f"Control port: {config.control_url} (GRIP_URL). Log: {workdir / 'pushpin.log'}\n"
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
            # Its log goes too: it was printed where to find it while Pushpin ran, and
            # every run would otherwise leave a directory behind.
            shutil.rmtree(workdir, ignore_errors=True)
            self.stdout.write("Pushpin stopped.")

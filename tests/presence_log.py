"""Records the presence signals as JSON lines, for the end-to-end presence tests.

tests/wsgi.py connects it in gunicorn's workers when ``GES_PRESENCE_LOG`` names a file
(tests/test_e2e_presence.py passes it); the tests connect it in their own process too,
since a read there may sweep expired streams and send their leaves. One line per signal:
``{"signal", "channel", "user_pk", "streams", "users", "expired", "pid", "at"}`` (``at``:
``time.time()``, comparable across processes; ``expired`` only on leaves). Each line is
one ``write`` to a file opened for appending, so lines from concurrent writers never mix.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grip_eventstream.signals import presence_joined, presence_left

ENV = "GES_PRESENCE_LOG"


def _receiver(path: Path, name: str) -> Callable[..., None]:
    def receive(sender: Any, **kwargs: Any) -> None:
        record = {
            "signal": name,
            "channel": kwargs["channel"],
            "user_pk": kwargs["user_pk"],
            "streams": kwargs["streams"],
            "users": kwargs["users"],
            "pid": os.getpid(),
            "at": time.time(),
        }
        if "expired" in kwargs:
            record["expired"] = kwargs["expired"]
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    return receive


def connect(path: str | Path) -> Callable[[], None]:
    """Record both signals in ``path``; returns a function that disconnects them."""
    path = Path(path)
    joined = _receiver(path, "joined")
    left = _receiver(path, "left")
    presence_joined.connect(joined, weak=False)
    presence_left.connect(left, weak=False)

    def disconnect() -> None:
        presence_joined.disconnect(joined)
        presence_left.disconnect(left)

    return disconnect


def read(path: str | Path, channel: str | None = None) -> list[dict[str, Any]]:
    """The records in ``path`` (of ``channel`` only, when given), in the order written."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if channel is None or r["channel"] == channel]

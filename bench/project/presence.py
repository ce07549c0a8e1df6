"""Presence for bench/presence.py: channels named "presence-..." are presence channels.

Used only through bench/project/presence_settings.py, so bench/run.py (bench.project.settings)
measures what it measured before. With GES_BENCH_PRESENCE_LOG set to a file, every
presence_joined and presence_left signal of the process appends one JSON line to it (one
os.write on an O_APPEND descriptor: whole lines, whatever the number of workers), from which
bench/presence.py tells a missing or doubled leave.
"""

from __future__ import annotations

import json
import os

from grip_eventstream.channelmanager import DefaultChannelManager
from grip_eventstream.signals import presence_joined, presence_left

PREFIX = "presence-"


class ChannelManager(DefaultChannelManager):
    def is_presence_channel(self, channel: str) -> bool:
        return channel.startswith(PREFIX)


def _logger(action: str, path: str):
    def receiver(sender, channel, user_pk, streams, users, expired=False, **kwargs) -> None:
        line = {
            "action": action,
            "channel": channel,
            "user": user_pk,
            "streams": streams,
            "users": users,
            "expired": expired,
            "pid": os.getpid(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)

    return receiver


_LOG = os.environ.get("GES_BENCH_PRESENCE_LOG")
if _LOG:
    # Connected when the channel manager is first loaded, which every join or leave does
    # before it sends its signal.
    presence_joined.connect(_logger("join", _LOG), weak=False, dispatch_uid="bench-join")
    presence_left.connect(_logger("leave", _LOG), weak=False, dispatch_uid="bench-leave")

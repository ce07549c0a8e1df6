"""bench.project.settings with presence channels ("presence-..."): for bench/presence.py."""

from bench.project.settings import *  # noqa: F403

EVENTSTREAM_CHANNELMANAGER_CLASS = "bench.project.presence.ChannelManager"

"""Server-Sent Events for Django, held open by Pushpin / Fastly Fanout (GRIP).

Importing the package loads nothing heavy and needs no settings; the public functions are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "PublishError",
    "channel_permission_changed",
    "get_current_event_id",
    "get_presence",
    "get_presence_stats",
    "send_event",
    "send_events",
]

if TYPE_CHECKING:
    from .eventstream import (
        channel_permission_changed,
        get_current_event_id,
        send_event,
        send_events,
    )
    from .exceptions import PublishError
    from .presence import get_presence, get_presence_stats


def __getattr__(name: str) -> Any:
    if name in ("send_event", "send_events", "get_current_event_id", "channel_permission_changed"):
        from . import eventstream

        return getattr(eventstream, name)
    if name in ("urls", "channelmanager"):
        # django-eventstream's README writes include(django_eventstream.urls) after a plain
        # "import django_eventstream"; loaded here on first use, not at import.
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in ("get_presence", "get_presence_stats"):
        # Named get_*: the module grip_eventstream.presence, once imported, is the package's
        # attribute "presence" (the import system sets it), so no function may be.
        from . import presence

        return getattr(presence, name)
    if name == "PublishError":
        from .exceptions import PublishError

        return PublishError
    raise AttributeError(f"module 'grip_eventstream' has no attribute {name!r}")

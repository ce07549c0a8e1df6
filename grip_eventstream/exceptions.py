"""Exceptions raised by grip_eventstream. Importing this module needs no settings."""

from __future__ import annotations

from collections.abc import Sequence


class PublishError(Exception):
    """Publishing an event to one or more GRIP proxies failed.

    ``failures`` lists ``(proxy_uri, reason)`` for every proxy that did not accept the
    item; proxies not listed did accept it. With storage enabled the event is already
    stored, and subscribers get it through Pushpin's gap repair or their next reconnect.
    """

    def __init__(self, failures: Sequence[tuple[str, str]], *, channel: str = "") -> None:
        self.failures = list(failures)
        self.channel = channel
        where = "; ".join(f"{uri}: {reason}" for uri, reason in self.failures)
        on = f" on channel {channel!r}" if channel else ""
        super().__init__(
            f"failed to publish{on} to {len(self.failures)} GRIP prox"
            f"{'y' if len(self.failures) == 1 else 'ies'}: {where}. Check that Pushpin is "
            "running and that GRIP_URL / GRIP_PROXIES point at its control port (5561 by default)."
        )


class InvalidChannel(ValueError):
    """A channel name that cannot be used (empty, too long, or with control characters)."""

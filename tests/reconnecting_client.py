"""A client that behaves like a browser's EventSource, for the fault tests.

It reconnects whenever the stream ends or the connection fails, sending the last event id
it has seen as Last-Event-ID, and stops for good on a non-200 answer, as EventSource does;
with ``retry_server_errors`` it retries 5xx answers too, as the library's GripEventSource
(static/grip_eventstream/eventsource.js) does, e.g. Pushpin's 500 while it starts.

Each connection is a :class:`grip_eventstream.sseclient.EventStream`, which parses the stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import requests

from grip_eventstream.sseclient import Event, EventStream, StreamEnded

__all__ = ["ReconnectingClient"]

_RETRY = 0.2  # seconds between a connection's end and the next attempt
_POLL = 0.05  # seconds between looks at the stop flag while a stream is quiet


class ReconnectingClient:
    def __init__(self, url: str, *, retry_server_errors: bool = False) -> None:
        self.url = url
        self.retry_server_errors = retry_server_errors
        self.events: list[Event] = []  # from every connection, in order
        self.connections = 0  # streams opened with a 200
        self.failed_status: int | None = None  # the answer it gave up on
        self.last_event_id = ""
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse-client", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # A new EventStream (and parser) per connection: a partial event at the end of
                # a broken stream is discarded, the last event id carries over (as in
                # EventSource).
                stream = EventStream(self.url, last_event_id=self.last_event_id, timeout=5)
            except requests.RequestException:
                time.sleep(_RETRY)
                continue
            with stream:
                if stream.status != 200:
                    if self.retry_server_errors and stream.status >= 500:
                        time.sleep(_RETRY)
                        continue
                    self.failed_status = stream.status
                    return
                with self._cond:
                    # Pushpin's subscription is live once the response headers are out.
                    self.connections += 1
                    self._cond.notify_all()
                self._follow(stream)
            time.sleep(_RETRY)

    def _follow(self, stream: EventStream) -> None:
        """Take ``stream``'s events as they arrive, until it ends or the client is closed."""
        ended = False
        while not ended and not self._stop.is_set():
            new: list[Event] = []
            try:
                new = stream.wait(1, timeout=_POLL)
            except TimeoutError:
                pass
            except StreamEnded:  # raised once every event it brought has been taken
                ended = True
            with self._cond:
                self.events += new
                # Also the id of an id-only block, which dispatches no event.
                self.last_event_id = stream.last_event_id
                self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[Event]], bool], timeout: float = 20, what: str = "events"
    ) -> list[Event]:
        """Wait until ``predicate(events)`` holds; return the events received."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no {what} within {timeout} s; got {len(self.events)} events: "
                        f"{[(e.type, e.data[:40]) for e in self.events[-5:]]} (last 5); "
                        f"{self.connections} connections, last event id "
                        f"{self.last_event_id!r}"
                        + (
                            ""
                            if self.failed_status is None
                            else f", gave up on a {self.failed_status} answer"
                        )
                    )
                self._cond.wait(left)
            return list(self.events)

    def wait_connected(self, count: int = 1, timeout: float = 20) -> None:
        self.wait_for(lambda _: self.connections >= count, timeout, f"connection #{count}")

    def data_events(self, type: str = "message") -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.type == type]

    def wait_count(self, count: int, timeout: float = 20, type: str = "message") -> list[Event]:
        self.wait_for(
            lambda evs: sum(e.type == type for e in evs) >= count, timeout, f"{count} {type} events"
        )
        return self.data_events(type)

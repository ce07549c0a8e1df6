"""A client that behaves like a browser's EventSource, for the fault tests.

It reconnects whenever the stream ends or the connection fails, sending the last event id
it has seen as Last-Event-ID, and stops for good on a non-200 answer, as EventSource does;
with ``retry_server_errors`` it retries 5xx answers too, as the library's GripEventSource
(static/grip_eventstream/eventsource.js) does, e.g. Pushpin's 500 while it starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import requests

from grip_eventstream.sseclient import Event, SSEParser
from tests.procs import read_sse, wait_on


class ReconnectingClient:
    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry: float = 0.2,
        retry_server_errors: bool = False,
    ) -> None:
        self.retry_server_errors = retry_server_errors
        self.url = url
        self.headers = dict(headers or {})
        self.retry = retry
        self.events: list[Event] = []
        self.connections = 0
        self.failed_status: int | None = None
        self.last_event_id = ""
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse-client", daemon=True)

    def __enter__(self) -> ReconnectingClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            headers = dict(self.headers)
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            try:
                reader = read_sse(self.url, headers=headers, timeout=5)
            except requests.RequestException:
                time.sleep(self.retry)
                continue
            with reader:
                if reader.status != 200:
                    if self.retry_server_errors and reader.status >= 500:
                        time.sleep(self.retry)
                        continue
                    self.failed_status = reader.status
                    return
                with self._cond:
                    # Pushpin's subscription is live once the response headers are out.
                    self.connections += 1
                    self._cond.notify_all()
                # A fresh parser per connection: a partial event at the end of a broken
                # stream is discarded, the last event id carries over (as in EventSource).
                parser = SSEParser(last_event_id=self.last_event_id)
                seen = 0
                while not self._stop.is_set():
                    raw = reader.raw()
                    if len(raw) > seen:
                        new = parser.feed(raw[seen:])
                        seen = len(raw)
                        with self._cond:
                            self.events.extend(new)
                            self.last_event_id = parser.last_event_id
                            self._cond.notify_all()
                    elif reader.ended:
                        break
                    else:
                        time.sleep(0.01)
            time.sleep(self.retry)

    def wait_for(self, predicate, timeout: float = 20, what: str = "events") -> list[Event]:
        with self._cond:
            wait_on(
                self._cond,
                lambda: predicate(self.events),
                timeout,
                lambda: (
                    f"no {what} within {timeout} s; got {len(self.events)} events: "
                    f"{[(e.type, e.data[:40]) for e in self.events[-5:]]} (last 5)"
                ),
            )
            return list(self.events)

    def wait_connected(self, count: int = 1, timeout: float = 20) -> None:
        self.wait_for(lambda evs: self.connections >= count, timeout, f"connection #{count}")

    def data_events(self, type: str = "message") -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.type == type]

    def wait_count(self, count: int, timeout: float = 20, type: str = "message") -> list[Event]:
        self.wait_for(
            lambda evs: sum(e.type == type for e in evs) >= count, timeout, f"{count} {type} events"
        )
        return self.data_events(type)

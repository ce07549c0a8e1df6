"""Publishing items to every configured GRIP proxy (Pushpin's control port, Fanout).

The HTTP call is written here, on urllib3 (``requests`` where an environment proxy
applies), rather than through pubcontrol's ``PubControlClient``: its public ``publish``
sends one item per request with no timeout (a proxy that accepts the connection and never
answers blocks the caller forever), and its batching and error reporting live in private
methods. What this module needs of the GRIP
libraries is public: gripcontrol's ``parse_grip_uri`` (in :mod:`.proxies`) and the item
format of Pushpin's publish API (in :mod:`.grip`).

* Every request is bounded by ``EVENTSTREAM_PUBLISH_TIMEOUT``, with no retry that would
  double that bound.
* All the items of one call go in as few POSTs as Pushpin's body limit allows.
* Every proxy is tried, concurrently when there are several, so that a mute proxy does not
  add its timeout to the others; failures are raised together as one
  :class:`~grip_eventstream.exceptions.PublishError` naming each failed proxy.
* Safe across ``fork`` (gunicorn workers, Celery prefork): a child never reuses the
  parent's pooled connections or threads.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
import urllib3
from django.core.exceptions import ImproperlyConfigured

from .exceptions import PublishError
from .proxies import ProxyConfig, control_auth_header

logger = logging.getLogger("grip_eventstream")

# Pushpin 1.36's control port refuses bodies of 1 MB ("Request body too large"); stay
# well below it and split larger batches into several POSTs.
MAX_PUBLISH_BODY = 512 * 1024
# Control tokens are valid for an hour: sign a new one well before.
_AUTH_REFRESH = 600

NO_PROXY_MESSAGE = (
    "No GRIP proxy is configured, so there is nowhere to publish events: set GRIP_URL "
    "(e.g. GRIP_URL = 'http://127.0.0.1:5561?key=SIG_KEY', Pushpin's control port) or "
    "GRIP_PROXIES in the settings. In tests, the eventstream_outbox fixture of "
    "grip_eventstream.testing records what is sent without any proxy."
)


class _Proxy:
    """One proxy's HTTP connections and cached Authorization header."""

    def __init__(self, config: ProxyConfig, timeout: float) -> None:
        self.config = config
        self.uri = config.control_uri
        self.url = config.publish_url
        self.timeout = timeout
        self.session = requests.Session()
        self.pool, self.path = _direct_pool(self.url)
        self._auth: str | None = None
        self._auth_at = float("-inf")

    def auth_header(self) -> str | None:
        now = time.time()
        if now - self._auth_at > _AUTH_REFRESH:
            self._auth, self._auth_at = control_auth_header(self.config, now), now
        return self._auth

    def post(self, bodies: Sequence[bytes]) -> str | None:
        """POST every body in order; the reason of the first failure, or None."""
        headers = {"Content-Type": "application/json"}
        auth = self.auth_header()
        if auth is not None:
            headers["Authorization"] = auth
        if self.pool is not None:
            return self._post_direct(self.pool, bodies, headers)
        for body in bodies:
            try:
                response = self.session.post(
                    self.url, data=body, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                return _short_reason(exc)
            with response:
                if not 200 <= response.status_code < 300:
                    return f"HTTP {response.status_code}: {response.text.strip()}"[:300]
        return None

    def _post_direct(
        self, pool: urllib3.HTTPConnectionPool, bodies: Sequence[bytes], headers: dict[str, str]
    ) -> str | None:
        timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        for body in bodies:
            try:
                response = pool.urlopen(
                    "POST",
                    self.path,
                    body=body,
                    headers=headers,
                    timeout=timeout,
                    retries=False,
                    redirect=False,
                )
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                return _short_reason(exc)
            if not 200 <= response.status < 300:
                text = response.data.decode("utf-8", "replace")
                return f"HTTP {response.status}: {text.strip()}"[:300]
        return None

    def close(self) -> None:
        self.session.close()
        if self.pool is not None:
            self.pool.close()


def _direct_pool(url: str) -> tuple[urllib3.HTTPConnectionPool | None, str]:
    """A connection pool to ``url``'s host and the path to POST to, or (None, "") when a
    proxy of the environment (HTTP_PROXY, HTTPS_PROXY) applies, which requests handles.

    urllib3 directly rather than through requests, which is built on it: requests' own
    layers (merging the environment's settings, hooks, cookies, adapters) cost three times
    the POST itself on a local Pushpin (profiled: 550 of 830 µs), on every send_event
    and in the background publisher's thread, where they hold the GIL the sender needs.
    What requests reads from the environment is read here once per process: the proxies,
    and the CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's, as requests).
    """
    try:
        if requests.utils.get_environ_proxies(url):
            return None, ""
        parsed = urllib3.util.parse_url(url)
    except ValueError:  # a malformed URI: requests reports it on each publish
        return None, ""
    ca = (
        os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or requests.utils.DEFAULT_CA_BUNDLE_PATH
    )
    tls: dict[str, Any] = {}
    if parsed.scheme == "https":
        tls = {"cert_reqs": "CERT_REQUIRED"}
        tls["ca_cert_dir" if os.path.isdir(ca) else "ca_certs"] = ca
    try:
        # Ten connections, as requests keeps: threads of one worker may publish at once.
        pool = urllib3.connection_from_url(url, maxsize=10, retries=False, **tls)
    except (urllib3.exceptions.HTTPError, ValueError):
        return None, ""
    return pool, parsed.request_uri


def check_proxy(proxy: ProxyConfig, timeout: float = 3.0) -> str | None:
    """Whether a proxy's control port accepts a publish: None, or why not.

    Publishes an empty list of items, which Pushpin accepts and delivers to no one.
    """
    target = _Proxy(proxy, timeout)
    try:
        return target.post([b'{"items":[]}'])
    finally:
        target.close()


class Publisher:
    """Publishes lists of Pushpin items to every configured proxy, synchronously."""

    def __init__(self, proxies: Sequence[ProxyConfig], timeout: float) -> None:
        self.proxies = list(proxies)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pid = -1
        self._targets: list[_Proxy] = []
        self._pool: ThreadPoolExecutor | None = None

    def _current(self) -> tuple[list[_Proxy], ThreadPoolExecutor | None]:
        # Built on first use in each process: after fork, the parent's pooled sockets and
        # threads must not be used (two processes writing to one socket mix their requests).
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._targets = [_Proxy(proxy, self.timeout) for proxy in self.proxies]
                self._pool = (
                    ThreadPoolExecutor(len(self.proxies), thread_name_prefix="grip-publish")
                    if len(self.proxies) > 1
                    else None
                )
            return self._targets, self._pool

    def check_configured(self) -> None:
        """Raise ImproperlyConfigured when there is no proxy to publish to."""
        # Not a PublishError: EVENTSTREAM_PUBLISH_ERRORS = "log" is for proxies that are
        # down for a while, and would hide a project that can never publish.
        if not self.proxies:
            raise ImproperlyConfigured(NO_PROXY_MESSAGE)

    def publish(self, items: Sequence[dict[str, object]], *, channel: str = "") -> None:
        """Send ``items`` to every proxy; raise PublishError naming each one that failed.

        Raises ImproperlyConfigured when no proxy is configured.
        """
        self.check_configured()
        if not items:
            return
        bodies = list(_bodies(items))
        targets, pool = self._current()
        if pool is None:
            reasons = [targets[0].post(bodies)]
        else:
            reasons = list(pool.map(lambda target: target.post(bodies), targets))
        failures = [
            (target.uri, reason)
            for target, reason in zip(targets, reasons, strict=True)
            if reason is not None
        ]
        if failures:
            raise PublishError(failures, channel=channel)

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for target in self._targets:
                    target.close()
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
            self._pid, self._targets, self._pool = -1, [], None


class BackgroundPublisher:
    """Publishes from a background thread, for ``send_event(..., async_publish=True)``.

    The caller never waits for a proxy: items go to a bounded queue, which one daemon
    thread per process drains, many items per POST (after the first, it waits up to
    ``linger`` seconds for more). Failures (and items dropped because
    the queue is full) are logged; stored events then reach their subscribers through gap
    repair. The queue is flushed at interpreter exit (for up to ``exit_timeout`` seconds),
    and a forked child starts with an empty queue and its own thread, so an item is never
    published twice.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        max_queue: int = 10_000,
        batch: int = 500,
        linger: float = 0.01,
        exit_timeout: float = 5.0,
    ) -> None:
        self.publisher = publisher
        self.max_queue = max_queue
        self.batch = batch
        self.linger = linger
        self.exit_timeout = exit_timeout
        self._lock = threading.Lock()
        self._pid = -1
        self._queue: queue.Queue[tuple[list[dict[str, object]], str]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        atexit.register(self.flush)

    def submit(self, items: list[dict[str, object]], *, channel: str = "") -> None:
        with self._lock:
            if self._pid != os.getpid():
                # A fork copied the parent's queue (its items are the parent's to send)
                # but not its thread.
                self._pid = os.getpid()
                self._queue = queue.Queue(self.max_queue)
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="grip-publish", daemon=True
                )
                self._thread.start()
            work = self._queue
        try:
            work.put_nowait((items, channel))
        except queue.Full:
            logger.error(
                "send_event(async_publish=True): the background queue is full (%d batches); "
                "dropped %d item(s) on channel %r. Stored events reach their subscribers "
                "through gap repair.",
                self.max_queue,
                len(items),
                channel,
            )

    def _run(self, work: queue.Queue[tuple[list[dict[str, object]], str]]) -> None:
        while True:
            first, channel = work.get()
            if not first:  # flush()'s wake-up call, with nothing to wait for
                work.task_done()
                continue
            items = list(first)
            taken = 1
            channels = {channel}
            # Waits up to ``linger`` for more items to publish with these. Publishing each
            # as it came made one POST per send_event in a busy loop, and this thread's
            # work per POST, holding the GIL, slowed the sender down until async sends
            # were barely faster than synchronous ones (profiled: 1.1 to 1.5x).
            deadline = time.monotonic() + self.linger
            while len(items) < self.batch:
                try:
                    more, more_channel = work.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                taken += 1
                if not more:  # flush() waits: publish now
                    break
                items.extend(more)
                channels.add(more_channel)
            try:
                self.publisher.publish(items, channel=", ".join(sorted(channels)))
            except PublishError as exc:
                logger.error("send_event(async_publish=True) could not publish: %s", exc)
            except Exception:  # the thread must survive anything to serve later events
                logger.exception("send_event(async_publish=True) failed")
            finally:
                for _ in range(taken):
                    work.task_done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted in this process is published (or failed).

        True when the queue drained within ``timeout`` (default ``exit_timeout``).
        """
        with self._lock:
            if self._pid != os.getpid() or self._thread is None:
                return True
            work = self._queue
        deadline = time.monotonic() + (self.exit_timeout if timeout is None else timeout)
        if work.unfinished_tasks:
            # An empty batch ends the thread's wait for more items (linger) at once.
            with contextlib.suppress(queue.Full):
                work.put_nowait(([], ""))
        with work.all_tasks_done:
            while work.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.error(
                        "send_event(async_publish=True): %d batch(es) not published at exit",
                        work.unfinished_tasks,
                    )
                    return False
                work.all_tasks_done.wait(remaining)
        return True

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)


def _bodies(items: Sequence[dict[str, object]]) -> Iterator[bytes]:
    """JSON bodies ``{"items": [...]}`` of at most MAX_PUBLISH_BODY bytes each, in order."""
    encoded = [json.dumps(item, separators=(",", ":")).encode("utf-8") for item in items]
    batch: list[bytes] = []
    size = 0
    for item in encoded:
        if batch and size + len(item) + 1 > MAX_PUBLISH_BODY:
            yield b'{"items":[' + b",".join(batch) + b"]}"
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 1
    yield b'{"items":[' + b",".join(batch) + b"]}"


def _short_reason(exc: Exception) -> str:
    # urllib3's NewConnectionError (refused) is also a ConnectTimeoutError: checked first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError) or (
        isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.Timeout)
    ):
        text = str(exc)
        if "Connection refused" in text or "NewConnectionError" in text:
            return "connection refused"
        return text[:300]
    if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]

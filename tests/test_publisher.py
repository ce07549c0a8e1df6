"""grip_eventstream.publisher, against real HTTP servers on 127.0.0.1 (threads, no processes)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured

from grip_eventstream import grip
from grip_eventstream.exceptions import PublishError
from grip_eventstream.proxies import CONTROL_CLAIM, parse_proxies
from grip_eventstream.publisher import MAX_PUBLISH_BODY, BackgroundPublisher, Publisher

KEY = "grip-eventstream-test-key-0123456789abcdef"
ITEM = grip.http_stream_item(
    "test", "data: 1\n\n", item_id="1", prev_id="0", content_filters=["build-id"]
)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeProxy:
    """A Pushpin control port stand-in that records what it receives."""

    server: ThreadingHTTPServer
    status: int = 200
    reply: str = "Published\n"
    requests: list[Recorded] = field(default_factory=list)

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
def fake_proxy() -> Iterator[FakeProxy]:
    proxy: FakeProxy

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            proxy.requests.append(Recorded(self.path, dict(self.headers.items()), body))
            payload = proxy.reply.encode()
            self.send_response(proxy.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy = FakeProxy(server)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connecting is refused at once."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never answers."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def make_publisher() -> Iterator:
    made: list[Publisher] = []

    def make(grip_url=None, grip_proxies=None, timeout=2.0) -> Publisher:
        publisher = Publisher(parse_proxies(grip_url, grip_proxies), timeout)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close()


# --- Publisher.publish ------------------------------------------------------------------


def test_publish_posts_items_json(fake_proxy, make_publisher):
    make_publisher(fake_proxy.url + "/").publish([ITEM, grip.hint_item("x")])
    (request,) = fake_proxy.requests
    assert request.path == "/publish/"
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers
    assert json.loads(request.body) == {"items": [ITEM, grip.hint_item("x")]}


def test_publish_signs_a_jwt_with_iss_and_key(fake_proxy, make_publisher):
    make_publisher(f"{fake_proxy.url}?iss=pushpin&key={KEY}").publish([ITEM])
    (request,) = fake_proxy.requests
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["iss"] == "pushpin"
    assert claims[CONTROL_CLAIM] == "publish"
    assert time.time() < claims["exp"] <= time.time() + 3601


def test_publish_jwt_with_base64_key(fake_proxy, make_publisher):
    raw = b"\xffbinary-key-0123456789abcdef0123456"
    url = f"{fake_proxy.url}?iss=pushpin&key=base64:{base64.b64encode(raw).decode()}"
    make_publisher(url).publish([ITEM])
    token = fake_proxy.requests[0].headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, raw, algorithms=["HS256"])["iss"] == "pushpin"


def test_publish_bearer_with_key_only(fake_proxy, make_publisher):
    make_publisher(f"{fake_proxy.url}?key=api-token").publish([ITEM])
    assert fake_proxy.requests[0].headers["Authorization"] == "Bearer api-token"


def test_publish_bearer_with_bytes_key_only(fake_proxy, make_publisher):
    make_publisher(None, [{"control_uri": fake_proxy.url, "key": b"api-token"}]).publish([ITEM])
    assert fake_proxy.requests[0].headers["Authorization"] == "Bearer api-token"


def test_publish_fanout_style_is_bearer(fake_proxy, make_publisher):
    make_publisher(f"{fake_proxy.url}/service/S?verify-iss=fastly:S&key=TOKEN").publish([ITEM])
    (request,) = fake_proxy.requests
    assert request.path == "/service/S/publish/"
    assert request.headers["Authorization"] == "Bearer TOKEN"


@pytest.mark.parametrize(("status", "reply"), [(500, "boom"), (400, "invalid JSON")])
def test_publish_error_status(fake_proxy, make_publisher, status, reply):
    fake_proxy.status, fake_proxy.reply = status, reply + "\n"
    with pytest.raises(PublishError) as info:
        make_publisher(fake_proxy.url).publish([ITEM], channel="test")
    assert info.value.channel == "test"
    assert info.value.failures == [(fake_proxy.url, f"HTTP {status}: {reply}")]
    message = str(info.value)
    assert fake_proxy.url in message
    assert str(status) in message
    assert reply in message
    assert "on channel 'test'" in message
    assert "1 GRIP proxy:" in message
    # No retry adapter: a failing proxy is asked once.
    assert len(fake_proxy.requests) == 1


def test_publish_connection_refused(closed_port, make_publisher):
    uri = f"http://127.0.0.1:{closed_port}"
    started = time.monotonic()
    with pytest.raises(PublishError) as info:
        make_publisher(uri, timeout=0.5).publish([ITEM])
    assert time.monotonic() - started < 5
    assert info.value.failures == [(uri, "connection refused")]
    assert "Check that Pushpin is running" in str(info.value)


def test_publish_times_out_on_a_silent_proxy(silent_port, make_publisher):
    uri = f"http://127.0.0.1:{silent_port}"
    started = time.monotonic()
    with pytest.raises(PublishError) as info:
        make_publisher(uri, timeout=0.5).publish([ITEM])
    assert time.monotonic() - started < 5
    assert info.value.failures == [(uri, "timed out")]


def test_publish_long_reasons_are_truncated(fake_proxy, make_publisher):
    fake_proxy.status, fake_proxy.reply = 500, "x" * 5000
    with pytest.raises(PublishError) as info:
        make_publisher(fake_proxy.url).publish([ITEM])
    ((_, reason),) = info.value.failures
    assert reason.startswith("HTTP 500: xxx")
    assert len(reason) == 300


def test_publish_bad_uri_is_a_publish_error(make_publisher):
    with pytest.raises(PublishError) as info:
        make_publisher("http://127.0.0.1:99999", timeout=0.5).publish([ITEM])
    ((uri, reason),) = info.value.failures
    assert uri == "http://127.0.0.1:99999"
    assert reason


def test_publish_goes_through_an_environment_proxy(fake_proxy, make_publisher, monkeypatch):
    # HTTP_PROXY applies as it does for requests: the POST goes to the proxy, absolute URI.
    monkeypatch.setenv("HTTP_PROXY", fake_proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    make_publisher("http://pushpin.internal:5561").publish([ITEM])
    (request,) = fake_proxy.requests
    assert request.path == "http://pushpin.internal:5561/publish/"
    assert json.loads(request.body) == {"items": [ITEM]}


@pytest.mark.parametrize("bundle_is_dir", [True, False])
def test_publish_over_https_verifies_with_the_ca_bundle(
    closed_port, make_publisher, monkeypatch, tmp_path, bundle_is_dir
):
    bundle = tmp_path if bundle_is_dir else tmp_path / "ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    publisher = make_publisher(f"https://127.0.0.1:{closed_port}")
    with pytest.raises(PublishError, match="connection refused"):
        publisher.publish([ITEM])
    (target,) = publisher._targets
    assert target.pool is not None
    assert target.pool.cert_reqs == "CERT_REQUIRED"
    if bundle_is_dir:
        assert (target.pool.ca_cert_dir, target.pool.ca_certs) == (str(bundle), None)
    else:
        assert (target.pool.ca_cert_dir, target.pool.ca_certs) == (None, str(bundle))


def test_publish_one_proxy_down(fake_proxy, closed_port, make_publisher):
    down = f"http://127.0.0.1:{closed_port}"
    publisher = make_publisher(
        None, [{"control_uri": down}, {"control_uri": fake_proxy.url}], timeout=0.5
    )
    with pytest.raises(PublishError) as info:
        publisher.publish([ITEM], channel="test")
    assert json.loads(fake_proxy.requests[0].body) == {"items": [ITEM]}
    assert info.value.failures == [(down, "connection refused")]
    assert fake_proxy.url not in str(info.value)
    assert "to 1 GRIP proxy" in str(info.value)


def test_publish_every_proxy_down(closed_port, silent_port, make_publisher):
    uris = [f"http://127.0.0.1:{closed_port}", f"http://127.0.0.1:{silent_port}"]
    publisher = make_publisher(None, [{"control_uri": u} for u in uris], timeout=0.5)
    with pytest.raises(PublishError) as info:
        publisher.publish([ITEM])
    assert [uri for uri, _ in info.value.failures] == uris
    assert "to 2 GRIP proxies" in str(info.value)
    assert "on channel" not in str(info.value)


def test_publish_without_proxies_is_a_configuration_error(make_publisher):
    # Not a PublishError: EVENTSTREAM_PUBLISH_ERRORS = "log" must not hide it.
    publisher = make_publisher(None, None)
    for call in (publisher.check_configured, lambda: publisher.publish([ITEM], channel="t")):
        with pytest.raises(ImproperlyConfigured, match="set GRIP_URL") as info:
            call()
        assert "GRIP_PROXIES" in str(info.value)
        assert "eventstream_outbox" in str(info.value)


def test_check_configured_with_a_proxy(make_publisher):
    make_publisher("http://127.0.0.1:9").check_configured()  # nothing is sent


def test_publisher_reuses_and_closes(fake_proxy, make_publisher):
    publisher = make_publisher(fake_proxy.url)
    publisher.publish([ITEM])
    publisher.publish([ITEM])
    assert len(fake_proxy.requests) == 2
    publisher.close()
    publisher.close()  # idempotent


def test_large_batches_are_split_in_order(fake_proxy, make_publisher):
    items = [
        grip.http_stream_item("test", "data: " + "x" * 100_000 + "\n\n", item_id=str(i))
        for i in range(12)
    ]
    make_publisher(fake_proxy.url).publish(items)
    assert len(fake_proxy.requests) > 1
    assert all(len(r.body) <= MAX_PUBLISH_BODY for r in fake_proxy.requests)
    received = [item for r in fake_proxy.requests for item in json.loads(r.body)["items"]]
    assert received == items


def test_proxies_are_published_to_concurrently(make_publisher):
    """Each proxy answers only once the other has been reached: sequential calls would fail."""
    barrier = threading.Barrier(2, timeout=3)
    servers = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                barrier.wait()
                status = 200
            except threading.BrokenBarrierError:
                status = 500
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
    try:
        urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
        make_publisher(None, [{"control_uri": u} for u in urls], timeout=5).publish([ITEM])
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_control_token_is_reused_then_renewed(fake_proxy, make_publisher, monkeypatch):
    publisher = make_publisher(f"{fake_proxy.url}?iss=pushpin&key={KEY}")
    publisher.publish([ITEM])
    publisher.publish([ITEM])
    first, second = (r.headers["Authorization"] for r in fake_proxy.requests)
    assert first == second
    later = time.time() + 3000
    monkeypatch.setattr("grip_eventstream.publisher.time.time", lambda: later)
    publisher.publish([ITEM])
    third = fake_proxy.requests[-1].headers["Authorization"]
    assert third != first
    claims = jwt.decode(
        third.removeprefix("Bearer "), KEY, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims["exp"] == int(later) + 3600


def test_a_forked_child_builds_its_own_sessions(fake_proxy, make_publisher, monkeypatch):
    publisher = make_publisher(fake_proxy.url)
    publisher.publish([ITEM])
    parent_targets = publisher._targets
    monkeypatch.setattr("grip_eventstream.publisher.os.getpid", lambda: -42)
    publisher.publish([ITEM])
    assert publisher._targets is not parent_targets
    assert publisher._targets[0].session is not parent_targets[0].session
    assert len(fake_proxy.requests) == 2


# --- BackgroundPublisher ----------------------------------------------------------------


class Collecting:
    """A Publisher stand-in that records batches, blocking while ``gate`` is clear."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict[str, object]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = fail

    def publish(self, items, *, channel=""):
        self.gate.wait(5)
        self.batches.append(list(items))
        if self.fail:
            raise PublishError([("http://p", "connection refused")], channel=channel)


def item(n: int) -> dict[str, object]:
    return grip.http_stream_item("c", f"data: {n}\n\n", item_id=str(n))


def test_background_batches_in_order_and_flushes():
    sink = Collecting()
    background = BackgroundPublisher(sink, batch=10)  # type: ignore[arg-type]
    sink.gate.clear()  # the first batch waits: the others pile up
    for n in range(25):
        background.submit([item(n)], channel="c")
    sink.gate.set()
    assert background.flush(timeout=5)
    assert [i["id"] for batch in sink.batches for i in batch] == [str(n) for n in range(25)]
    assert len(sink.batches) < 25  # many items per publish
    assert all(len(batch) <= 10 for batch in sink.batches[1:])
    background.close()


def test_background_full_queue_drops_and_logs(caplog):
    sink = Collecting()
    background = BackgroundPublisher(sink, max_queue=2)  # type: ignore[arg-type]
    sink.gate.clear()
    for n in range(6):
        background.submit([item(n)], channel="c")
    assert "the background queue is full" in caplog.text
    sink.gate.set()
    assert background.flush(timeout=5)
    published = [i["id"] for batch in sink.batches for i in batch]
    assert 2 <= len(published) < 6
    background.close()


def test_background_errors_are_logged_and_the_thread_lives_on(caplog):
    sink = Collecting(fail=True)
    background = BackgroundPublisher(sink)  # type: ignore[arg-type]
    background.submit([item(1)], channel="c")
    assert background.flush(timeout=5)
    assert "could not publish" in caplog.text
    sink.fail = False
    background.submit([item(2)], channel="c")
    assert background.flush(timeout=5)
    assert sink.batches[-1] == [item(2)]
    background.close()


def test_background_flush_gives_up_after_its_timeout(caplog):
    sink = Collecting()
    background = BackgroundPublisher(sink)  # type: ignore[arg-type]
    sink.gate.clear()
    background.submit([item(1)], channel="c")
    assert background.flush(timeout=0.2) is False
    assert "not published at exit" in caplog.text
    sink.gate.set()
    assert background.flush(timeout=5)
    background.close()


def test_background_flush_with_nothing_submitted():
    background = BackgroundPublisher(Collecting())  # type: ignore[arg-type]
    assert background.flush(timeout=0)
    background.close()


def test_background_forked_child_starts_empty(monkeypatch):
    sink = Collecting()
    background = BackgroundPublisher(sink)  # type: ignore[arg-type]
    sink.gate.clear()
    background.submit([item(1)], channel="c")
    parent_queue = background._queue
    monkeypatch.setattr("grip_eventstream.publisher.os.getpid", lambda: -7)
    background.submit([item(2)], channel="c")
    assert background._queue is not parent_queue
    sink.gate.set()
    assert background.flush(timeout=5)
    # The child's thread sent only the child's item.
    assert [item(2)] in sink.batches
    monkeypatch.undo()
    background.close()


def test_background_lingers_to_publish_items_together():
    sink = Collecting()
    background = BackgroundPublisher(sink, linger=5)  # type: ignore[arg-type]
    for n in range(3):
        background.submit([item(n)], channel="c")
    started = time.monotonic()
    assert background.flush(timeout=5)
    assert time.monotonic() - started < 2  # flush ends the linger at once
    assert sink.batches == [[item(0), item(1), item(2)]]
    background.close()

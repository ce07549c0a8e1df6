"""The test kit's SSE parser against the WHATWG spec and web-platform-tests eventsource/format-*,
and its ``EventStream`` against a scripted local server and the real Pushpin + gunicorn.

Cases marked "WPT" follow the stream and expectations of the named web-platform-tests file.
"""

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grip_eventstream import send_event
from grip_eventstream.cursor import parse_cursor
from grip_eventstream.sseclient import Event, EventStream, SSEParser, StreamEnded


def parse(*chunks):
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return parser, events


def message(data, last_event_id="", type="message"):
    return Event(type=type, data=data, last_event_id=last_event_id)


# --- lines and line ends --------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r", "\r\n"])
def test_each_line_end(eol):
    _, events = parse(f"data: a{eol}data: b{eol}{eol}")
    assert events == [message("a\nb")]


def test_mixed_line_ends():
    # WPT format-newlines: "data:test\r\ndata\ndata:test\r\n\r"
    _, events = parse("data:test\r\ndata\ndata:test\r\n\r")
    assert events == [message("test\n\ntest")]


def test_crlf_split_across_chunks_is_one_line_end():
    # If the LF were a second line end it would be a blank line and dispatch "a" early.
    _, events = parse("data: a\r", "\ndata: b\r", "\n\r", "\n")
    assert events == [message("a\nb")]


def test_crlf_split_across_bytes_chunks():
    _, events = parse(b"data: a\r", b"\ndata: b\r\n\r", b"\n")
    assert events == [message("a\nb")]


def test_cr_dispatches_without_waiting_for_next_chunk():
    parser = SSEParser()
    assert parser.feed("data: a\r\r") == [message("a")]
    assert parser.feed("\ndata: b\n\n") == [message("b")]


def test_lone_cr_then_lf_in_later_chunk_after_empty_chunks():
    parser = SSEParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\xc3") == []  # half a character: no text yet, CR still pending
    # "\u00e9" starts a new (unknown-field) line: the CR was a complete line end.
    assert parser.feed(b"\xa9\n") == []
    assert parser.feed("\n") == [message("a")]


def test_only_cr_lf_crlf_end_lines():
    # VT, FF, NEL, LS and PS are ordinary characters in an event stream.
    data = "a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g"
    _, events = parse(f"data: {data}\n\n")
    assert events == [message(data)]


def test_character_at_a_time():
    stream = "event: e\r\nid: 1\r\ndata: x\r\ndata: y\r\n\r\n"
    _, whole = parse(stream)
    _, split = parse(*stream)
    assert whole == split == [message("x\ny", "1", type="e")]


# --- BOM and UTF-8 --------------------------------------------------------------------------


def test_leading_bom_stripped():
    # WPT format-bom: only the first BOM is stripped; "\ufeffdata" is an unknown field.
    _, events = parse("\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3\n\n")
    assert [e.data for e in events] == ["1", "3"]


def test_only_one_bom_stripped():
    # WPT format-bom-2
    _, events = parse("\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3\n\n")
    assert [e.data for e in events] == ["2", "3"]


def test_bom_split_across_byte_chunks():
    _, events = parse(b"\xef", b"\xbb", b"\xbfdata: x\n\n")
    assert events == [message("x")]


def test_bom_in_later_chunk_is_not_stripped():
    _, events = parse("data: a\n\n", "\ufeffdata: b\n\n")
    assert events == [message("a")]


def test_bom_after_empty_first_chunk_is_still_leading():
    _, events = parse(b"", "\ufeffdata: x\n\n")
    assert events == [message("x")]


def test_utf8_split_inside_character():
    raw = "data: caf\u00e9 \U0001f600\n\n".encode()
    _, events = parse(*(raw[i : i + 1] for i in range(len(raw))))
    assert events == [message("caf\u00e9 \U0001f600")]


def test_invalid_utf8_replaced():
    _, events = parse(b"data: a\xffb\xe2\x82\n\n")
    assert events == [message("a\ufffdb\ufffd")]


def test_truncated_utf8_then_str_chunk_flushes_replacement():
    _, events = parse(b"data: a\xe2\x82", "b\n\n")
    assert events == [message("a\ufffdb")]


# --- fields ---------------------------------------------------------------------------------


def test_one_space_after_colon_stripped_no_more():
    # WPT format-leading-space: "data:\ttest\rdata: \ndata:test\n\n"
    _, events = parse("data:\ttest\rdata: \ndata:test\n\n")
    assert events == [message("\ttest\n\ntest")]
    _, events = parse("data:  two spaces\n\n")
    assert events == [message(" two spaces")]


def test_data_without_space():
    _, events = parse("data:x\n\n")
    assert events == [message("x")]


def test_field_parsing():
    # WPT format-field-parsing: case-sensitive names, NUL kept in data, unknown fields ignored.
    stream = (
        "data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\n"
        "data:3\rdata:\r\n data:32\ndata:4\n\n"
    )
    _, events = parse(stream)
    assert events == [message("\x00\n 2\n1\n3\n\n4")]


def test_field_without_colon_is_name_with_empty_value():
    # WPT format-field-data: "data" alone appends an empty line.
    _, events = parse("data:\n\ndata\ndata\n\ndata:test\n\n")
    assert [e.data for e in events] == ["", "\n", "test"]


def test_unknown_fields_and_comments_ignored():
    # WPT format-field-unknown and format-comments
    _, events = parse(
        "data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n"
    )
    assert events == [message("test\n\ntest")]
    _, events = parse(":\n: data: x\n:comment\r\ndata: y\r\n:\r\n\r\n")
    assert events == [message("y")]


def test_comment_alone_dispatches_nothing():
    _, events = parse(":keep-alive\n\n:\n\n")
    assert events == []


def test_null_character_in_data():
    # WPT format-null-character
    _, events = parse("data:\x00\n\n\n\n")
    assert events == [message("\x00")]


def test_event_type_and_reset_after_dispatch():
    # WPT format-field-event: the event type buffer is reset after each dispatch.
    _, events = parse("event: test\ndata: a\n\ndata: b\n\n")
    assert events == [message("a", type="test"), message("b")]


def test_empty_event_field_means_message():
    # WPT format-field-event-empty
    _, events = parse("event: \ndata: data\n\n")
    assert events == [message("data")]


def test_event_type_reset_even_when_no_data():
    _, events = parse("event: lost\n\ndata: x\n\n")
    assert events == [message("x")]


def test_block_without_data_dispatches_nothing():
    _, events = parse("event: e\nretry: 5\n\n\n\n")
    assert events == []


def test_last_data_line_final_lf_removed_once():
    _, events = parse("data: a\ndata:\n\n")
    assert events == [message("a\n")]


# --- id -------------------------------------------------------------------------------------


def test_id_carries_over_and_empty_id_resets():
    parser, events = parse(
        "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 2\ndata: d\n\nid:\ndata: e\n\n"
    )
    assert events == [
        message("a", "1"),
        message("b", "1"),
        message("c", ""),
        message("d", "2"),
        message("e", ""),
    ]
    assert parser.last_event_id == ""
    assert parser.id_updates() == ["1", "", "2", ""]


def test_id_with_null_ignored():
    # WPT format-field-id-null: the whole field is ignored, the previous id stays.
    parser, events = parse("id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\nid: x\x00y\n\n")
    assert events == [message("a", "1"), message("b", "1")]
    assert parser.id_updates() == ["1"]


def test_id_only_block_updates_last_event_id_without_event():
    parser = SSEParser()
    assert parser.feed("id: 42\n\n") == []
    assert parser.last_event_id == "42"
    assert parser.id_updates() == ["42"]
    assert parser.feed("data: x\n\n") == [message("x", "42")]


def test_id_value_keeps_spaces_and_colons():
    _, events = parse("id:  a:b \ndata: x\n\n")
    assert events == [message("x", " a:b ")]


def test_id_updates_records_changes_only():
    parser, _ = parse("id: 1\n\nid: 1\ndata: x\n\nid: 2\n\n")
    assert parser.id_updates() == ["1", "2"]


# --- retry ----------------------------------------------------------------------------------


def test_retry_digits_only():
    # WPT format-field-retry-bogus: a value with non-digits is ignored.
    parser, events = parse("retry:3000\nretry:1000x\ndata:x\n\n")
    assert events == [message("x")]
    assert parser.retry == 3000


@pytest.mark.parametrize(
    "value", ["", "  100", "-1", "+5", "1.5", "1e3", "\u0661\u0662", "\u00b2", "12 ", "0x10"]
)
def test_retry_ignored_unless_ascii_digits(value):
    parser, _ = parse(f"retry:{value}\n")
    assert parser.retry is None


def test_retry_applies_without_blank_line_and_leading_space_stripped():
    parser, _ = parse("retry: 0042\n")
    assert parser.retry == 42


def test_retry_with_huge_number_does_not_raise():
    parser, _ = parse("retry:" + "9" * 10_000 + "\n")
    assert parser.retry is None


# --- end of stream --------------------------------------------------------------------------


def test_incomplete_trailing_event_not_dispatched():
    # WPT format-data-before-final-empty-line
    parser, events = parse("retry:1000\ndata:test1\n\nid:test\ndata:test2")
    assert events == [message("test1")]
    # The id field was processed into the buffer, but the source's last event ID string is
    # only set on dispatch, which never happened.
    assert parser.last_event_id == ""
    assert parser.id_updates() == []


def test_trailing_event_with_single_line_end_not_dispatched():
    parser, events = parse("id: 7\ndata: x\n")
    assert events == []
    assert parser.last_event_id == ""
    events = parser.feed("\n")
    assert events == [message("x", "7")]


def test_str_and_bytes_chunks_mix():
    _, events = parse("data: a", b"\xc3\xa9", "\n", b"\n")
    assert events == [message("a\u00e9")]


# --- EventStream's text, against a scripted local server -----------------------------------

# What a path answers: the status, then the body's pieces, each sent at once as a chunk (as
# Pushpin sends a stream); a threading.Event in between holds the rest back until the test
# sets it. The last chunk ends the stream.
Script = list[bytes | threading.Event]


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_ScriptedServer"

    def do_GET(self) -> None:
        status, script = self.server.scripts[self.path]
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream" if status == 200 else "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for step in script:
            if isinstance(step, threading.Event):
                step.wait(10)
            else:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.scripts: dict[str, tuple[int, Script]] = {}
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    def serve(self, path: str, *script: bytes | threading.Event, status: int = 200) -> str:
        """The URL of ``path``, which answers with ``script``."""
        self.scripts[path] = (status, list(script))
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def scripted() -> Iterator[_ScriptedServer]:
    server = _ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        for _, script in server.scripts.values():
            for step in script:
                if isinstance(step, threading.Event):
                    step.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_text_is_the_body_as_received_beside_the_parsed_events(scripted):
    body = "\ufeff:hello\r\nid: 7\r\ndata: a\r\n\r\n:kal\n\nevent: t\rdata: b\r\r"
    with EventStream(scripted.serve("/s", body.encode())) as stream:
        assert stream.wait(2) == [message("a", "7"), message("b", "7", type="t")]
        stream.wait_ended()
        # BOM, comments, fields and every line end, none of which the events show.
        assert stream.text() == body


def test_text_holds_back_a_character_split_between_reads(scripted):
    gate = threading.Event()
    url = scripted.serve("/s", b"data: caf\xc3", gate, b"\xa9\n\n")
    with EventStream(url) as stream:
        assert stream.wait_contains("caf") == "data: caf"
        assert stream.text() == "data: caf"  # no U+FFFD for half a character
        gate.set()
        assert stream.next().data == "caf\u00e9"
        assert stream.text() == "data: caf\u00e9\n\n"


def test_text_replaces_invalid_utf8_and_a_character_cut_by_the_end(scripted):
    with EventStream(scripted.serve("/s", b"data: a\xffb\n\ndata: \xe2\x82")) as stream:
        assert stream.wait_ended() == [message("a\ufffdb")]
        assert stream.text() == "data: a\ufffdb\n\ndata: \ufffd"


def test_wait_text_sees_the_whole_body_whatever_wait_took(scripted):
    gate = threading.Event()
    url = scripted.serve("/s", b"data: 1\n\n", gate, b":note\n\ndata: 2\n\n")
    with EventStream(url) as stream:
        assert stream.next().data == "1"
        gate.set()
        text = stream.wait_text(lambda t: t.count("data:") == 2, what="two events")
        assert text == "data: 1\n\n:note\n\ndata: 2\n\n"
        assert stream.wait_contains(":note") == text
        assert stream.next().data == "2"  # wait_text took no event


def test_wait_text_timeout_says_what_and_shows_the_text(scripted):
    gate = threading.Event()
    with EventStream(scripted.serve("/s", b":open\n\n", gate)) as stream:
        stream.wait_contains(":open")
        with pytest.raises(TimeoutError, match=r"no 'x' from http://\S+/s within 0.2 s; .*:open"):
            stream.wait_contains("x", timeout=0.2)
        with pytest.raises(TimeoutError, match="no five events from"):
            stream.wait_text(lambda t: False, timeout=0.1, what="five events")
        assert not stream.ended


def test_wait_text_raises_stream_ended_when_the_stream_ends_first(scripted):
    with EventStream(scripted.serve("/s", b"refused", status=403)) as stream:
        assert stream.status == 403
        with pytest.raises(StreamEnded, match=r"ended before 'allowed'; received: 'refused'"):
            stream.wait_contains("allowed", timeout=5)
        # What was awaited and has arrived is returned even after the end.
        assert stream.wait_contains("refused", timeout=0) == "refused"
        assert stream.events == []


# --- EventStream, the test kit's client, against the real Pushpin + gunicorn ---------------


@pytest.mark.e2e
def test_event_stream_waits_for_events_and_times_out(stack):
    channel = f"kit-{uuid.uuid4().hex[:8]}"
    with EventStream(f"{stack.url}/stream/?channel={channel}") as stream:
        assert (stream.status, stream.headers["Content-Type"]) == (200, "text/event-stream")
        send_event(channel, "message", {"n": 1})
        send_event(channel, "tick", "two", json_encode=False)
        first, second = stream.wait(2, timeout=10)
        with pytest.raises(TimeoutError, match="0 of 1 events"):
            stream.next(timeout=0.3)
        with pytest.raises(TimeoutError, match="still open"):
            stream.wait_ended(timeout=0.3)
        assert not stream.ended
    assert (first.type, first.json(), second.type, second.data) == (
        "message",
        {"n": 1},
        "tick",
        "two",
    )
    assert stream.last_event_id == second.last_event_id != first.last_event_id
    with EventStream(
        f"{stack.url}/stream/?channel={channel}", last_event_id=first.last_event_id
    ) as again:
        replayed = again.next(timeout=10)  # resumed after the first
    assert (replayed.type, replayed.data) == (second.type, second.data)
    # A replayed id names the same positions as the live one, written without the live
    # event's own trailing part (buildid.live_id).
    assert parse_cursor(replayed.last_event_id) == parse_cursor(second.last_event_id)


@pytest.mark.e2e
def test_event_stream_reports_a_stream_that_ends(stack):
    # Straight to gunicorn, not through Pushpin: refused with 400, and the body ends.
    with EventStream(f"{stack.gunicorn.url}/stream/?channel=kit") as stream:
        assert stream.status == 400
        with pytest.raises(StreamEnded, match="ended after 0 of 1 events"):
            stream.next(timeout=10)
        assert stream.wait_ended() == []
        assert stream.ended
        assert stream.retry is None

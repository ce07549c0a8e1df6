"""grip_eventstream.sse: encoder unit tests, and property tests against the sseclient parser."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grip_eventstream.sse import encode_comment, encode_event, encode_id_only
from grip_eventstream.sseclient import Event, SSEParser

# --- encode_event ---------------------------------------------------------------------------


def test_minimal_event():
    assert encode_event("hello") == "data: hello\n\n"


def test_field_order_event_id_retry_data():
    assert encode_event("x", event="tick", id="7", retry=1500) == (
        "event: tick\nid: 7\nretry: 1500\ndata: x\n\n"
    )


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        ("a\nb", ["a", "b"]),
        ("a\rb", ["a", "b"]),
        ("a\r\nb", ["a", "b"]),  # CRLF counts once
        ("a\n\rb", ["a", "", "b"]),  # LF then CR is two breaks
        ("a\r\r\nb", ["a", "", "b"]),
        ("a\n", ["a", ""]),
        ("\n", ["", ""]),
        ("a\x0bb\x0cc\x85d\u2028e", ["a\x0bb\x0cc\x85d\u2028e"]),  # not SSE line breaks
    ],
)
def test_data_split_on_cr_lf_crlf(data, lines):
    assert encode_event(data) == "".join(f"data: {line}\n" for line in lines) + "\n"


def test_empty_data_is_one_data_line_and_dispatches():
    assert encode_event("") == "data: \n\n"
    assert SSEParser().feed(encode_event("")) == [Event("message", "", "")]


def test_leading_space_in_data_survives():
    encoded = encode_event("  indented\n x")
    assert encoded == "data:   indented\ndata:  x\n\n"
    assert SSEParser().feed(encoded)[0].data == "  indented\n x"


@pytest.mark.parametrize("event", [None, "", "message"])
def test_no_event_line_means_message(event):
    encoded = encode_event("x", event=event)
    assert encoded == "data: x\n\n"
    assert SSEParser().feed(encoded)[0].type == "message"


def test_id_none_writes_no_id_line():
    assert "id" not in encode_event("x", id=None)


def test_empty_id_writes_resetting_id_line():
    assert encode_event("x", id="") == "id: \ndata: x\n\n"
    parser = SSEParser()
    parser.feed(encode_event("a", id="5"))
    assert parser.feed(encode_event("b", id="")) == [Event("message", "b", "")]
    assert parser.id_updates() == ["5", ""]


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize(
    ("char", "name"), [("\r", "CR"), ("\n", "LF"), ("\x00", "NUL"), ("\r\n", "CR")]
)
def test_event_and_id_reject_line_breaks_and_nul(field, char, name):
    with pytest.raises(ValueError, match=rf"SSE {field} must not contain {name} .*at index 3"):
        encode_event("x", **{field: f"abc{char}data: injected"})  # type: ignore[arg-type]


def test_field_injection_impossible_via_data():
    encoded = encode_event("x\nevent: evil\r\nid: 666\rretry: 1\n\n")
    events = SSEParser().feed(encoded)
    assert events == [Event("message", "x\nevent: evil\nid: 666\nretry: 1\n\n", "")]


def test_nul_in_data_allowed():
    assert SSEParser().feed(encode_event("a\x00b")) == [Event("message", "a\x00b", "")]


@pytest.mark.parametrize("field", ["data", "event", "id"])
def test_lone_surrogate_rejected(field):
    kwargs = {"data": "x", field: "ab\ud83d"}
    with pytest.raises(
        ValueError, match=rf"SSE {field} contains a lone surrogate U\+D83D at index 2"
    ):
        encode_event(**kwargs)  # type: ignore[arg-type]


def test_non_str_id_rejected_with_hint():
    with pytest.raises(TypeError, match=r"SSE id must be a str, got int; convert it with str\(\)"):
        encode_event("x", id=5)  # type: ignore[arg-type]


def test_non_str_data_rejected():
    with pytest.raises(TypeError, match="SSE data must be a str, got bytes"):
        encode_event(b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [0, 1, 3000, 10**20])
def test_retry_written_as_ascii_digits(retry):
    encoded = encode_event("x", retry=retry)
    assert encoded == f"retry: {retry}\ndata: x\n\n"
    parser = SSEParser()
    parser.feed(encoded)
    assert parser.retry == retry


def test_retry_int_subclass_written_as_plain_digits():
    class Weird(int):
        def __str__(self):
            return "Weird!"

        def __format__(self, spec):
            return "Weird!"

    assert encode_event("x", retry=Weird(5)) == "retry: 5\ndata: x\n\n"


def test_retry_negative_rejected():
    with pytest.raises(ValueError, match="SSE retry must be >= 0 milliseconds, got -1"):
        encode_event("x", retry=-1)


@pytest.mark.parametrize("retry", [True, False, 1.5, "100"])
def test_retry_non_int_rejected(retry):
    with pytest.raises(TypeError, match="SSE retry must be an int number of milliseconds"):
        encode_event("x", retry=retry)


# --- encode_comment, encode_id_only -----------------------------------------


def test_comment():
    assert encode_comment() == ":\n"
    assert encode_comment("keep-alive") == ":keep-alive\n"
    assert encode_comment("a\r\nb\rc\nd") == ":a\n:b\n:c\n:d\n"


def test_comment_fires_nothing_between_events():
    stream = encode_comment("x\ndata: no") + encode_event("a") + encode_comment() + "\n"
    assert SSEParser().feed(stream) == [Event("message", "a", "")]


def test_comment_rejects_lone_surrogate():
    with pytest.raises(ValueError, match="SSE comment contains a lone surrogate"):
        encode_comment("\udc80")


def test_id_only():
    assert encode_id_only("42") == "id: 42\n\n"
    parser = SSEParser()
    assert parser.feed(encode_id_only("42")) == []
    assert parser.last_event_id == "42"
    assert parser.feed(encode_id_only("")) == []
    assert parser.id_updates() == ["42", ""]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "\udfff"])
def test_id_only_validates_like_id(bad):
    with pytest.raises(ValueError, match="SSE id "):
        encode_id_only(bad)


# --- properties: the encoder's output parsed as a browser would -----------------------------

# Text that is usually awkward for SSE: line breaks of every kind, NUL, spaces, colons, a BOM.
AWKWARD = st.sampled_from(
    ["\r", "\n", "\r\n", "\n\r", "\x00", " ", "  ", ":", "\ufeff", "data: x", "\U0001f600"]
)
# codec="utf-8" excludes lone surrogates, which the stream cannot carry.
any_text = st.lists(st.one_of(st.text(st.characters(codec="utf-8")), AWKWARD), max_size=6).map(
    "".join
)
field_chars = st.characters(codec="utf-8", exclude_characters="\r\n\x00")
field_text = st.lists(
    st.one_of(st.text(field_chars), st.sampled_from([" ", ":", "\ufeff", "\U0001f600"])),
    max_size=4,
).map("".join)
event_types = st.one_of(st.none(), st.just(""), field_text.filter(bool))
ids = st.one_of(st.none(), field_text)
retries = st.one_of(st.none(), st.integers(min_value=0, max_value=10**12))


def normalise_newlines(text):
    """What the client sees of data: every CRLF, CR and LF line break becomes LF."""
    return re.sub(r"\r\n|\r", "\n", text)


def split_at(draw, raw):
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def feed_all(parser, chunks):
    return [event for chunk in chunks for event in parser.feed(chunk)]


@settings(max_examples=200, deadline=None)
@given(data=any_text, event=event_types, id=ids, retry=retries, draw=st.data())
def test_round_trip(data, event, id, retry, draw):
    encoded = encode_event(data, event=event, id=id, retry=retry)
    expected = [Event(event or "message", normalise_newlines(data), id or "")]

    whole = SSEParser()
    assert whole.feed(encoded) == expected
    assert whole.retry == retry

    # As UTF-8 bytes split anywhere, including inside a multi-byte character.
    split = SSEParser()
    assert feed_all(split, split_at(draw.draw, encoded.encode())) == expected
    assert split.retry == retry
    assert split.id_updates() == whole.id_updates() == ([id] if id else [])


blocks = st.one_of(
    st.tuples(st.just("event"), any_text, event_types, ids, retries),
    st.tuples(st.just("comment"), any_text),
    st.tuples(st.just("id_only"), field_text),
)


@settings(max_examples=200, deadline=None)
@given(blocks=st.lists(blocks, max_size=6), draw=st.data())
def test_concatenated_blocks(blocks, draw):
    stream: list[str] = []
    expected: list[Event] = []
    id_updates: list[str] = []
    last_id, retry = "", None
    for kind, *args in blocks:
        if kind == "event":
            data, event, id, block_retry = args
            stream.append(encode_event(data, event=event, id=id, retry=block_retry))
            if id is not None:
                last_id = id
            if block_retry is not None:
                retry = block_retry
            expected.append(Event(event or "message", normalise_newlines(data), last_id))
        elif kind == "comment":
            stream.append(encode_comment(args[0]))
            continue
        else:
            stream.append(encode_id_only(args[0]))
            last_id = args[0]
        if last_id != (id_updates[-1] if id_updates else ""):
            id_updates.append(last_id)
    encoded = "".join(stream)

    whole = SSEParser()
    assert whole.feed(encoded) == expected
    split = SSEParser()
    assert feed_all(split, split_at(draw.draw, encoded.encode())) == expected
    for parser in (whole, split):
        assert parser.id_updates() == id_updates
        assert parser.last_event_id == last_id
        assert parser.retry == retry


# Bytes biased towards SSE syntax, plus invalid and truncated UTF-8 and stray BOMs.
SSE_BYTES = st.sampled_from(
    [b"data", b"event", b"id", b"retry", b":", b" ", b"\r", b"\n", b"\x00", b"12", b"x"]
)
BAD_UTF8 = st.sampled_from(
    [b"\xef\xbb\xbf", b"\xef\xbb", b"\xe2\x82", b"\xac", b"\xff", b"\xed\xa0\x80"]
)
stream_bytes = st.one_of(st.binary(), st.lists(SSE_BYTES | BAD_UTF8, max_size=40).map(b"".join))


@settings(max_examples=200, deadline=None)
@given(raw=stream_bytes, draw=st.data())
def test_parser_never_raises_and_ignores_chunking(raw, draw):
    whole = SSEParser()
    events = whole.feed(raw)
    split = SSEParser()
    assert feed_all(split, split_at(draw.draw, raw)) == events
    assert split.id_updates() == whole.id_updates()
    assert split.last_event_id == whole.last_event_id
    assert split.retry == whole.retry
    for event in events:
        assert event.type
        assert "\x00" not in event.last_event_id
        assert "\r" not in event.data
    assert whole.retry is None or whole.retry >= 0


def test_encode_retry():
    from grip_eventstream.sse import encode_retry

    parser = SSEParser()
    assert parser.feed(encode_retry(2500)) == []
    assert parser.retry == 2500
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="retry"):
            encode_retry(bad)  # type: ignore[arg-type]

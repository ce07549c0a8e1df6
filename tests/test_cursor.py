"""grip_eventstream.cursor: the SSE ids a client holds and sends back as Last-Event-ID."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grip_eventstream import cursor
from grip_eventstream.cursor import Cursor, channel_key, format_cursor, parse_cursor

# CORS-safelisted without a preflight, and no ':' (see SSE-CHECKLIST item 11).
CURSOR_CHARS = re.compile(r"[a-z0-9.-]+")
EPOCH = "abcdefg"

channel_names = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=128
)
positions_st = st.dictionaries(channel_names, st.integers(0, 10**18 - 1), min_size=0, max_size=18)
epochs = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=7, max_size=7)


def test_new_epoch_shape_and_randomness():
    values = {cursor.new_epoch() for _ in range(50)}
    assert len(values) == 50
    for value in values:
        assert re.fullmatch(r"[a-z2-7]{7}", value)


def test_channel_key_is_stable_and_short():
    assert channel_key("test") == channel_key("test")
    assert re.fullmatch(r"[a-z2-7]{6}", channel_key("room 1 🎉"))
    assert channel_key("a") != channel_key("b")


def test_format_cursor_example():
    text = format_cursor(EPOCH, {"test": 42, "room 1": 0}, ["test", "room 1"])
    assert text == f"{EPOCH}.{channel_key('test')}-42.{channel_key('room 1')}-0"
    assert format_cursor(EPOCH, {}, []) == EPOCH


def test_parse_cursor_example():
    parsed = parse_cursor(f"{EPOCH}.{channel_key('test')}-42")
    assert parsed == Cursor(EPOCH, {channel_key("test"): 42})
    assert parsed.position("test") == 42
    assert parsed.position("other") is None
    assert parse_cursor(EPOCH) == Cursor(EPOCH, {})


@given(epochs, positions_st)
def test_round_trip(epoch, positions):
    order = sorted(positions)
    text = format_cursor(epoch, positions, order)
    assert CURSOR_CHARS.fullmatch(text)
    parsed = parse_cursor(text)
    assert parsed is not None
    assert parsed.epoch == epoch
    for channel, position in positions.items():
        assert parsed.position(channel) == position


@given(st.text(max_size=300))
def test_parse_cursor_never_raises(text):
    result = parse_cursor(text)
    assert result is None or isinstance(result, Cursor)


@given(st.text(alphabet="abcdefgz2-7.01\x00\r\n\u00e9\U0001f389", max_size=60))
def test_parse_cursor_never_raises_near_valid(text):
    result = parse_cursor(text)
    assert result is None or CURSOR_CHARS.fullmatch(text)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "x" * 10_000,
        f"{EPOCH}." + ".".join(["aaaaaa-1"] * 200),  # > MAX_CURSOR_LENGTH
        "ABCDEFG",  # upper case epoch
        "abcdef",  # short epoch
        "abcdefgh",  # long epoch
        "abcdef1",  # '1' is not base32
        "abcdef8.aaaaaa-1",
        f"{EPOCH}.aaaaaa",  # no position
        f"{EPOCH}.aaaaaa-",  # empty position
        f"{EPOCH}.aaaaa-1",  # short key
        f"{EPOCH}.aaaaaaa-1",  # long key
        f"{EPOCH}.aaaaaa-01",  # leading zero
        f"{EPOCH}.aaaaaa--1",  # negative
        f"{EPOCH}.aaaaaa-+1",
        f"{EPOCH}.aaaaaa-1.",  # trailing empty part
        f"{EPOCH}..aaaaaa-1",
        f"{EPOCH}.aaaaaa-" + "1" * 19,  # more than 18 digits
        f"{EPOCH}.aaaaaa-\u0661",  # non-ASCII digit
        f"{EPOCH}.aaaaaa-1\n",
        f"{EPOCH}.aaaaaa-1\x00",
        f"{EPOCH}:aaaaaa-1",
        f" {EPOCH}",
        "\x00\r\n",
        "ünïcode.ünïcode",
    ],
)
def test_parse_cursor_rejects_garbage(text):
    assert parse_cursor(text) is None


def test_parse_cursor_limits():
    assert parse_cursor(f"{EPOCH}.aaaaaa-" + "9" * 18) == Cursor(EPOCH, {"aaaaaa": 10**18 - 1})
    assert parse_cursor(f"{EPOCH}.aaaaaa-0") == Cursor(EPOCH, {"aaaaaa": 0})
    exact = f"{EPOCH}.aaaaaa-" + "1" * 10
    assert parse_cursor(exact + "." + "bbbbbb-1") is not None


def test_parse_cursor_length_bound_is_inclusive():
    keys = [f"aaaa{a}{b}" for a in "abcdefg" for b in "abcdefg"]  # distinct keys
    parts = [f".{keys[i]}-" + "1" * 18 for i in range(38)]
    parts += [f".{keys[38]}-1", f".{keys[39]}-" + "1" * 12]
    text = EPOCH + "".join(parts)
    assert len(text) == cursor.MAX_CURSOR_LENGTH
    assert parse_cursor(text) is not None
    assert parse_cursor(text + "1") is None


@given(epochs, positions_st)
def test_every_cursor_character_is_cors_safe(epoch, positions):
    text = format_cursor(epoch, positions, sorted(positions))
    assert CURSOR_CHARS.fullmatch(text)
    assert ":" not in text
    assert len(text) <= cursor.MAX_CURSOR_LENGTH


def test_parse_cursor_rejects_a_trailing_dot():
    assert parse_cursor(EPOCH + ".") is None


def test_a_repeated_channel_takes_its_later_position():
    assert parse_cursor(EPOCH + ".aaaaaa-1.bbbbbb-7.aaaaaa-2") == Cursor(
        EPOCH, {"aaaaaa": 2, "bbbbbb": 7}
    )


@given(st.integers(0, 2**35 - 1))
def test_epoch_int_round_trip(value):
    from grip_eventstream.cursor import epoch_from_int, epoch_to_int

    assert epoch_to_int(epoch_from_int(value)) == value


def test_new_epochs_fit_in_the_counter_column():
    from grip_eventstream.cursor import epoch_from_int, epoch_to_int, new_epoch

    for _ in range(100):
        epoch = new_epoch()
        assert epoch_from_int(epoch_to_int(epoch)) == epoch
        assert epoch_to_int(epoch) < 2**35

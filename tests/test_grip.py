"""grip_eventstream.grip: channel names as Pushpin sees them, hold headers, Grip-Last."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from grip_eventstream import grip
from grip_eventstream.exceptions import InvalidChannel

# What Pushpin may see of a channel name: header-parameter safe, ASCII, no '%', ')' or '\'.
PUSHPIN_SAFE = re.compile(r"[A-Za-z0-9_.:@/+!~-]+")

valid_names = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=128
)


def encoded(name: str) -> str:
    return "~" + base64.b32encode(name.encode()).decode().rstrip("=").lower()


# --- validate_channel -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["test", "room 1", "ünï", "🎉 party", "a" * 128, 'a,b;c"d=e%f(g)h\\i~j', "x"],
)
def test_validate_channel_accepts(name):
    assert grip.validate_channel(name) is name


def test_validate_channel_rejects_empty():
    with pytest.raises(InvalidChannel, match="empty"):
        grip.validate_channel("")


def test_validate_channel_rejects_too_long():
    with pytest.raises(InvalidChannel, match="129 characters long; the limit is 128"):
        grip.validate_channel("a" * 129)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("a\nb", "U+000A"),
        ("a\rb", "U+000D"),
        ("\x00", "U+0000"),
        ("tab\there", "U+0009"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("lone\ud800", "U+D800"),
    ],
)
def test_validate_channel_rejects_control_characters(name, code):
    with pytest.raises(InvalidChannel, match=re.escape(f"contains the control character {code}")):
        grip.validate_channel(name)


def test_validate_channel_control_message_is_truncated():
    with pytest.raises(InvalidChannel) as info:
        grip.validate_channel("x" * 100 + "\n")
    assert "x" * 41 not in str(info.value)


@pytest.mark.parametrize(
    ("value", "type_name"), [(None, "NoneType"), (5, "int"), (b"abc", "bytes")]
)
def test_validate_channel_rejects_non_str(value, type_name):
    with pytest.raises(InvalidChannel, match=f"channel names are strings, got {type_name}"):
        grip.validate_channel(value)


def test_invalid_channel_is_a_value_error():
    assert issubclass(InvalidChannel, ValueError)


@given(valid_names)
def test_validate_channel_accepts_every_valid_name(name):
    assert grip.validate_channel(name) == name


# --- pushpin_channel / channel_from_pushpin ---------------------------------------------


@pytest.mark.parametrize("name", ["test", "a-b_c.d:e@f/g+h!i", "X" * 128, "0"])
def test_plain_names_pass_unchanged(name):
    assert grip.pushpin_channel(name) == name
    assert grip.channel_from_pushpin(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "room 1",
        ",",
        ";",
        '"',
        "=",
        "%",
        "(",
        ")",
        "\\",
        "~",
        "~abc",
        'a,b;c"d=e%f(g)h\\i~j',
        "ünï",
        "日本語",
        "🎉",
        "emoji 🎉 mix",
        " ",
        "a b",
    ],
)
def test_other_names_are_encoded_and_round_trip(name):
    pushpin_name = grip.pushpin_channel(name)
    assert pushpin_name == encoded(name)
    assert PUSHPIN_SAFE.fullmatch(pushpin_name)
    assert grip.channel_from_pushpin(pushpin_name) == name


@given(valid_names)
def test_round_trip_and_safe_output(name):
    pushpin_name = grip.pushpin_channel(name)
    assert PUSHPIN_SAFE.fullmatch(pushpin_name)
    assert grip.channel_from_pushpin(pushpin_name) == name


@given(valid_names, valid_names)
def test_pushpin_channel_is_injective(a, b):
    assume(a != b)
    assert grip.pushpin_channel(a) != grip.pushpin_channel(b)


@pytest.mark.parametrize("pushpin_name", ["", "room 1", "a,b", "ü", "~!!!", "~1", "~8", "~ab=c"])
def test_channel_from_pushpin_rejects_what_it_cannot_decode(pushpin_name):
    assert grip.channel_from_pushpin(pushpin_name) is None


def test_channel_from_pushpin_rejects_invalid_utf8():
    bad = "~" + base64.b32encode(b"\xff\xfe").decode().rstrip("=").lower()
    assert grip.channel_from_pushpin(bad) is None


@pytest.mark.parametrize("pushpin_name", ["~", "~MFRGG", "~mfrgg"])
def test_channel_from_pushpin_rejects_non_canonical_names(pushpin_name):
    # "~" decodes to the empty (invalid) name; "~mfrgg" is "abc", which Pushpin knows as "abc".
    assert grip.channel_from_pushpin(pushpin_name) is None


# --- hold_headers -----------------------------------------------------------------------


def test_hold_headers_unreliable_only():
    headers = grip.hold_headers([grip.Subscription("volatile-a")], keep_alive=20)
    assert headers == {
        "Grip-Hold": "stream",
        "Grip-Channel": "volatile-a; filter=skip-users",
        "Grip-Keep-Alive": "OgoK; format=base64; timeout=20",
    }


def test_hold_headers_reliable_with_meta_and_link():
    headers = grip.hold_headers(
        [
            grip.Subscription("volatile-a"),
            grip.Subscription("test", "5"),
            grip.Subscription("room 1", "0"),
        ],
        keep_alive=15,
        id_format="abcdefg.k-%(test)s",
        link="/events/_link/tok/",
        link_timeout=120,
    )
    assert headers == {
        "Grip-Hold": "stream",
        "Grip-Channel": (
            "volatile-a; filter=skip-users, test; prev-id=5; filter=build-id; filter=skip-users, "
            f"{encoded('room 1')}; prev-id=0; filter=build-id; filter=skip-users"
        ),
        "Grip-Keep-Alive": "OgoK; format=base64; timeout=15",
        "Grip-Set-Meta": 'id_format="abcdefg.k-%(test)s"',
        "Grip-Link": "</events/_link/tok/>; rel=next; timeout=120",
    }


def test_hold_headers_without_keep_alive_or_link_timeout():
    headers = grip.hold_headers(
        [grip.Subscription("test", "1")], keep_alive=0, link="/l/", link_timeout=0
    )
    assert "Grip-Keep-Alive" not in headers
    assert "Grip-Set-Meta" not in headers
    assert headers["Grip-Link"] == "</l/>; rel=next"


def test_keep_alive_is_an_sse_comment_without_padding():
    value = grip.hold_headers([grip.Subscription("a")], keep_alive=1)["Grip-Keep-Alive"]
    data = value.split(";")[0]
    assert base64.b64decode(data) == b":\n\n"
    assert "=" not in data


def test_hold_headers_raw_subscription_goes_unencoded():
    control = grip.user_control_channel(7)
    headers = grip.hold_headers(
        [grip.Subscription("room 1"), grip.Subscription(control, raw=True)], keep_alive=0
    )
    assert headers["Grip-Channel"] == f"{encoded('room 1')}; filter=skip-users, {control}"


def test_link_header():
    assert grip.link_header("/a/") == "</a/>; rel=next"
    assert grip.link_header("/a/?x=1", 30) == "</a/?x=1>; rel=next; timeout=30"


# --- parse_grip_last --------------------------------------------------------------------


def test_parse_grip_last_single():
    assert grip.parse_grip_last(["test; last-id=5"]) == {"test": "5"}


def test_parse_grip_last_several_headers_and_comma_joined():
    room = encoded("room 1")
    assert grip.parse_grip_last([f"test; last-id=1, {room}; last-id=2", "ünï-x; last-id=3"]) == {
        "test": "1",
        "room 1": "2",
    }
    assert grip.parse_grip_last([f"{encoded('ünï')};last-id=7"]) == {"ünï": "7"}


def test_parse_grip_last_quoted_ids_and_spacing():
    assert grip.parse_grip_last(['test ;  last-id="42" ']) == {"test": "42"}
    assert grip.parse_grip_last(["test; foo=bar; last-id=9"]) == {"test": "9"}


@pytest.mark.parametrize(
    "value", ["", "garbage", "test", "test; id=3", "room 1; last-id=3", "~!!; last-id=3", ";;;,,,"]
)
def test_parse_grip_last_skips_junk(value):
    assert grip.parse_grip_last([value]) == {}


def test_parse_grip_last_junk_beside_good_entry():
    assert grip.parse_grip_last(["junk here, test; last-id=4, ;"]) == {"test": "4"}


@given(st.dictionaries(valid_names, st.integers(0, 10**18).map(str), max_size=5))
def test_parse_grip_last_reads_what_pushpin_would_send(last_ids):
    header = ", ".join(f"{grip.pushpin_channel(c)}; last-id={i}" for c, i in last_ids.items())
    assert grip.parse_grip_last([header]) == last_ids


# --- publish items ----------------------------------------------------------------------


def test_http_stream_item_minimal():
    assert grip.http_stream_item("room 1", "data: x\n\n") == {
        "channel": encoded("room 1"),
        "formats": {"http-stream": {"content": "data: x\n\n"}},
    }


def test_http_stream_item_with_ids_and_build_id():
    item = grip.http_stream_item(
        "test", "c", item_id="1", prev_id="0", content_filters=["build-id"]
    )
    assert item == {
        "channel": "test",
        "formats": {"http-stream": {"content": "c", "content-filters": ["build-id"]}},
        "id": "1",
        "prev-id": "0",
    }
    assert all(isinstance(item[k], str) for k in ("id", "prev-id"))


def test_hint_item():
    assert grip.hint_item("~abc") == {
        "channel": "~abc",
        "formats": {"http-stream": {"action": "hint"}},
    }
    assert "id" not in grip.hint_item("test")
    assert "prev-id" not in grip.hint_item("test")


# --- reserved per-user channels ---------------------------------------------------------


@pytest.mark.parametrize("pk", [1, 42, "a-uuid-4f1c", "ünï"])
def test_user_control_channel(pk):
    control = grip.user_control_channel(pk)
    assert control.startswith("~~u.")
    assert PUSHPIN_SAFE.fullmatch(control)
    assert grip.user_control_channel(pk) == control
    # Never read back as a user channel from Grip-Last.
    assert grip.channel_from_pushpin(control) is None
    assert grip.parse_grip_last([f"{control}; last-id=3"]) == {}


def test_user_control_channels_differ():
    assert grip.user_control_channel(1) != grip.user_control_channel(11)
    assert grip.user_control_channel(1) != grip.user_control_channel("1 ")


@given(valid_names, st.one_of(st.integers(), st.text(min_size=1, max_size=40)))
def test_user_channels_never_collide_with_control_channels(name, pk):
    assert not grip.pushpin_channel(name).startswith("~~")
    assert grip.pushpin_channel(name) != grip.user_control_channel(pk)


# --- link_path -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/rooms/a,b/events/", "/rooms/a%2Cb/events/"),
        ("/rooms/a;b c/events/", "/rooms/a%3Bb%20c/events/"),
        ("/rooms/50%/", "/rooms/50%25/"),
        ('/r/ü<>"/', "/r/%C3%BC%3C%3E%22/"),
        ("/events/_link/abc:1-2_x/", "/events/_link/abc:1-2_x/"),
    ],
)
def test_link_path(path, expected):
    assert grip.link_path(path) == expected


@given(st.text(st.characters(codec="utf-8")))
def test_link_paths_never_carry_header_syntax(path):
    from urllib.parse import unquote

    encoded = grip.link_path(path)
    assert not set(encoded) & set(',;<>" \\\t\r\n')
    assert encoded.isascii()
    assert unquote(encoded) == path


def test_hold_headers_user_meta():
    headers = grip.hold_headers(
        [grip.Subscription("a", "1")], keep_alive=0, id_format="E.%(a)s", user=grip.user_meta(7)
    )
    assert headers["Grip-Set-Meta"] == f'id_format="E.%(a)s", user="{grip.user_meta(7)}"'
    only_user = grip.hold_headers([grip.Subscription("a")], keep_alive=0, user="x")
    assert only_user["Grip-Set-Meta"] == 'user="x"'


@given(st.text())
def test_user_meta_is_plain_and_distinct(pk):
    value = grip.user_meta(pk)
    assert re.fullmatch(r"[a-z2-7]*", value)
    assert grip.user_meta(pk + "x") != value


def test_http_stream_item_skip_users():
    item = grip.http_stream_item(
        "a", "data: x\n\n", content_filters=["build-id"], skip_users="ab,cd"
    )
    assert item["meta"] == {"skip_users": "ab,cd"}
    assert item["formats"] == {
        "http-stream": {"content": "data: x\n\n", "content-filters": ["build-id"]}
    }
    assert "meta" not in grip.http_stream_item("a", "x")

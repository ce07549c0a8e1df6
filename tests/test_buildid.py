"""grip_eventstream.buildid: Pushpin's build-id filter (escaping, ids, publish items)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grip_eventstream import buildid, grip
from grip_eventstream.cursor import channel_key, format_cursor, parse_cursor
from tests.pushpin_model import pushpin_build_id
from tests.test_cursor import CURSOR_CHARS, EPOCH, channel_names, epochs, positions_st
from tests.test_grip import encoded


def substitute(template: str, last_ids: dict[str, int]) -> str:
    """What Pushpin's build-id filter does with the subscription's id_format."""

    def replace(match: re.Match[str]) -> str:
        return str(last_ids[match.group(1)])

    return re.sub(r"%\(([^)]*)\)s", replace, template)


@given(epochs, positions_st)
def test_id_format_renders_format_cursor(epoch, positions):
    channels = sorted(positions)
    template = buildid.id_format(epoch, channels)
    pushpin_last_ids = {grip.pushpin_channel(c): p for c, p in positions.items()}
    rendered = substitute(template, pushpin_last_ids)
    assert rendered == format_cursor(epoch, positions, channels)
    assert CURSOR_CHARS.fullmatch(rendered)


def test_id_format_example():
    template = buildid.id_format(EPOCH, ["test", "room 1"])
    room = f"%({grip.pushpin_channel('room 1')})s"
    assert template == f"{EPOCH}.{channel_key('test')}-%(test)s.{channel_key('room 1')}-{room}"


@pytest.mark.parametrize("behind", [False, True], ids=["pushpin-1.36", "pushpin-1.41"])
@given(epochs, positions_st, st.data())
def test_live_id_names_the_event_on_both_pushpin_versions(behind, epoch, positions, data):
    """1.36 renders the id format after updating the event's channel, 1.41 before."""
    channel = data.draw(channel_names)
    seq = max(positions.get(channel, 1), 1)  # live events start at 1
    positions = {**positions, channel: seq}
    channels = sorted(positions)
    template = buildid.id_format(epoch, channels)
    last_ids = {grip.pushpin_channel(c): p for c, p in positions.items()}
    if behind:
        last_ids[grip.pushpin_channel(channel)] = seq - 1
    rendered = buildid.live_id(channel, seq).replace("%I", substitute(template, last_ids))
    expected = parse_cursor(format_cursor(epoch, positions, channels))
    assert parse_cursor(rendered) == expected
    assert CURSOR_CHARS.fullmatch(rendered)


def test_id_var():
    assert buildid.id_var("test") == "%(test)s"
    assert buildid.id_var("room 1") == f"%({encoded('room 1')})s"


def test_escape():
    assert buildid.escape("100% %I %%") == "100%% %%I %%%%"
    assert buildid.escape("") == ""


@given(st.text(), st.text())
def test_escaped_text_survives_pushpin_build_id(before, after):
    content = buildid.escape(before) + "%I" + buildid.escape(after)
    assert pushpin_build_id(content, "ID") == before + "ID" + after


@given(st.text())
def test_escaped_text_never_fails_the_filter(text):
    assert pushpin_build_id(buildid.escape(text), "ID") == text


def test_unescape_is_what_the_filter_makes_of_escaped_text():
    assert buildid.unescape(buildid.escape("100% %I %%")) == "100% %I %%"


def test_a_stored_events_publish_item():
    item = buildid.publish_item("room 1", 7, "50% off", "sale", "ab")
    assert item == {
        "channel": grip.pushpin_channel("room 1"),
        "id": "7",
        "prev-id": "6",
        "meta": {"skip_users": "ab"},
        "formats": {
            "http-stream": {
                "content": f"event: sale\nid: %I.{channel_key('room 1')}-7\ndata: 50%% off\n\n",
                "content-filters": ["build-id"],
            }
        },
    }


@pytest.mark.parametrize(
    ("features", "old", "new", "filtered"),
    [
        (frozenset(), True, False, True),  # 1.36: the old hold's filters
        (frozenset(), False, True, False),
        (frozenset({"link:gone"}), True, False, False),  # 1.41: the response's own
        (frozenset({"link:gone"}), False, True, True),
    ],
)
def test_body_filtered(features, old, new, filtered):
    assert buildid.body_filtered(features, old_hold_filtered=old, new_hold_filtered=new) is filtered


@given(
    st.text(),
    st.sampled_from(["message", "50%", "%%%"]),
    st.from_regex(CURSOR_CHARS, fullmatch=True),
)
def test_escaped_size_is_the_larger_form(data, event_type, id):
    from grip_eventstream import sse

    plain = sse.encode_event(data, event=event_type, id=id)
    escaped = sse.encode_event(buildid.escape(data), event=buildid.escape(event_type), id=id)
    size = buildid.escaped_size(data, event_type, id)
    assert size >= max(len(plain.encode()), len(escaped.encode()))

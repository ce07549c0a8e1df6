"""A real EventSource in headless Chromium, through a real Pushpin in front of gunicorn.

The page is tests/templates/page.html (``/page/?channel=NAME``): it renders the channel's
current cursor into the EventSource URL and records every event in ``window.received``.
Exactly-once checks end with a *fence*: one more event sent last and waited for; a stream
delivers in order, so a duplicate of anything sent earlier would have arrived before it.
"""

import json
import logging
import re
import uuid

import pytest

from grip_eventstream import send_event
from grip_eventstream.cursor import parse_cursor
from tests import browser
from tests.browser import messages, opens, received, state, wait_messages, wait_open, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or ""),
]

ID = re.compile(r"[a-z0-9.-]+")


def unique(prefix="br"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_page(driver, base_url, channel):
    driver.get(f"{base_url}/page/?channel={channel}")


def send(channel, *numbers):
    for n in numbers:
        send_event(channel, "message", {"n": n})


def numbers(driver):
    return [m["n"] for m in messages(driver)]


def test_eventsource_receives_events_with_json_data_and_safe_ids(stack, driver, tmp_path):
    channel = unique()
    open_page(driver, stack.url, channel)
    wait_open(driver)
    send(channel, 0, 1, 2)
    wait_messages(driver, 3)

    events = received(driver)
    assert [e["type"] for e in events] == ["message"] * 3
    assert [json.loads(e["data"]) for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    ids = [e["id"] for e in events]
    assert all(ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 3, ids
    # Each id is the stream's cursor, rendered by Pushpin: this channel at 1, 2, 3.
    assert [parse_cursor(i).position(channel) for i in ids] == [1, 2, 3]  # type: ignore[union-attr]
    assert state(driver) == "open"
    assert opens(driver) == 1

    driver.save_screenshot(str(tmp_path / "browser-test.png"))  # to look at when debugging


def test_event_sent_right_after_the_page_loaded_arrives_exactly_once(stack, driver):
    channel = unique()
    send(channel, "before")  # before the render: the rendered cursor is past it
    open_page(driver, stack.url, channel)
    send(channel, 0)  # the EventSource may not be open yet: the cursor makes the stream replay it
    wait_messages(driver, 1)
    send(channel, 1)  # fence
    wait_messages(driver, 2)
    assert numbers(driver) == [0, 1]
    assert opens(driver) == 1


def test_event_sent_while_the_stream_cannot_connect_is_replayed(stack, driver):
    """The same, deterministic: the EventSource cannot connect until the event has been sent.

    DevTools makes /stream/ requests fail as if offline: a network error, so Chromium retries
    (the page's URL with its rendered cursor; no Last-Event-ID, it has received no id yet)
    about 3 s later.
    """
    channel = unique()
    network = browser.NetworkLog(driver)
    browser.set_offline(driver, "http://127.0.0.1:*/stream/*")
    open_page(driver, stack.url, channel)
    wait_until(driver, lambda: state(driver) == "reconnecting", "failed first connection")
    send(channel, 0, 1)
    browser.set_offline(driver, None)
    wait_messages(driver, 2, timeout=30)
    send(channel, 2)  # fence
    wait_messages(driver, 3)
    assert numbers(driver) == [0, 1, 2]
    assert opens(driver) == 1
    attempts = network.requests()
    assert len(attempts) >= 2, attempts
    assert attempts[0]["error"] == "net::ERR_INTERNET_DISCONNECTED", attempts
    assert all("last-event-id" not in r["headers"] for r in attempts), attempts


def test_browser_reconnects_after_pushpin_crash_without_loss_or_duplicates(
    private_stack, driver, settings, caplog
):
    settings.EVENTSTREAM_PUBLISH_ERRORS = "log"  # send_event logs while Pushpin is down
    pushpin = private_stack.pushpin
    channel = unique()
    network = browser.NetworkLog(driver)
    open_page(driver, private_stack.url, channel)
    wait_open(driver)
    send(channel, 0, 1, 2)
    wait_messages(driver, 3)
    last_id_before_crash = received(driver)[-1]["id"]

    pushpin.kill()
    wait_until(driver, lambda: state(driver) == "reconnecting", "EventSource error after the crash")
    with caplog.at_level(logging.ERROR, logger="grip_eventstream"):
        send(channel, 3, 4, 5)  # stored, not published: only a replay can deliver them
    assert len([r for r in caplog.records if "could not publish" in r.getMessage()]) == 3
    # Let the browser try (and fail) at least once while Pushpin is down.
    wait_until(
        driver,
        lambda: any(r["error"] for r in network.requests()[1:]),
        "a refused reconnect",
        timeout=30,
    )

    private_stack.start_pushpin()
    send(channel, 6, 7, 8)
    wait_messages(driver, 9, timeout=30)
    send(channel, 9)  # fence
    wait_messages(driver, 10)

    assert numbers(driver) == list(range(10))
    assert [e["type"] for e in received(driver)] == ["message"] * 10
    assert opens(driver) >= 2
    assert state(driver) == "open"
    # The browser's own reconnects carried the last id it had received (a refused attempt
    # never reached the wire: DevTools has no headers for it); the first request carried
    # none (the page's cursor is in its URL).
    first, *reconnects = network.requests()
    assert "last-event-id" not in first["headers"], first
    refused = [r for r in reconnects if r["error"] and not r["headers"]]
    sent = [r for r in reconnects if r["headers"]]
    assert refused, reconnects
    assert sent, reconnects
    assert {r["headers"].get("last-event-id") for r in sent} == {last_id_before_crash}, sent
    assert reconnects[-1]["status"] == 200, reconnects


def test_two_tabs_on_different_channels_get_only_their_own_events(stack, driver):
    channels = [unique("a"), unique("b")]
    open_page(driver, stack.url, channels[0])
    first_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    open_page(driver, stack.url, channels[1])
    tabs = {channels[0]: first_tab, channels[1]: driver.current_window_handle}
    for handle in tabs.values():
        driver.switch_to.window(handle)
        wait_open(driver)

    for n in range(3):
        for channel in channels:
            send_event(channel, "message", {"n": n, "channel": channel})
    for channel in channels:  # fences, after everything else
        send_event(channel, "message", {"n": 3, "channel": channel})

    for channel, handle in tabs.items():
        driver.switch_to.window(handle)
        wait_messages(driver, 4)
        assert messages(driver) == [{"n": n, "channel": channel} for n in range(4)]
        assert opens(driver) == 1

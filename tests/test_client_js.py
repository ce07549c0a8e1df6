"""grip_eventstream's reconnecting client (static/grip_eventstream/eventsource.js) in Chromium.

A native EventSource gives up for good on a non-200 answer, such as the 500 Pushpin gives
while it starts; the library's client checks the status and keeps going on 5xx, stops on
4xx, and resumes from the last event id. tests.middleware.FlakyMiddleware makes the first
requests of a key answer 500.
"""

import json
import time
import uuid

import pytest

from grip_eventstream import send_event
from tests import browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

if reason := browser.missing():
    pytest.skip(reason, allow_module_level=True)


def unique(prefix="js"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_native_eventsource_gives_up_on_a_500(stack, driver):
    channel, key = unique(), uuid.uuid4().hex
    driver.get(f"{stack.url}/page/?channel={channel}&failkey={key}&failures=1")
    browser.wait_until(driver, lambda: browser.state(driver) == "closed", "the close")
    send_event(channel, "message", {"n": 1})
    time.sleep(1)
    assert browser.messages(driver) == []  # lost for good: why the library's client exists


def test_grip_client_survives_500s_and_resumes(stack, driver):
    channel, key = unique(), uuid.uuid4().hex
    driver.get(f"{stack.url}/page/?client=grip&channel={channel}&failkey={key}&failures=2")
    browser.wait_open(driver, timeout=20)
    send_event(channel, "message", {"n": 1})
    assert browser.wait_messages(driver, 1) == [{"n": 1}]
    assert driver.execute_script("return window.errors") == []


def test_grip_client_stops_on_403(stack, driver):
    driver.get(f"{stack.url}/page/?client=grip&channel={unique('private')}")
    browser.wait_until(
        driver, lambda: driver.execute_script("return window.errors").count(403) == 1, "a 403"
    )
    assert browser.state(driver) == "closed"
    time.sleep(2.5)  # it must not keep asking
    assert driver.execute_script("return window.errors") == [403]


def test_grip_client_across_a_pushpin_crash(private_stack, driver, settings):
    settings.EVENTSTREAM_PUBLISH_ERRORS = "log"
    channel = unique()
    driver.get(f"{private_stack.url}/page/?client=grip&channel={channel}")
    browser.wait_open(driver)
    for n in range(3):
        send_event(channel, "message", {"n": n})
    browser.wait_messages(driver, 3)
    private_stack.pushpin.kill()
    for n in range(3, 6):
        send_event(channel, "message", {"n": n})  # stored; the publish fails (logged)
    time.sleep(1.5)  # the client is retrying against the dead proxy
    private_stack.pushpin.start()
    send_event(channel, "message", {"n": 6})
    got = browser.wait_messages(driver, 7, timeout=40)
    assert [m["n"] for m in got] == list(range(7))
    ids = [r["id"] for r in browser.received(driver)]
    assert len(set(ids)) == 7
    assert json.dumps(got)  # plain JSON data

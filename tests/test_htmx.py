"""htmx's SSE support driven by send_event(..., json_encode=False), in headless Chromium:
htmx 2 with htmx-ext-sse and htmx 4 with hx-sse, the real packages from the npm registry.

htmx 4 swaps only events without an event line, which is how "message" events are sent.
"""

from __future__ import annotations

import uuid

import pytest

from grip_eventstream import send_event
from tests import browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

if reason := browser.missing():
    pytest.skip(reason, allow_module_level=True)


def items(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#list li')].map(li => li.textContent)"
    )


def wait_items(driver, count: int, timeout: float = 15) -> list[str]:
    browser.wait_until(driver, lambda: len(items(driver)) >= count, f"{count} items", timeout)
    return items(driver)


def fragment(n: int) -> str:
    return f"<li>item {n} 50%</li>"


@pytest.mark.parametrize("version", ["2", "4"])
def test_fragments_are_swapped_live(stack, driver, npm_packages, version):
    channel = f"htmx-{uuid.uuid4().hex[:8]}"
    send_event(channel, "message", fragment(0), json_encode=False)  # before the page
    driver.get(f"{stack.url}/htmx/?version={version}&channel={channel}")
    send_event(channel, "message", fragment(1), json_encode=False)  # raced the connection
    for n in range(2, 5):
        send_event(channel, "message", fragment(n), json_encode=False)
    assert wait_items(driver, 4) == [f"item {n} 50%" for n in range(1, 5)]
    send_event(channel, "other", "<li>not swapped</li>", json_encode=False)
    send_event(channel, "message", fragment(5), json_encode=False)
    assert wait_items(driver, 5)[-1] == "item 5 50%"
    assert "not swapped" not in items(driver)


@pytest.mark.parametrize("version", ["2", "4"])
def test_the_page_catches_up_after_a_pushpin_restart(
    private_stack, driver, npm_packages, settings, version
):
    settings.EVENTSTREAM_PUBLISH_ERRORS = "log"  # send_event logs while Pushpin is down
    channel = f"htmx-{uuid.uuid4().hex[:8]}"
    driver.get(f"{private_stack.url}/htmx/?version={version}&channel={channel}")
    for n in range(3):
        send_event(channel, "message", fragment(n), json_encode=False)
    wait_items(driver, 3)
    private_stack.pushpin.kill()
    for n in range(3, 6):
        send_event(channel, "message", fragment(n), json_encode=False)  # stored only
    private_stack.start_pushpin()
    send_event(channel, "message", fragment(6), json_encode=False)
    assert wait_items(driver, 7, timeout=60) == [f"item {n} 50%" for n in range(7)]

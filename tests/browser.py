"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium, for tests.

Nothing is ever downloaded: the driver and the browser are given by path, and the caller sets
``SE_OFFLINE=true`` so that selenium-manager is not even asked. The flags keep Chromium off the
network (this machine's network is closed: without them it tries Google's hosts at every start).

:func:`start_chrome` / :func:`quit_chrome` always leave no chromium or chromedriver process
behind: after ``quit()`` every process that mentions the profile directory is waited for, and
killed (by pid) if it lingers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.procs import pid_alive, processes_mentioning

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if absent:
        return f"{' and '.join(absent)} missing: apt-get install chromium chromium-driver"
    return None


def start_chrome(workdir: Path) -> webdriver.Chrome:
    """A headless Chromium with a fresh profile in ``workdir/profile``; logs in ``workdir``."""
    profile = workdir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The DevTools network log: which requests the EventSource made, with their headers.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    try:
        # On failure after the service started, Selenium quits (and stops the service) itself.
        driver = webdriver.Chrome(service=service, options=options)
    except BaseException:
        _kill_leftovers(processes_mentioning(str(profile)))
        raise
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def _kill_leftovers(pids: list[int], grace: float = 10) -> list[int]:
    """Wait up to ``grace`` s for ``pids`` to exit, SIGKILL the rest; return those killed."""
    deadline = time.monotonic() + grace
    while (leftovers := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def quit_chrome(driver: webdriver.Chrome, workdir: Path) -> None:
    """Quit, then make sure chromedriver and every Chromium process of this profile are gone."""
    service_process = driver.service.process
    try:
        driver.quit()
    finally:
        pids = processes_mentioning(str(workdir / "profile"))
        if service_process is not None and service_process.poll() is None:
            pids.append(service_process.pid)
        leftovers = _kill_leftovers(pids)
        if service_process is not None:
            with contextlib.suppress(Exception):
                service_process.wait(5)
        if leftovers:
            raise RuntimeError(f"Chromium processes {leftovers} survived driver.quit()")


# --------------------------------------------------------------------------------------------
# the test page (tests/templates/page.html)


def received(driver: webdriver.Chrome) -> list[dict[str, str]]:
    """``window.received``: every ``message`` / ``stream-reset`` event, {type, data, id}."""
    return list(driver.execute_script("return window.received.slice()"))


def messages(driver: webdriver.Chrome) -> list[Any]:
    """The decoded ``data`` of every ``message`` event received so far."""
    return [json.loads(e["data"]) for e in received(driver) if e["type"] == "message"]


def opens(driver: webdriver.Chrome) -> int:
    return int(driver.execute_script("return window.opens"))


def state(driver: webdriver.Chrome) -> str:
    return str(driver.execute_script("return document.getElementById('state').textContent"))


def wait_until(
    driver: webdriver.Chrome, condition: Callable[[], Any], what: str, timeout: float = 10
) -> Any:
    """Poll ``condition`` every 50 ms until truthy; fail with ``what`` and the page state."""

    def check(_driver: webdriver.Chrome) -> Any:
        return condition()

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)
    except Exception as exc:
        raise AssertionError(
            f"no {what} within {timeout:g} s; state={state(driver)!r} opens={opens(driver)} "
            f"received={received(driver)!r}"
        ) from exc


def wait_messages(driver: webdriver.Chrome, count: int, timeout: float = 10) -> list[Any]:
    """Wait until at least ``count`` ``message`` events arrived; return all of them."""
    wait_until(driver, lambda: len(messages(driver)) >= count, f"{count} messages", timeout)
    return messages(driver)


def wait_open(driver: webdriver.Chrome, count: int = 1, timeout: float = 10) -> None:
    wait_until(driver, lambda: opens(driver) >= count, f"{count} EventSource open(s)", timeout)


class NetworkLog:
    """The EventSource's requests, as DevTools saw them (from the driver's performance log).

    Each request: ``url``, ``time`` (monotonic seconds), ``headers`` (as sent on the wire,
    lower-case names; Chromium adds ``Last-Event-ID`` below the renderer, so it is only in
    ``requestWillBeSentExtraInfo``), ``status`` (None until a response) and ``error``.
    Reading the log consumes it, so one instance per driver accumulates everything.
    """

    def __init__(self, driver: webdriver.Chrome, url_part: str = "/stream/") -> None:
        self.driver = driver
        self.url_part = url_part
        self._requests: dict[str, dict[str, Any]] = {}
        self._extra: dict[str, dict[str, str]] = {}

    def requests(self) -> list[dict[str, Any]]:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message["method"], message["params"]
            request_id = params.get("requestId")
            if method == "Network.requestWillBeSent":
                if self.url_part in params["request"]["url"]:
                    self._requests[request_id] = {
                        "url": params["request"]["url"],
                        "time": params["timestamp"],
                        "headers": {},
                        "status": None,
                        "error": None,
                    }
            elif method == "Network.requestWillBeSentExtraInfo":
                self._extra[request_id] = {k.lower(): v for k, v in params["headers"].items()}
            elif request_id in self._requests:
                if method == "Network.responseReceived":
                    self._requests[request_id]["status"] = params["response"]["status"]
                elif method == "Network.loadingFailed":
                    self._requests[request_id]["error"] = params["errorText"]
        for request_id, request in self._requests.items():
            request["headers"] = self._extra.get(request_id, {})
        return sorted(self._requests.values(), key=lambda r: r["time"])


def set_offline(driver: webdriver.Chrome, url_pattern: str | None) -> None:
    """Make requests matching ``url_pattern`` fail as a network error (None: undo).

    ``url_pattern`` is a URLPattern string ("http://127.0.0.1:*/stream/*"); a bare "*/x/*"
    matches nothing. Do not pass the deprecated top-level ``offline`` (even False): the
    per-rule ``offline`` is then ignored (seen with Chromium 156).
    """
    conditions = []
    if url_pattern is not None:
        conditions.append(
            {
                "urlPattern": url_pattern,
                "offline": True,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            }
        )
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditionsByRule",
        {"matchedNetworkConditions": conditions},
    )

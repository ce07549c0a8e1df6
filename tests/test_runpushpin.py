"""manage.py runpushpin and grip_eventstream.pushpin, with a real Pushpin and gunicorn."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from grip_eventstream import send_event
from grip_eventstream.pushpin import (
    SERVICES_1_36,
    SERVICES_1_38,
    SERVICES_1_40,
    PushpinConfig,
    services_for,
    version,
)
from tests.conftest import ROOT, SIG_KEY, wait_events
from tests.procs import Gunicorn, free_ports, processes_mentioning, read_sse, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("pushpin_version", "services"),
    [
        ((1, 36, 0), SERVICES_1_36),
        ((1, 37, 9), SERVICES_1_36),
        ((1, 38, 0), SERVICES_1_38),
        ((1, 39, 1), SERVICES_1_38),
        ((1, 40, 0), SERVICES_1_40),
        ((1, 41, 0), SERVICES_1_40),
    ],
)
def test_services_by_version(pushpin_version, services):
    assert services_for(pushpin_version) == services


def test_installed_version_is_read():
    assert version() >= (1, 36)


def test_config_without_zurl_for_connmgr(tmp_path):
    config = PushpinConfig("127.0.0.1:8000", tmp_path, sig_key="k" * 32)
    assert "push_in_spec=ipc://{rundir}/{ipc_prefix}push-in" in config.config(SERVICES_1_36)
    assert "zurl_out_specs" in config.config(SERVICES_1_36)
    assert "zurl_out_specs" not in config.config(SERVICES_1_40)
    assert "services=connmgr,proxy,handler" in config.config(SERVICES_1_40)
    assert config.routes().endswith("* 127.0.0.1:8000\n")


@pytest.fixture
def ports():
    """Pushpin's HTTP and control ports for the command."""
    return free_ports(2)


@pytest.fixture
def app(test_db_name, tmp_path, transactional_db, ports, settings):
    grip_url = f"http://127.0.0.1:{ports[1]}?iss=pushpin&key={SIG_KEY}"
    settings.GRIP_URL = grip_url
    server = Gunicorn(
        "tests.wsgi:application",
        tmp_path / "app",
        cwd=ROOT,
        env={
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "GES_DB_NAME": test_db_name,
            "PYTHONPATH": str(ROOT),
            "GRIP_URL": grip_url,
        },
        workers=1,
    )
    server.start(ready_path="/send/")
    yield server
    server.stop()


def run_command(app, ports):
    http, control = ports
    command = [
        sys.executable,
        "-m",
        "django",
        "runpushpin",
        "--target",
        app.address,
        "--port",
        str(http),
        "--control-port",
        str(control),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **app.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Quit with"):
            break
    text = "".join(lines)
    if f"Open http://127.0.0.1:{http}/" not in text:
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(text)
    workdir = Path(re.search(r"Log: (\S+)/pushpin.log", text).group(1))  # type: ignore[union-attr]
    return process, workdir


def test_runpushpin_streams_and_stops_on_ctrl_c(app, ports):
    process, workdir = run_command(app, ports)
    http = ports[0]
    try:
        # Pushpin signs with GRIP_URL's key, which the app verifies.
        with read_sse(f"http://127.0.0.1:{http}/stream/?channel=runpushpin") as reader:
            assert reader.status == 200
            send_event("runpushpin", "message", {"n": 1})
            assert [e.data for e in wait_events(reader, 1)] == ['{"n": 1}']
        assert processes_mentioning(str(workdir))
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
        assert "Pushpin stopped." in process.stdout.read()
        assert processes_mentioning(str(workdir)) == []
        assert not workdir.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_pushpin_stops_when_the_command_is_killed(app, ports):
    process, workdir = run_command(app, ports)
    process.kill()  # SIGKILL: no chance to clean up; Pushpin gets SIGTERM from the kernel
    process.wait()
    process.stdout.close()
    wait_for(lambda: processes_mentioning(str(workdir)) == [], 15, "Pushpin to stop")
    shutil.rmtree(workdir)  # the command had no chance to remove it


def test_repository_config_is_the_runners(tmp_path):
    # pushpin/pushpin.conf and pushpin/routes, for running Pushpin by hand, say what the
    # runner writes (whose configuration every e2e test runs): same services, addresses,
    # signing and routes; only where files go may differ.
    def parse(text: str) -> dict[tuple[str, str], str]:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(text)
        return {(s, k): v for s in parser.sections() for k, v in parser.items(s)}

    ours = parse((ROOT / "pushpin" / "pushpin.conf").read_text())
    key = ours[("proxy", "sig_key")]
    runner = parse(PushpinConfig("127.0.0.1:8000", tmp_path, sig_key=key).config(SERVICES_1_36))
    where = {("global", "rundir"), ("global", "ipc_prefix"), ("runner", "logdir")}
    differing = {
        key: (ours.get(key), value)
        for key, value in runner.items()
        if key not in where and ours.get(key) != value
    }
    assert differing == {}
    # The example app (scripts/demo) verifies Grip-Sig with that key.
    example_settings = (ROOT / "example" / "demo_project" / "settings.py").read_text()
    assert f"?key={key}" in example_settings
    routes = [
        line
        for line in (ROOT / "pushpin" / "routes").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert routes == PushpinConfig("127.0.0.1:8000", tmp_path).routes().splitlines()


def test_missing_pushpin_is_a_clear_error(tmp_path):
    env = {
        "PATH": str(tmp_path),  # no pushpin there
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "GES_DB_NAME": str(tmp_path / "db.sqlite3"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "runpushpin"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "apt-get install pushpin" in done.stderr

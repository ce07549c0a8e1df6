"""manage.py runpushpin and grip_eventstream.pushpin: how the command reads the settings
(with a stand-in for Pushpin), then with a real Pushpin and gunicorn (marked e2e)."""

from __future__ import annotations

import base64
import configparser
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from grip_eventstream import send_event
from grip_eventstream.management.commands import runpushpin
from grip_eventstream.pushpin import (
    SERVICES_1_36,
    SERVICES_1_38,
    SERVICES_1_40,
    PushpinConfig,
    services_for,
    version,
)
from grip_eventstream.sseclient import EventStream
from tests.conftest import ROOT, SIG_KEY, wait_events
from tests.gunicorn_process import Gunicorn
from tests.procs import free_ports, processes_mentioning, wait_for


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


@pytest.mark.e2e
def test_installed_version_is_read():
    assert version() >= (1, 36)


def test_config_without_zurl_for_connmgr(tmp_path):
    config = PushpinConfig("127.0.0.1:8000", tmp_path, sig_key="k" * 32)
    assert "push_in_spec=ipc://{rundir}/{ipc_prefix}push-in" in config.config(SERVICES_1_36)
    assert "zurl_out_specs" in config.config(SERVICES_1_36)
    assert "zurl_out_specs" not in config.config(SERVICES_1_40)
    assert "services=connmgr,proxy,handler" in config.config(SERVICES_1_40)
    assert config.routes().endswith("* 127.0.0.1:8000\n")


# --- the command's reading of GRIP_URL, with a stand-in for Pushpin ---------------------


class FakePushpin:
    """Stands in for PushpinProcess: records its config; "started", it gets a SIGTERM,
    which the command answers by stopping, as under scripts/demo."""

    started: ClassVar[list[FakePushpin]] = []

    def __init__(self, config: PushpinConfig, workdir: Path, log: Path | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.stopped = False

    def start(self, timeout: float = 20) -> None:
        FakePushpin.started.append(self)
        signal.raise_signal(signal.SIGTERM)

    def stop(self, grace: float = 5) -> None:
        self.stopped = True


@pytest.fixture
def fake_pushpin(monkeypatch):
    FakePushpin.started = []
    monkeypatch.setattr(runpushpin, "executable", lambda: "/usr/bin/pushpin")
    monkeypatch.setattr(runpushpin, "PushpinProcess", FakePushpin)
    previous = signal.getsignal(signal.SIGTERM)
    yield FakePushpin.started
    assert signal.getsignal(signal.SIGTERM) is previous  # the command put it back
    signal.signal(signal.SIGTERM, previous)


def runpushpin_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("runpushpin", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


KEY = "grip-eventstream-runpushpin-key-0123456789"


def test_control_port_key_and_issuer_come_from_grip_url(settings, fake_pushpin):
    settings.GRIP_URL = f"http://127.0.0.1:6123?iss=pushpin&key={KEY}"
    out, err = runpushpin_command()
    (process,) = fake_pushpin
    assert process.config.control_port == 6123
    assert (process.config.sig_key, process.config.sig_iss) == (KEY, "pushpin")
    assert "Control port: http://127.0.0.1:6123 (GRIP_URL). Log: " in out
    assert "signed with GRIP_URL's key, issuer 'pushpin'" in out
    assert out.endswith("Pushpin stopped.\n")
    assert err == ""
    assert process.stopped
    assert not process.workdir.exists()


def test_control_port_that_disagrees_with_grip_url_is_refused(settings, fake_pushpin):
    settings.GRIP_URL = f"http://127.0.0.1:6123?key={KEY}"
    with pytest.raises(CommandError, match=r"--control-port 5561 disagrees with GRIP_URL") as exc:
        runpushpin_command("--control-port", "5561")
    assert "port 6123" in str(exc.value)
    assert "Leave --control-port out" in str(exc.value)
    assert fake_pushpin == []


def test_control_port_that_agrees_is_accepted(settings, fake_pushpin):
    settings.GRIP_URL = f"http://localhost:6123/?key={KEY}"
    runpushpin_command("--control-port", "6123")
    assert fake_pushpin[0].config.control_port == 6123


def test_without_grip_url_the_default_port_and_a_note(settings, fake_pushpin):
    del settings.GRIP_URL
    out, err = runpushpin_command()
    assert fake_pushpin[0].config.control_port == 5561
    assert fake_pushpin[0].config.sig_key is None
    assert "Control port: http://127.0.0.1:5561 (GRIP_URL is not set)" in out
    assert 'set GRIP_URL = "http://127.0.0.1:5561?key=' in err
    out, err = runpushpin_command("--control-port", "6200")
    assert fake_pushpin[1].config.control_port == 6200
    assert "http://127.0.0.1:6200?key=" in err


def test_verify_iss_and_verify_key_are_what_pushpin_signs_with(settings, fake_pushpin):
    settings.GRIP_URL = f"http://127.0.0.1:6123?key={KEY}&verify-iss=my-iss&verify-key={KEY}"
    runpushpin_command()
    assert (fake_pushpin[0].config.sig_key, fake_pushpin[0].config.sig_iss) == (KEY, "my-iss")


def test_grip_url_without_a_key_gives_an_unsigning_pushpin(settings, fake_pushpin):
    settings.GRIP_URL = "http://LOCALHOST:6123"
    out, err = runpushpin_command()
    assert (fake_pushpin[0].config.control_port, fake_pushpin[0].config.sig_key) == (6123, None)
    assert "Grip-Sig is not signed with a key the app knows (GRIP_URL has no key)" in out
    assert err == ""


@pytest.mark.parametrize(
    ("url_key", "raw"),
    [
        ("base64:" + base64.b64encode(b"\x00\xffbinary").decode(), b"\x00\xffbinary"),
        ("file:/etc/passwd", b"file:/etc/passwd"),  # a key, not a file, to the app
    ],
)
def test_keys_pushpin_would_misread_are_given_in_base64(settings, fake_pushpin, url_key, raw):
    settings.GRIP_URL = f"http://127.0.0.1:6123?key={url_key}"
    runpushpin_command()
    config = fake_pushpin[0].config
    assert config.sig_key == "base64:" + base64.b64encode(raw).decode()
    assert f"sig_key={config.sig_key}\n" in config.config(SERVICES_1_36)


def test_grip_proxies_first_entry_and_a_note_about_the_others(settings, fake_pushpin):
    settings.GRIP_PROXIES = [
        {"control_uri": "http://127.0.0.1:6301", "key": KEY},
        {"control_uri": "http://127.0.0.1:6302", "key": KEY},
    ]
    out, err = runpushpin_command()
    assert fake_pushpin[0].config.control_port == 6301
    assert "(GRIP_PROXIES[0])" in out
    assert "GRIP_PROXIES lists 2 proxies" in err
    with pytest.raises(CommandError, match=r"disagrees with GRIP_PROXIES\[0\]"):
        runpushpin_command("--control-port", "6302")


@pytest.mark.parametrize("host", ["pushpin", "[::1]", "127.0.0.2"])
def test_a_host_pushpin_does_not_listen_on_is_noted(settings, fake_pushpin, host):
    settings.GRIP_URL = f"http://{host}:5561?key={KEY}"
    _, err = runpushpin_command()
    assert f"names host {host.strip('[]')!r}" in err
    assert "listens on 127.0.0.1 only" in err
    assert "http://127.0.0.1:5561" in err
    assert fake_pushpin[0].config.control_port == 5561


@pytest.mark.parametrize(
    ("grip_url", "message"),
    [
        ("http://127.0.0.1?key=k", "names no control port"),
        ("http://127.0.0.1:99999?key=k", "has no valid port"),
        ("https://127.0.0.1:5561?key=k", "speaks plain HTTP"),
        ("http://127.0.0.1:5561?verify-key=-----BEGIN%20PUBLIC%20KEY-----", "public key"),
        ("http://127.0.0.1:5561?key=k&verify-iss=a%0Ab&verify-key=k", "plain name"),
        (5561, "manage.py check"),
    ],
)
def test_grip_urls_a_development_pushpin_cannot_serve(settings, fake_pushpin, grip_url, message):
    settings.GRIP_URL = grip_url
    with pytest.raises(CommandError, match=message):
        runpushpin_command()
    assert fake_pushpin == []


def test_http_and_control_ports_must_differ(settings, fake_pushpin):
    settings.GRIP_URL = f"http://127.0.0.1:7999?key={KEY}"
    with pytest.raises(CommandError, match=r"are both 7999: give --port another one"):
        runpushpin_command()
    assert fake_pushpin == []


def test_a_failed_start_keeps_the_log_it_points_at(settings, monkeypatch, fake_pushpin):
    settings.GRIP_URL = f"http://127.0.0.1:6123?key={KEY}"

    def fail(self, timeout: float = 20) -> None:
        self.workdir.joinpath("pushpin.log").write_text("bind failed")
        raise RuntimeError("pushpin exited with status 1")

    monkeypatch.setattr(FakePushpin, "start", fail)
    with pytest.raises(CommandError, match=r"status 1 \(log: (\S+)pushpin.log\)") as exc:
        runpushpin_command()
    log = Path(str(exc.value).split("(log: ")[1].rstrip(")"))
    assert log.read_text() == "bind failed"
    shutil.rmtree(log.parent)


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


def run_command(app, ports, *options: str):
    http, control = ports
    # No --control-port: the command takes it from GRIP_URL (the app fixture's).
    command = [
        sys.executable,
        "-m",
        "django",
        "runpushpin",
        "--target",
        app.address,
        "--port",
        str(http),
        *options,
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
    assert f"Control port: http://127.0.0.1:{control} (GRIP_URL). Log: " in text
    workdir = Path(re.search(r"Log: (\S+)/pushpin.log", text).group(1))  # type: ignore[union-attr]
    return process, workdir


@pytest.mark.e2e
def test_runpushpin_streams_and_stops_on_ctrl_c(app, ports):
    process, workdir = run_command(app, ports)
    http = ports[0]
    try:
        # Pushpin signs with GRIP_URL's key, which the app verifies.
        with EventStream(f"http://127.0.0.1:{http}/stream/?channel=runpushpin") as reader:
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


@pytest.mark.e2e
def test_pushpin_stops_when_the_command_is_killed(app, ports):
    # An explicit --control-port that agrees with GRIP_URL is accepted.
    process, workdir = run_command(app, ports, "--control-port", str(ports[1]))
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


@pytest.mark.e2e
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

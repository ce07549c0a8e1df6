"""The repository's Pushpin configurations (pushpin/): one per Pushpin generation.

pushpin/pushpin.conf is for 1.36 (condure + zurl), pushpin/pushpin-1.41.conf for 1.40 and
later (connmgr, no zurl). Each says what grip_eventstream.pushpin writes for its version,
and the one for the installed Pushpin starts and streams as it is written.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from grip_eventstream.pushpin import (
    SERVICES_1_36,
    SERVICES_1_40,
    PushpinConfig,
    free_ports,
    not_ready,
    version,
)
from tests.conftest import ROOT

CONFIGS = {"pushpin.conf": SERVICES_1_36, "pushpin-1.41.conf": SERVICES_1_40}


def parse(text: str) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {(s, k): v for s in parser.sections() for k, v in parser.items(s)}


@pytest.mark.parametrize(("name", "services"), CONFIGS.items())
def test_each_config_is_what_the_runner_writes_for_its_version(name, services, tmp_path):
    ours = parse((ROOT / "pushpin" / name).read_text())
    key = ours[("proxy", "sig_key")]
    runner = parse(PushpinConfig("127.0.0.1:8000", tmp_path, sig_key=key).config(services))
    where = {("global", "rundir"), ("global", "ipc_prefix"), ("runner", "logdir")}
    differing = {
        k: (ours.get(k), v) for k, v in runner.items() if k not in where and ours.get(k) != v
    }
    assert differing == {}
    # Nothing of the other generation: a zurl line makes 1.41 refuse to start.
    assert ("zurl" in ours[("runner", "services")]) == ("zurl" in services)
    assert any(k[1].startswith("zurl_") for k in ours) == ("zurl" in services)


def test_the_two_configs_differ_only_in_services_zurl_and_statistics():
    old = parse((ROOT / "pushpin" / "pushpin.conf").read_text())
    new = parse((ROOT / "pushpin" / "pushpin-1.41.conf").read_text())
    differing = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    zurl = {k for k in old if k[1].startswith("zurl_")}
    # 1.41's proxy aborts with max_open_requests unless connection statistics stay local.
    assert differing == {("runner", "services"), ("global", "stats_connection_send")} | zurl
    assert old[("proxy", "max_open_requests")] == new[("proxy", "max_open_requests")] == "50"
    assert new[("global", "stats_connection_send")] == "false"


@pytest.mark.e2e
def test_the_config_for_the_installed_pushpin_starts_and_streams():
    name = "pushpin-1.41.conf" if version() >= (1, 40) else "pushpin.conf"
    http_port, control_port = free_ports(2)
    # A short directory: ipc socket paths must fit in 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="ppc", dir="/tmp"))
    try:
        text = (ROOT / "pushpin" / name).read_text()
        # Only the ports change (the file's 7999/5561 may be in use on this machine).
        text = re.sub(r"(?m)^http_port=.*$", f"http_port=127.0.0.1:{http_port}", text)
        text = re.sub(r"(?m)^push_in_http_port=.*$", f"push_in_http_port={control_port}", text)
        (workdir / "pushpin.conf").write_text(text)
        shutil.copy(ROOT / "pushpin" / "routes", workdir / "routes")
        settings = PushpinConfig("127.0.0.1:8000", workdir, http_port, control_port)
        # Started from the work directory: the file's relative rundir lands there.
        process = subprocess.Popen(
            ["pushpin", "--config", str(workdir / "pushpin.conf"), "--merge-output"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while (reason := not_ready(settings)) is not None:
                assert process.poll() is None, f"pushpin exited ({process.returncode}): {name}"
                assert time.monotonic() < deadline, reason
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

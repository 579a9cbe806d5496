"""``bash scripts/demo.sh --cloud``: its driver (scripts/cloud_demo.py) on the session's real
cloud (Keystone 30, Barbican 23 with its shipped policies, Glance 33 configured with README.md's
Glance block) does what it prints, checked here independently of what it prints; and
interrupted, the demo (``python -m scripts.cloud_demo``, what demo.sh runs) stops its servers.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from img_crypt.errors import KeyNotFoundError
from scripts.cloud_demo import CLOUD_NAME, Demo, run_demo
from tests.servers._process import REPO
from tests.servers.cloud import Cloud
from tests.support.realauth import barbican_as, glance_as


def test_the_cloud_demo_imports_encrypted_decrypts_identical_then_deletes_key_and_consumer(
        real_cloud: Cloud, tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = run_demo(real_cloud, tmp_path, lines.append, size_mib=2)

    assert outcome.properties["os_encrypt_key_id"] == outcome.key_id
    assert {"os_encrypt_format", "os_encrypt_key_id"} <= set(outcome.properties), outcome
    assert outcome.image_id in outcome.consumers_shown
    assert f"key {outcome.key_id} not found" in outcome.key_gone_shown
    assert (tmp_path / "downloaded.raw").read_bytes() == (tmp_path / "disk.raw").read_bytes()
    assert (tmp_path / "decrypted.raw").read_bytes() == (tmp_path / "disk.raw").read_bytes()
    assert (tmp_path / "stored.icr").read_bytes() != (tmp_path / "disk.raw").read_bytes()
    with pytest.raises(KeyNotFoundError):
        barbican_as(real_cloud, real_cloud.a.token()).key_info(outcome.key_id)
    with glance_as(real_cloud, real_cloud.a.token(), real_cloud.a.project_id) as glance:
        assert glance.get_image(outcome.image_id) is None
    steps = [line.split(".")[0] for line in lines if line.startswith("-- ")]
    assert steps == ["-- 1", "-- 2", "-- 3", "-- 4", "-- 5"]


def test_the_cloud_demo_acts_as_project_a_member_through_its_clouds_yaml(
        real_cloud: Cloud, tmp_path: Path) -> None:
    demo = Demo(real_cloud, tmp_path, print)
    conn = demo.connect()

    assert conn.current_project_id == real_cloud.a.project_id
    assert conn.current_user_id == real_cloud.a.user_id
    assert conn.image.get_endpoint().rstrip("/").startswith(real_cloud.glance.url.rstrip("/"))
    assert f"  {CLOUD_NAME}:" in demo.config.read_text()


def test_interrupting_the_cloud_demo_stops_every_server_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "scripts.cloud_demo", "--out", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        seen, ports = [], []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("   Keystone http"):
                ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", line)]
            if line.startswith("-- 1."):
                break
        else:
            pytest.fail(f"the demo ended before its first step: {''.join(seen)[-3000:]}")
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, rest
    assert "interrupted; servers stopped" in rest
    assert len(ports) == 3
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

"""``bash scripts/demo.sh --cloud``: its driver (scripts/cloud_demo.py) on the session's real
cloud (Keystone 30, Barbican 23 with its shipped policies, Glance 33 configured with README.md's
Glance block) does what it prints, checked here independently of what it prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from img_crypt.errors import KeyNotFoundError
from scripts.cloud_demo import CLOUD_NAME, Demo, run_demo
from tests.servers.cloud import Cloud
from tests.support.realauth import barbican_as, glance_as


def test_the_cloud_demo_imports_encrypted_decrypts_identical_then_deletes_key_and_consumer(
        real_cloud: Cloud, tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = run_demo(real_cloud, tmp_path, lines.append, size_mib=2)

    assert outcome.properties["os_encrypt_key_id"] == outcome.key_id
    assert {"os_encrypt_format", "os_encrypt_key_id"} <= set(outcome.properties), outcome
    assert outcome.image_id in outcome.consumers_shown
    assert outcome.key_id in outcome.key_gone_shown
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

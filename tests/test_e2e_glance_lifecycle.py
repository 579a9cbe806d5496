"""End to end, continued: failures, shared keys, the yoga era, lost notifications, reconcile.

A real Glance 33.0.0 loads the plugin; key managers are a real Barbican 23.0.0 or
barbican_mock (for the unmicroversioned era and for fault injection). After each failure we
count what is left: keys, consumers, staged files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from barbican_mock import Faults, MockBarbican
from img_crypt.cli import main
from img_crypt.keys.connect import connect
from tests.servers.glance import GlanceClient, RealGlance
from tests.support.e2e_glance import (
    CONTAINER_FORMATS,
    PROJECT,
    glance_conf,
    import_image,
    plaintext,
    staging_files,
    start_glance,
)

MiB = 1 << 20


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(plaintext(2 * MiB + 3))
    return path


def assert_rolled_back(glance: RealGlance, result: Any) -> None:
    """The import failed with our message and left the image queued, staging empty."""
    assert result.task_status == "failure"
    assert "could not be encrypted" in result.task_message, result.task_message
    assert result.status == "queued"
    assert not any(name.startswith("os_encrypt_") for name in result.image)
    assert result.image["container_format"] == "bare"
    assert staging_files(glance) == []


# --- failures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock_barbican() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2", faults=Faults()) as mock:
        yield mock


@pytest.fixture(scope="module")
def glance_on_mock(mock_barbican: MockBarbican) -> Iterator[RealGlance]:
    server = start_glance(mock_barbican.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("status", [403, 500])
def test_refused_consumer_registration_leaves_image_queued_and_nothing_behind(
        glance_on_mock: RealGlance, mock_barbican: MockBarbican, data_file: Path,
        status: int) -> None:
    before = len(mock_barbican.secrets(PROJECT))
    mock_barbican.faults.consumers_fail = status
    try:
        with GlanceClient(glance_on_mock.url, PROJECT) as client:
            image_id, result = import_image(client, data_file)
    finally:
        mock_barbican.faults.consumers_fail = None
    assert_rolled_back(glance_on_mock, result)
    assert len(mock_barbican.secrets(PROJECT)) == before  # the per-image key was deleted
    assert not (glance_on_mock.store_dir / image_id).exists()


def test_import_succeeds_after_a_short_5xx_burst(
        glance_on_mock: RealGlance, mock_barbican: MockBarbican, data_file: Path) -> None:
    mock_barbican.faults.error_burst = 2
    with GlanceClient(glance_on_mock.url, PROJECT) as client:
        image_id, result = import_image(client, data_file)
    assert (result.status, result.task_status) == ("active", "success"), result.task_message
    key_id = result.image["os_encrypt_key_id"]
    assert [c["resource_id"] for c in mock_barbican.consumers(key_id)] == [image_id]


def test_barbican_down_leaves_image_queued(data_file: Path) -> None:
    with MockBarbican(era="2026.2") as gone:
        url = gone.url
    glance = start_glance(url)  # nothing listens there any more
    try:
        with GlanceClient(glance.url, PROJECT) as client:
            _, result = import_image(client, data_file)
        assert_rolled_back(glance, result)
    finally:
        glance.stop()


def test_without_require_encryption_a_failed_encryption_stores_plaintext(
        data_file: Path) -> None:
    with MockBarbican(era="2026.2") as gone:
        url = gone.url
    glance = start_glance(url, require_encryption="False")
    try:
        with GlanceClient(glance.url, PROJECT) as client:
            image_id, result = import_image(client, data_file)
        assert (result.status, result.task_status) == ("active", "success")
        assert (glance.store_dir / image_id).read_bytes() == data_file.read_bytes()
        assert "os_encrypt_key_id" not in result.image
        assert "storing it in plaintext (require_encryption = False)" in glance.log_text()
    finally:
        glance.stop()


# --- the unmicroversioned era -----------------------------------------------------------------


def test_yoga_era_registers_the_consumer_through_the_rest_fallback(
        data_file: Path, tmp_path: Path) -> None:
    with MockBarbican(era="yoga") as yoga:
        glance = start_glance(yoga.url)
        try:
            with GlanceClient(glance.url, PROJECT) as client:
                image_id, result = import_image(client, data_file)
                assert result.task_status == "success", result.task_message
                key_id = result.image["os_encrypt_key_id"]
                assert [c["resource_id"] for c in yoga.consumers(key_id)] == [image_id]
                # python-barbicanclient refuses consumer calls at 1.0: this one was direct REST
                assert ("POST", f"/v1/secrets/{key_id}/consumers", 200) in yoga.requests_log()
                client.download(image_id, tmp_path / "dl")
                assert main(["decrypt", str(tmp_path / "dl"), str(tmp_path / "out"),
                             "--key-manager", "barbican", "--barbican-url", yoga.url,
                             "--project-id", PROJECT, "--image-id", image_id]) == 0
                assert (tmp_path / "out").read_bytes() == data_file.read_bytes()
                client.delete_image(image_id)
            assert key_id not in {s["id"] for s in yoga.secrets(PROJECT)}
        finally:
            glance.stop()


# --- shared keys ------------------------------------------------------------------------------


def shared_key_glance(barbican_url: str, key_id: str, **options: str) -> RealGlance:
    return start_glance(barbican_url, kek_id=key_id, **options)


def test_the_configured_shared_key_outlives_every_image_even_with_on_image_deletion(
        real_barbican: Any, data_file: Path) -> None:
    km = connect(url=real_barbican.url, project_id=PROJECT)
    key_id = km.create_key("e2e-shared")
    glance = shared_key_glance(real_barbican.url, key_id,
                               key_deletion_policy="on_image_deletion")
    try:
        with GlanceClient(glance.url, PROJECT) as client:
            first, r1 = import_image(client, data_file)
            second, r2 = import_image(client, data_file)
            assert r1.image["os_encrypt_key_id"] == r2.image["os_encrypt_key_id"] == key_id
            assert {c.resource_id for c in km.list_consumers(key_id)} == {first, second}
            client.delete_image(first)
            assert [c.resource_id for c in km.list_consumers(key_id)] == [second]
            client.delete_image(second)
        assert key_id in {k.key_id for k in km.list_keys()}  # configuration is authority
        assert km.list_consumers(key_id) == []
        assert "([image_encryption] kek_id)" in glance.log_text()
    finally:
        glance.stop()


def test_shared_key_is_kept_by_default(real_barbican: Any, data_file: Path) -> None:
    km = connect(url=real_barbican.url, project_id=PROJECT)
    key_id = km.create_key("e2e-shared-kept")
    glance = shared_key_glance(real_barbican.url, key_id)
    try:
        with GlanceClient(glance.url, PROJECT) as client:
            image_id, result = import_image(client, data_file)
            assert result.image["os_encrypt_key_deletion_policy"] == "do_not_delete"
            client.delete_image(image_id)
        assert km.list_consumers(key_id) == []
        assert key_id in {k.key_id for k in km.list_keys()}
    finally:
        glance.stop()
        km.delete_key(key_id, force=True)


# --- lost notifications: reconcile ------------------------------------------------------------


def test_reconcile_cleans_up_after_a_glance_without_the_delete_hook(
        real_barbican: Any, data_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    glance = RealGlance(plugins=["image_encryption"], notification_drivers=["log"],
                        container_formats=CONTAINER_FORMATS,
                        extra_conf=glance_conf(real_barbican.url)).start()
    km = connect(url=real_barbican.url, project_id=PROJECT)
    try:
        with GlanceClient(glance.url, PROJECT) as client:
            gone, r1 = import_image(client, data_file)
            kept, r2 = import_image(client, data_file)
            client.delete_image(gone)  # no notifier driver: the key stays behind
        gone_key, kept_key = r1.image["os_encrypt_key_id"], r2.image["os_encrypt_key_id"]
        assert [c.resource_id for c in km.list_consumers(gone_key)] == [gone]
        args = ["reconcile", "--key-manager", "barbican", "--barbican-url", real_barbican.url,
                "--project-id", PROJECT, "--glance-url", glance.url]
        capsys.readouterr()
        assert main(args) == 0  # within the grace period: nothing goes
        assert "younger than the grace period" in capsys.readouterr().out
        assert gone_key in {k.key_id for k in km.list_keys()}
        assert all(c.created is not None for c in km.list_consumers(gone_key))  # Barbican's
        args.append("--grace-period=0")
        assert main([*args, "--dry-run"]) == 0
        assert f"would delete key {gone_key}" in capsys.readouterr().out
        assert gone_key in {k.key_id for k in km.list_keys()}
        assert main([*args, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert gone_key in report["deleted"] and kept_key not in report["deleted"]
        keys = {k.key_id for k in km.list_keys()}
        assert gone_key not in keys and kept_key in keys
        assert [c.resource_id for c in km.list_consumers(kept_key)] == [kept]
    finally:
        glance.stop()

"""End to end: Glance 33.0.0's own ``image_conversion`` plugin next to ``image_encryption``.

The README tells operators to list ``image_conversion`` first. These tests run the real Glance
(its own virtualenv, both plugins loaded through their entry points, ``[image_conversion]
output_format = raw``) and the real Barbican, one Glance per plugin order / output format:

- conversion first: Glance converts the qcow2 plaintext to raw (disk_format raw, container_format
  bare), then our plugin encrypts that raw disk; when our plugin refuses, the import fails
  cleanly (our revert leaves the queued status to image_conversion's, which keeps disk_format raw);
- encryption first: Glance's conversion inspects the ciphertext, finds it is not the qcow2 the
  image claims ("Image format mismatch") and the import fails with everything undone; a raw image
  passes (raw needs no conversion) but Glance overwrites virtual_size with the ciphertext's size;
- ``format = luks`` with conversion first: a LUKS1 container of the converted raw disk.
"""

from __future__ import annotations

import binascii
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from img_crypt import luks
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from tests.servers.glance import GlanceClient, RealGlance
from tests.support.e2e_glance import (
    CONTAINER_FORMATS,
    PROJECT,
    MiB,
    decrypt_cli,
    glance_conf,
    import_image,
    staging_files,
)

MAGIC = b"\x89ICR\r\n\x1a\n"
CONVERSION = "\n[image_conversion]\noutput_format = raw\n"
DISK_SIZE = 3 * MiB


def conversion_glance(barbican_url: str, plugins: list[str], **image_encryption: str
                      ) -> Iterator[RealGlance]:
    """A started Glance with ``plugins`` in that order and conversion to raw; stopped after."""
    server = RealGlance(plugins=plugins, notification_drivers=["img_crypt", "log"],
                        container_formats=CONTAINER_FORMATS,
                        extra_conf=glance_conf(barbican_url, **image_encryption) + CONVERSION)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def convert_then_encrypt(real_barbican: Any) -> Iterator[RealGlance]:
    yield from conversion_glance(real_barbican.url, ["image_conversion", "image_encryption"])


@pytest.fixture(scope="module")
def encrypt_then_convert(real_barbican: Any) -> Iterator[RealGlance]:
    yield from conversion_glance(real_barbican.url, ["image_encryption", "image_conversion"])


@pytest.fixture(scope="module")
def convert_then_luks(real_barbican: Any) -> Iterator[RealGlance]:
    yield from conversion_glance(real_barbican.url, ["image_conversion", "image_encryption"],
                                 format="luks")


def raw_disk(directory: Path) -> Path:
    """A raw disk: a zero first sector block (no inspector takes it for anything) then noise."""
    path = directory / "disk.raw"
    path.write_bytes(b"\0" * 4096 + os.urandom(DISK_SIZE - 4096))
    return path


def qcow2_of(raw: Path) -> Path:
    """``qemu-img convert -O qcow2`` of ``raw``."""
    out = raw.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
                   check=True, timeout=60)
    return out


def raw_of(qcow2: Path) -> bytes:
    """What ``qemu-img convert -O raw`` makes of ``qcow2``."""
    out = qcow2.with_suffix(".expected-raw")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(qcow2),
                    str(out)], check=True, timeout=60)
    return out.read_bytes()


def key_names(barbican_km: BarbicanKeyManager) -> set[str]:
    return {k.name or "" for k in barbican_km.list_keys()}


# --- [image_conversion, image_encryption] -----------------------------------------------------


def test_conversion_first_stores_the_encrypted_raw_disk_of_a_qcow2_import(
        convert_then_encrypt: RealGlance, real_barbican: Any,
        barbican_km: BarbicanKeyManager, tmp_path: Path) -> None:
    qcow2 = qcow2_of(raw_disk(tmp_path))
    expected = raw_of(qcow2)
    assert len(expected) == DISK_SIZE and qcow2.read_bytes() != expected
    with GlanceClient(convert_then_encrypt.url, PROJECT) as client:
        image_id, result = import_image(client, qcow2, disk_format="qcow2")
        assert (result.status, result.task_status) == ("active", "success"), result.task_message
        stored = convert_then_encrypt.store_dir / image_id
        image = result.image
        # Glance converted (disk_format raw, container_format bare), then we encrypted
        assert stored.read_bytes()[:8] == MAGIC and image["size"] == stored.stat().st_size
        assert (image["disk_format"], image["container_format"]) == ("raw", "encrypted")
        assert image["os_encrypt_format"] == "img-crypt-v1"
        assert image["os_decrypt_container_format"] == "bare"
        assert image["os_decrypt_size"] == str(DISK_SIZE)
        assert image["virtual_size"] == DISK_SIZE
        key_id = image["os_encrypt_key_id"]
        assert barbican_km.list_consumers(key_id) == [
            Consumer(service="image", resource_type="image", resource_id=image_id)]
        client.download(image_id, tmp_path / "dl.icr")
    assert decrypt_cli(tmp_path / "dl.icr", tmp_path / "out.raw", real_barbican.url,
                       image_id) == 0
    assert (tmp_path / "out.raw").read_bytes() == expected
    assert staging_files(convert_then_encrypt) == []


def test_conversion_first_then_a_refusal_by_our_plugin_fails_the_import_cleanly(
        convert_then_encrypt: RealGlance, tmp_path: Path) -> None:
    qcow2 = qcow2_of(raw_disk(tmp_path))
    with GlanceClient(convert_then_encrypt.url, PROJECT) as client:
        image_id = client.create_image(name="e2e", disk_format="qcow2", container_format="bare",
                                       os_encrypt_key_id="stray")["id"]
        client.stage(image_id, qcow2)
        client.import_image(image_id)
        result = client.wait_import(image_id, timeout=30)
    # our revert leaves the status to image_conversion's (Glance refuses queued -> queued)
    assert (result.status, result.task_status) == ("queued", "failure")
    image = result.image
    assert image["os_glance_failed_import"] == "fast" and image["size"] is None
    # image_conversion's revert does not undo its disk_format
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert "has os_encrypt_key_id but no os_encrypt_format" in result.task_message
    assert not (convert_then_encrypt.store_dir / image_id).exists()
    assert staging_files(convert_then_encrypt) == []


# --- [image_encryption, image_conversion] -----------------------------------------------------


def test_encryption_first_fails_a_qcow2_import_on_glances_format_check_and_undoes_everything(
        encrypt_then_convert: RealGlance, barbican_km: BarbicanKeyManager,
        tmp_path: Path) -> None:
    qcow2 = qcow2_of(raw_disk(tmp_path))
    with GlanceClient(encrypt_then_convert.url, PROJECT) as client:
        image_id = client.create_image(name="e2e", disk_format="qcow2",
                                       container_format="bare")["id"]
        client.stage(image_id, qcow2)
        client.import_image(image_id)
        result = client.wait_import(image_id, timeout=30)  # the import lock is released
    # image_conversion inspects our ciphertext, which is not the qcow2 the image claims
    assert (result.status, result.task_status) == ("queued", "failure")
    assert result.task_message == "Task failed due to Internal Error"  # Glance hides the reason
    log = encrypt_then_convert.log_text()
    assert "RuntimeError: Image format mismatch" in log
    assert "Image claimed to be qcow2 format failed format inspection" in log
    assert f"image {image_id} encrypted (img-crypt-v1)" in log  # we did run first
    # our revert undid it all: no properties, no data, no plaintext, no key
    image = result.image
    assert (image["disk_format"], image["container_format"]) == ("qcow2", "bare")
    assert image["size"] is None and image["virtual_size"] is None
    assert not any(name.startswith("os_encrypt") for name in image)
    assert not (encrypt_then_convert.store_dir / image_id).exists()
    assert staging_files(encrypt_then_convert) == []
    assert not any(image_id in name for name in key_names(barbican_km))


def test_encryption_first_stores_a_raw_import_but_glance_sets_virtual_size_of_the_ciphertext(
        encrypt_then_convert: RealGlance, real_barbican: Any, tmp_path: Path) -> None:
    raw = raw_disk(tmp_path)
    with GlanceClient(encrypt_then_convert.url, PROJECT) as client:
        image_id, result = import_image(client, raw, disk_format="raw")
        assert (result.status, result.task_status) == ("active", "success"), result.task_message
        image = result.image
        stored = encrypt_then_convert.store_dir / image_id
        assert stored.read_bytes()[:8] == MAGIC
        assert (image["disk_format"], image["container_format"]) == ("raw", "encrypted")
        assert image["os_decrypt_size"] == str(DISK_SIZE)
        # raw needs no conversion, but qemu-img info of the ciphertext sets virtual_size (its
        # size rounded up to a 512-byte sector), over the plaintext's that we set
        assert image["size"] == stored.stat().st_size
        assert image["virtual_size"] == -(-image["size"] // 512) * 512 != DISK_SIZE
        client.download(image_id, tmp_path / "dl.icr")
    assert decrypt_cli(tmp_path / "dl.icr", tmp_path / "out.raw", real_barbican.url,
                       image_id) == 0
    assert (tmp_path / "out.raw").read_bytes() == raw.read_bytes()


# --- [image_conversion, image_encryption] with format = luks ----------------------------------


def test_conversion_first_with_luks_stores_the_luks1_container_of_the_converted_raw_disk(
        convert_then_luks: RealGlance, barbican_km: BarbicanKeyManager, tmp_path: Path) -> None:
    qcow2 = qcow2_of(raw_disk(tmp_path))
    expected = raw_of(qcow2)
    with GlanceClient(convert_then_luks.url, PROJECT) as client:
        image_id, result = import_image(client, qcow2, disk_format="qcow2")
    assert (result.status, result.task_status) == ("active", "success"), result.task_message
    image = result.image
    stored = convert_then_luks.store_dir / image_id
    assert stored.read_bytes()[:6] == luks.MAGIC
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert image["os_encrypt_format"] == "LUKSv1"
    assert image["os_decrypt_size"] == str(DISK_SIZE)
    assert image["size"] == stored.stat().st_size == 2 * MiB + DISK_SIZE
    key_id = image["os_encrypt_key_id"]
    out = io.BytesIO()
    with open(stored, "rb") as source:
        luks.decrypt(source, out, binascii.hexlify(barbican_km.get_key(key_id)),
                     size=DISK_SIZE)
    assert out.getvalue() == expected
    assert staging_files(convert_then_luks) == []

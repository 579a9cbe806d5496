"""End to end, ``format = luks``: a real Glance 33.0.0 stores a raw LUKS1 image Cinder can use.

Real Barbican 23.0.0 and Glance (its own virtualenv, our plugin and delete hook loaded through
their entry points). Glance itself checks the result: ``require_image_format_match`` is on by
default, so its format inspector must see the stored data as ``raw`` container ``bare`` (LUKS1
passes). The passphrase is derived from the key fetched from Barbican as Cinder does: castellan's
``get`` (run in the Glance venv, tests/support/cinder_key.py), then the hex of its bytes.
"""

from __future__ import annotations

import binascii
import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from img_crypt import luks
from img_crypt.errors import KeyHasConsumersError
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from tests.servers.glance import GlanceClient, RealGlance
from tests.support.cinder_key import castellan_get
from tests.support.e2e_glance import (
    PROJECT,
    MiB,
    import_image,
    plaintext,
    staging_files,
    start_glance,
)


@pytest.fixture(scope="module")
def glance(real_barbican: Any) -> Iterator[RealGlance]:
    server = start_glance(real_barbican.url, format="luks")
    try:
        yield server
    finally:
        server.stop()


def unlocked(path: Path, key: bytes, size: int) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as source:
        luks.decrypt(source, out, binascii.hexlify(key), size=size)
    return out.getvalue()


def assert_luks_image(image: dict[str, Any], size: int, stored: Path) -> str:
    """The properties Cinder and the standard expect; returns the key id."""
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert image["size"] == stored.stat().st_size == 2 * MiB + 512 * -(-size // 512)
    assert image["os_encrypt_format"] == "LUKSv1"
    assert image["os_decrypt_size"] == str(size)
    key_id = str(image["os_encrypt_key_id"])
    assert image["cinder_encryption_key_id"] == key_id
    assert image["os_encrypt_key_deletion_policy"] == "on_image_deletion"
    assert image["cinder_encryption_key_deletion_policy"] == "on_image_deletion"
    return key_id


def as_cinder_fetches_it(venv: Path, barbican: Any, key_id: str) -> str:
    """The LUKS passphrase from castellan's ``get`` of the key: a 256-bit symmetric secret."""
    key = castellan_get(venv, barbican.url, PROJECT, key_id)
    assert (key["managed_type"], key["bit_length"]) == ("symmetric", 256)
    return str(key["passphrase"])


def test_a_raw_glance_direct_import_is_stored_as_luks1_that_opens_with_the_key_cinder_fetches(
        glance: RealGlance, client: GlanceClient, barbican_km: BarbicanKeyManager,
        glance_venv: Path, real_barbican: Any, tmp_path: Path) -> None:
    data = plaintext(6 * MiB + 12345)
    (tmp_path / "disk.raw").write_bytes(data)
    image_id, result = import_image(client, tmp_path / "disk.raw")
    assert (result.status, result.task_status) == ("active", "success"), result.task_message
    stored = glance.store_dir / image_id
    assert stored.read_bytes()[:6] == luks.MAGIC
    key_id = assert_luks_image(result.image, len(data), stored)

    downloaded = tmp_path / "downloaded.luks"
    assert client.download(image_id, downloaded) == stored.stat().st_size
    passphrase = as_cinder_fetches_it(glance_venv, real_barbican, key_id)
    out = io.BytesIO()
    with open(downloaded, "rb") as source:
        luks.decrypt(source, out, passphrase.encode(), size=len(data))
    assert out.getvalue() == data
    cryptsetup = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file=-",
                                 str(downloaded)], input=passphrase.encode(), timeout=60,
                                check=False, capture_output=True)
    assert cryptsetup.returncode == 0, cryptsetup.stderr
    assert barbican_km.list_consumers(key_id) == [
        Consumer(service="image", resource_type="image", resource_id=image_id)]
    assert staging_files(glance) == []


def test_qemu_img_reads_the_downloaded_image_with_the_passphrase_cinder_derives(
        glance: RealGlance, client: GlanceClient, glance_venv: Path, real_barbican: Any,
        tmp_path: Path) -> None:
    data = plaintext(MiB + 512)
    (tmp_path / "disk.raw").write_bytes(data)
    image_id, result = import_image(client, tmp_path / "disk.raw")
    assert result.status == "active", result.task_message
    client.download(image_id, tmp_path / "dl.luks")
    secret = tmp_path / "secret"  # qemu-img reads it from a file: never on its command line
    secret.write_text(as_cinder_fetches_it(glance_venv, real_barbican,
                                           result.image["os_encrypt_key_id"]))
    subprocess.run(["qemu-img", "convert", "--object", f"secret,id=s0,file={secret}",
                    "--image-opts", f"driver=luks,key-secret=s0,file.filename={tmp_path}/dl.luks",
                    "-O", "raw", str(tmp_path / "out.raw")], check=True, timeout=120)
    assert (tmp_path / "out.raw").read_bytes() == data


def test_a_qcow2_import_is_stored_as_the_luks1_container_of_its_raw_disk(
        glance: RealGlance, client: GlanceClient, barbican_km: BarbicanKeyManager,
        tmp_path: Path) -> None:
    data = plaintext(3 * MiB)
    (tmp_path / "disk.raw").write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"),
                    str(tmp_path / "disk.qcow2")], check=True, timeout=60)
    image_id, result = import_image(client, tmp_path / "disk.qcow2", disk_format="qcow2")
    assert (result.status, result.task_status) == ("active", "success"), result.task_message
    stored = glance.store_dir / image_id
    key_id = assert_luks_image(result.image, len(data), stored)
    assert unlocked(stored, barbican_km.get_key(key_id), len(data)) == data
    assert staging_files(glance) == []


def test_delete_ends_with_the_consumer_removed_and_the_per_image_key_deleted(
        glance: RealGlance, client: GlanceClient, barbican_km: BarbicanKeyManager,
        tmp_path: Path) -> None:
    (tmp_path / "d.raw").write_bytes(plaintext(MiB))
    image_id, result = import_image(client, tmp_path / "d.raw")
    assert result.status == "active", result.task_message
    key_id = result.image["os_encrypt_key_id"]
    assert len(barbican_km.list_consumers(key_id)) == 1
    # What Glance's own delete of cinder_encryption_key_id (a plain DELETE) meets while the
    # image is still the key's consumer: Barbican 1.2 refuses it, the key stays
    with pytest.raises(KeyHasConsumersError):
        barbican_km.delete_key(key_id)
    client.delete_image(image_id)
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}
    log = glance.log_text()
    ours = log.index(f"deleted key {key_id} with image {image_id}")
    # Glance's attempt (images.py _delete_encryption_key) runs first, before image.delete is
    # notified, and only warns when it fails (here: castellan finds no Keystone)
    glances = re.search(f"WARNING glance.api.v2.images .* cinder encryption key {key_id}", log)
    assert glances is not None and glances.start() < ours

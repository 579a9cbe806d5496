"""End to end: a real Glance 33.0.0 with our plugin and delete hook, a real Barbican 23.0.0.

Each Glance runs from its own virtualenv (``tests/servers/glance.py``) with img-crypt installed
into it, so the plugin and the notifier driver are loaded by Glance itself through their entry
points. Every test checks an effect in the stored data or in Barbican: Glance only warns when a
plugin fails to load. Servers that cannot start fail these tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from img_crypt.cli import main
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from tests.servers.glance import GlanceClient, RealGlance, serve_file
from tests.support.e2e_glance import (
    PROJECT,
    MiB,
    decrypt_cli,
    import_image,
    inspect_json,
    plaintext,
    staging_files,
    start_glance,
)


@pytest.fixture(scope="module")
def glance(real_barbican: Any) -> Iterator[RealGlance]:
    server = start_glance(real_barbican.url)
    try:
        yield server
    finally:
        server.stop()


# --- import -----------------------------------------------------------------------------------


def test_glance_direct_import_is_stored_encrypted_and_decrypts(
        glance: RealGlance, client: GlanceClient, real_barbican: Any,
        barbican_km: BarbicanKeyManager, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = plaintext(6 * MiB + 12345)
    (tmp_path / "disk.raw").write_bytes(data)
    image_id, result = import_image(client, tmp_path / "disk.raw", disk_format="qcow2")
    assert (result.status, result.task_status) == ("active", "success"), result.task_message

    # The stored bytes are not the plaintext: the plugin ran inside Glance.
    stored = (glance.store_dir / image_id).read_bytes()
    assert stored != data and data[:4096] not in stored
    image = result.image
    assert image["container_format"] == "encrypted" and image["disk_format"] == "qcow2"
    assert image["size"] == len(stored)
    assert image["os_encrypt_format"] == "img-crypt-v1"
    assert image["os_encrypt_cipher"] == "AES-256-GCM"
    assert image["os_encrypt_key_deletion_policy"] == "on_image_deletion"
    assert image["os_decrypt_container_format"] == "bare"
    assert image["os_decrypt_size"] == str(len(data))
    key_id = image["os_encrypt_key_id"]

    # Our format, bound to this image, with the key slot of the Barbican KEK.
    downloaded = tmp_path / "downloaded.icr"
    assert client.download(image_id, downloaded) == len(stored)
    info = inspect_json(downloaded, capsys)
    assert info["image_id"] == image_id
    assert [(s["kind"], s["key_id"]) for s in info["key_slots"]] == [("barbican", key_id)]
    assert int(image["img_crypt_header_length"]) == info["header_size"]

    # Barbican lists the image as the key's one consumer; the key is named for the image.
    assert barbican_km.list_consumers(key_id) == [Consumer(service="image",
                                                           resource_type="image",
                                                           resource_id=image_id)]
    names = {k.key_id: k.name for k in barbican_km.list_keys()}
    assert (names[key_id] or "").startswith(f"img-crypt-image-{image_id}")

    # Download + img-crypt decrypt gives the original bytes; nothing is left in staging.
    assert decrypt_cli(downloaded, tmp_path / "out.raw", real_barbican.url, image_id) == 0
    assert (tmp_path / "out.raw").read_bytes() == data
    assert staging_files(glance) == []


def test_web_download_import_is_encrypted_the_same_way(
        glance: RealGlance, client: GlanceClient, real_barbican: Any,
        barbican_km: BarbicanKeyManager, tmp_path: Path) -> None:
    data = plaintext(3 * MiB + 1)
    (tmp_path / "web.raw").write_bytes(data)
    with serve_file(tmp_path / "web.raw") as url:
        image_id, result = import_image(client, tmp_path / "web.raw", method="web-download",
                                        uri=url)
    assert (result.status, result.task_status) == ("active", "success"), result.task_message
    assert (glance.store_dir / image_id).read_bytes()[:8] == b"\x89ICR\r\n\x1a\n"
    key_id = result.image["os_encrypt_key_id"]
    assert [c.resource_id for c in barbican_km.list_consumers(key_id)] == [image_id]
    client.download(image_id, tmp_path / "dl.icr")
    assert decrypt_cli(tmp_path / "dl.icr", tmp_path / "out", real_barbican.url, image_id) == 0
    assert (tmp_path / "out").read_bytes() == data
    assert staging_files(glance) == []


def test_delete_removes_the_consumer_and_the_per_image_key(
        glance: RealGlance, client: GlanceClient, barbican_km: BarbicanKeyManager,
        tmp_path: Path) -> None:
    (tmp_path / "d.raw").write_bytes(plaintext(MiB))
    image_id, result = import_image(client, tmp_path / "d.raw")
    key_id = result.image["os_encrypt_key_id"]
    assert len(barbican_km.list_consumers(key_id)) == 1
    client.delete_image(image_id)
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}
    assert f"deleted key {key_id} with image {image_id}" in glance.log_text()


# --- client-side encryption -------------------------------------------------------------------


def test_client_side_encrypted_upload_round_trips_and_delete_hook_cleans_up(
        glance: RealGlance, client: GlanceClient, real_barbican: Any,
        barbican_km: BarbicanKeyManager, tmp_path: Path) -> None:
    data = plaintext(2 * MiB + 7)
    (tmp_path / "c.raw").write_bytes(data)
    image_id = str(uuid.uuid4())
    key_id = barbican_km.create_key("img-crypt-image-client")
    assert main(["encrypt", str(tmp_path / "c.raw"), str(tmp_path / "c.icr"), "--kek", key_id,
                 "--key-manager", "barbican", "--barbican-url", real_barbican.url,
                 "--project-id", PROJECT, "--image-id", image_id]) == 0
    size = (tmp_path / "c.icr").stat().st_size
    client.create_image(id=image_id, name="client-side", disk_format="raw",
                        container_format="encrypted", os_encrypt_format="img-crypt-v1",
                        os_encrypt_key_id=key_id, os_encrypt_cipher="AES-256-GCM",
                        os_encrypt_key_deletion_policy="on_image_deletion",
                        os_decrypt_container_format="bare", os_decrypt_size=str(len(data)))
    client.stage(image_id, tmp_path / "c.icr")
    client.import_image(image_id)
    result = client.wait_import(image_id)
    assert (result.status, result.task_status) == ("active", "success"), result.task_message
    # The plugin left it as it was: same bytes, same key.
    assert (glance.store_dir / image_id).read_bytes() == (tmp_path / "c.icr").read_bytes()
    assert result.image["size"] == size and result.image["os_encrypt_key_id"] == key_id
    client.download(image_id, tmp_path / "dl.icr")
    assert decrypt_cli(tmp_path / "dl.icr", tmp_path / "out", real_barbican.url, image_id) == 0
    assert (tmp_path / "out").read_bytes() == data
    assert [c.resource_id for c in barbican_km.list_consumers(key_id)] == [image_id]
    client.delete_image(image_id)
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}


def test_client_side_data_bound_to_another_image_is_refused(
        glance: RealGlance, client: GlanceClient, real_barbican: Any,
        barbican_km: BarbicanKeyManager, tmp_path: Path) -> None:
    (tmp_path / "c.raw").write_bytes(plaintext(MiB))
    key_id = barbican_km.create_key("e2e-other")
    other = str(uuid.uuid4())
    assert main(["encrypt", str(tmp_path / "c.raw"), str(tmp_path / "c.icr"), "--kek", key_id,
                 "--key-manager", "barbican", "--barbican-url", real_barbican.url,
                 "--project-id", PROJECT, "--image-id", other]) == 0
    image = client.create_image(name="wrong-binding", disk_format="raw",
                                container_format="encrypted", os_encrypt_format="img-crypt-v1",
                                os_encrypt_key_id=key_id)
    client.stage(image["id"], tmp_path / "c.icr")
    client.import_image(image["id"])
    result = client.wait_import(image["id"])
    assert result.task_status == "failure" and result.status == "queued"
    assert other in result.task_message and image["id"] in result.task_message
    barbican_km.delete_key(key_id, force=True)


def test_client_side_encrypted_file_upload_bypasses_inspection_and_decrypts(
        glance: RealGlance, client: GlanceClient, real_barbican: Any,
        barbican_km: BarbicanKeyManager, tmp_path: Path) -> None:
    # PUT /v2/images/{id}/file: no plugin runs; container_format "encrypted" keeps Glance's
    # format inspection off the ciphertext, while disk_format still says qcow2.
    data = plaintext(MiB + 5)
    (tmp_path / "c.qcow2").write_bytes(data)
    image_id = str(uuid.uuid4())
    key_id = barbican_km.create_key(f"img-crypt-image-{image_id}")
    assert main(["encrypt", str(tmp_path / "c.qcow2"), str(tmp_path / "c.icr"), "--kek",
                 key_id, "--key-manager", "barbican", "--barbican-url", real_barbican.url,
                 "--project-id", PROJECT, "--image-id", image_id]) == 0
    client.create_image(id=image_id, name="uploaded", disk_format="qcow2",
                        container_format="encrypted", os_encrypt_format="img-crypt-v1",
                        os_encrypt_key_id=key_id,
                        os_encrypt_key_deletion_policy="on_image_deletion",
                        os_decrypt_container_format="bare", os_decrypt_size=str(len(data)))
    client.upload(image_id, tmp_path / "c.icr")
    image = client.get_image(image_id)
    assert image is not None and image["status"] == "active"
    client.download(image_id, tmp_path / "dl.icr")
    assert decrypt_cli(tmp_path / "dl.icr", tmp_path / "out", real_barbican.url, image_id) == 0
    assert (tmp_path / "out").read_bytes() == data
    client.delete_image(image_id)
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}

"""End to end: every upload route registers its keys, and PUT /file stores no silent plaintext.

A real Glance 33.0.0 (our plugin, the ``img_crypt`` notifier driver, the ``img_crypt_upload``
paste filter and the ``img_crypt:upload`` policy line, all loaded through their entry points)
on a real Barbican 23.0.0. ``PUT /v2/images/{id}/file`` is what ``openstack image create
--file``, Cinder's upload-to-image and Nova's snapshots do; import plugins never see it.
"""

from __future__ import annotations

import binascii
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from img_crypt import envelope, luks
from img_crypt.cli import main
from img_crypt.format import MAC_SIZE, WRAP_NONCE_SIZE, WRAPPED_DEK_SIZE, Header, KeySlot
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from tests.servers.glance import GlanceClient, GlanceError, RealGlance
from tests.support.e2e_glance import PROJECT, plaintext, start_guarded_glance

KiB = 1 << 10
LUKS2_MAGIC = b"LUKS\xba\xbe\x00\x02"


@pytest.fixture(scope="module")
def glance(real_barbican: Any) -> Iterator[RealGlance]:
    server = start_guarded_glance(real_barbican.url)
    try:
        yield server
    finally:
        server.stop()


def consumer(image_id: str) -> Consumer:
    return Consumer(service="image", resource_type="image", resource_id=image_id)


def ours(data: bytes, km: BarbicanKeyManager, key_id: str, image_id: str) -> bytes:
    out = io.BytesIO()
    kek = envelope.Kek(km.kind, key_id, km.get_key(key_id))
    envelope.encrypt(data, out, [kek], image_id=uuid.UUID(image_id))
    return out.getvalue()


def luks1(data: bytes, km: BarbicanKeyManager, key_id: str) -> bytes:
    out = io.BytesIO()
    luks.encrypt(data, out, binascii.hexlify(km.get_key(key_id)))
    return out.getvalue()


def forged_header(key_id: str, image_id: str) -> bytes:
    """A header that parses, is bound to the image and names an existing key, unsealed.

    Its wrapped DEK and MAC are random: no one who holds the key made it.
    """
    slot = KeySlot(kind="barbican", key_id=key_id, nonce=os.urandom(WRAP_NONCE_SIZE),
                   wrapped_dek=os.urandom(WRAPPED_DEK_SIZE))
    header = Header(slots=(slot,), image_id=uuid.UUID(image_id))
    return replace(header, mac=os.urandom(MAC_SIZE)).encode()


def ours_image(client: GlanceClient, key_id: str, policy: str = "on_image_deletion",
               fmt: str = "img-crypt-v1") -> str:
    image = client.create_image(name="put", disk_format="raw", container_format="encrypted",
                                os_encrypt_format=fmt, os_encrypt_key_id=key_id,
                                os_encrypt_key_deletion_policy=policy)
    return str(image["id"])


def refused(client: GlanceClient, image_id: str, data: bytes) -> GlanceError:
    with pytest.raises(GlanceError) as caught:
        client.upload(image_id, data)
    image = client.get_image(image_id)
    assert image is not None and image["status"] == "queued"
    return caught.value


# --- no silent plaintext ------------------------------------------------------------------------

def test_put_of_plaintext_is_refused_with_a_reason_and_the_image_stays_queued(
        client: GlanceClient, glance: RealGlance) -> None:
    image_id = client.create_image(name="plain", disk_format="raw",
                                   container_format="bare")["id"]
    error = refused(client, image_id, plaintext(64 * KiB))
    assert error.status == 400
    assert "is not encrypted (no os_encrypt_format)" in error.body
    assert "import" in error.body
    assert not (glance.store_dir / image_id).exists()


def test_policy_line_alone_refuses_plaintext_put(real_barbican: Any) -> None:
    server = start_guarded_glance(real_barbican.url, guard=False)
    try:
        with GlanceClient(server.url, PROJECT) as client:
            image_id = client.create_image(name="plain", disk_format="raw",
                                           container_format="bare")["id"]
            assert refused(client, image_id, plaintext(16 * KiB)).status == 403
            assert "upload_image refused by policy: image " + image_id in server.log_text()
    finally:
        server.stop()


def test_forged_header_in_front_of_plaintext_is_refused(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    key_id = barbican_km.create_key("put-forged")
    image_id = ours_image(client, key_id)
    forged = forged_header(key_id, image_id)
    error = refused(client, image_id, forged + plaintext(64 * KiB))
    assert error.status == 400
    assert "does not start with a valid header" in error.body
    assert barbican_km.list_consumers(key_id) == []


def test_our_file_bound_to_another_image_is_refused(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    key_id = barbican_km.create_key("put-other")
    image_id = ours_image(client, key_id)
    error = refused(client, image_id,
                    ours(plaintext(32 * KiB), barbican_km, key_id, str(uuid.uuid4())))
    assert "does not start with a valid header" in error.body and "bound to" in error.body


def test_our_file_whose_key_is_not_the_claimed_one_is_refused(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    claimed, used = barbican_km.create_key("put-claimed"), barbican_km.create_key("put-used")
    image_id = ours_image(client, claimed)
    error = refused(client, image_id, ours(plaintext(32 * KiB), barbican_km, used, image_id))
    assert "does not start with a valid header" in error.body


@pytest.mark.parametrize("fmt", ["Luks", "LUKSv1 ", " img-crypt-v1", "IMG-CRYPT-V1", "aes"])
def test_os_encrypt_format_outside_the_accepted_list_is_refused(
        client: GlanceClient, barbican_km: BarbicanKeyManager, fmt: str) -> None:
    key_id = barbican_km.create_key("put-format")
    image_id = ours_image(client, key_id, fmt=fmt)
    error = refused(client, image_id, luks1(plaintext(4 * KiB), barbican_km, key_id))
    assert "is not accepted here (accepted: img-crypt-v1, LUKSv1, luks)" in error.body


@pytest.mark.parametrize("data", [b"\0" * 4096, LUKS2_MAGIC + b"\0" * 4096],
                         ids=["plaintext", "luks2"])
def test_luks_claim_without_a_luks1_header_is_refused(
        client: GlanceClient, barbican_km: BarbicanKeyManager, data: bytes) -> None:
    key_id = barbican_km.create_key("put-luks-bad")
    image_id = ours_image(client, key_id, fmt="LUKSv1")
    error = refused(client, image_id, data)
    assert "says LUKS, but its data" in error.body


# --- accepted uploads are consumers of their keys, and delete follows the policy ---------------

def test_put_of_our_file_is_accepted_registered_and_its_key_deleted_with_it(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    key_id = barbican_km.create_key("put-ours")
    image_id = ours_image(client, key_id)
    client.upload(image_id, ours(plaintext(256 * KiB), barbican_km, key_id, image_id))
    image = client.get_image(image_id)
    assert image is not None and image["status"] == "active"
    assert barbican_km.list_consumers(key_id) == [consumer(image_id)]
    client.delete_image(image_id)
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}


def test_put_of_luks1_is_accepted_registered_and_do_not_delete_keeps_the_key(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    key_id = barbican_km.create_key("put-luks")
    image = client.create_image(name="luks", disk_format="raw", container_format="bare",
                                os_encrypt_format="LUKSv1", os_encrypt_key_id=key_id,
                                os_encrypt_key_deletion_policy="do_not_delete")
    client.upload(image["id"], luks1(plaintext(64 * KiB), barbican_km, key_id))
    stored = client.get_image(image["id"])
    assert stored is not None and stored["status"] == "active"
    assert barbican_km.list_consumers(key_id) == [consumer(image["id"])]
    client.delete_image(image["id"])
    assert barbican_km.list_consumers(key_id) == []
    assert barbican_km.key_info(key_id).key_id == key_id


def test_cinder_upload_to_image_is_registered_and_its_key_deleted_on_image_deletion(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    """What Cinder does: create with its two properties, then PUT the volume's LUKS bytes."""
    key_id = barbican_km.create_key("cinder-volume-clone")
    image = client.create_image(name="volume", disk_format="raw", container_format="bare",
                                cinder_encryption_key_id=key_id,
                                cinder_encryption_key_deletion_policy="on_image_deletion")
    client.upload(image["id"], luks1(plaintext(64 * KiB), barbican_km, key_id))
    assert barbican_km.list_consumers(key_id) == [consumer(image["id"])]
    client.delete_image(image["id"])
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}


def test_import_of_a_client_side_luks1_image_is_registered_by_the_upload_events(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    """The plugin passes an image that says it is encrypted through; the events register it."""
    key_id = barbican_km.create_key("import-luks")
    image = client.create_image(name="luks-import", disk_format="raw", container_format="bare",
                                os_encrypt_format="LUKSv1", os_encrypt_key_id=key_id)
    client.stage(image["id"], luks1(plaintext(64 * KiB), barbican_km, key_id))
    client.import_image(image["id"])
    result = client.wait_import(image["id"])
    assert result.status == "active", result.task_message
    assert barbican_km.list_consumers(key_id) == [consumer(image["id"])]


def test_shared_key_stays_when_one_of_its_images_is_deleted(
        client: GlanceClient, barbican_km: BarbicanKeyManager) -> None:
    key_id = barbican_km.create_key("put-shared")
    first, second = ours_image(client, key_id), ours_image(client, key_id)
    for image_id in (first, second):
        client.upload(image_id, ours(plaintext(16 * KiB), barbican_km, key_id, image_id))
    client.delete_image(first)
    assert barbican_km.list_consumers(key_id) == [consumer(second)]
    client.delete_image(second)
    assert key_id not in {k.key_id for k in barbican_km.list_keys()}


# --- reconcile adds what a lost notification did not ------------------------------------------

def test_reconcile_adds_the_consumer_a_lost_upload_event_left_out(
        client: GlanceClient, glance: RealGlance, real_barbican: Any,
        barbican_km: BarbicanKeyManager, capsys: pytest.CaptureFixture[str]) -> None:
    key_id = barbican_km.create_key("put-lost")
    image_id = ours_image(client, key_id)
    client.upload(image_id, ours(plaintext(16 * KiB), barbican_km, key_id, image_id))
    barbican_km.remove_consumer(key_id, consumer(image_id))  # the event was lost
    argv = ["reconcile", "--key-manager", "barbican", "--barbican-url", real_barbican.url,
            "--project-id", PROJECT, "--glance-url", glance.url]
    assert main(argv) == 0  # the default grace period: the image is too young
    assert barbican_km.list_consumers(key_id) == []
    capsys.readouterr()
    assert main([*argv, "--grace-period", "0s"]) == 0
    assert f"added consumer image/{image_id} to key {key_id}" in capsys.readouterr().out
    assert barbican_km.list_consumers(key_id) == [consumer(image_id)]

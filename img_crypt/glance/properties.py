"""The ``os_encrypt_*`` image properties: what an encrypted image says about itself.

Pure: no Glance or oslo import, so the CLI, the plugin and the delete hook share one reading
of them. Names follow the upstream "standardized image encryption" specs (see the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

FORMAT_NAME = "img-crypt-v1"
"""Our value of ``os_encrypt_format``."""
LUKS_FORMAT_NAME = "LUKSv1"
"""``os_encrypt_format`` of a raw LUKS1 image (the upstream specs' value; ``luks`` is read too)."""

FORMAT = "os_encrypt_format"
KEY_ID = "os_encrypt_key_id"
CIPHER = "os_encrypt_cipher"
DELETION_POLICY = "os_encrypt_key_deletion_policy"
DECRYPT_CONTAINER_FORMAT = "os_decrypt_container_format"
DECRYPT_SIZE = "os_decrypt_size"
CINDER_KEY_ID = "cinder_encryption_key_id"
CINDER_DELETION_POLICY = "cinder_encryption_key_deletion_policy"
HEADER_LENGTH = "img_crypt_header_length"
"""The wrapped DEK is in the first ``img_crypt_header_length`` bytes of the stored data."""

CIPHER_NAME = "AES-256-GCM"
ENCRYPTED_CONTAINER_FORMAT = "encrypted"

Policy = Literal["on_image_deletion", "do_not_delete"]
ON_IMAGE_DELETION: Policy = "on_image_deletion"
DO_NOT_DELETE: Policy = "do_not_delete"

LUKS_FORMAT_ALIAS = "luks"
"""The other ``os_encrypt_format`` value for LUKS1 (a Nova prototype's), accepted exactly."""
CLIENT_FORMATS = (FORMAT_NAME, LUKS_FORMAT_NAME, LUKS_FORMAT_ALIAS)
"""``os_encrypt_format`` values an upload (``PUT /file``) may claim without further options."""


def key_claims(properties: Mapping[str, object]) -> dict[str, Policy]:
    """The keys an image names, each with the deletion policy that governs it.

    ``os_encrypt_key_id`` (any ``os_encrypt_format``) goes with
    ``os_encrypt_key_deletion_policy``, ``cinder_encryption_key_id`` with
    ``cinder_encryption_key_deletion_policy``. A key named by both is deleted only when both
    policies say so (the safe reading of a contradiction).
    """
    claims: dict[str, Policy] = {}
    pairs = ((KEY_ID, DELETION_POLICY), (CINDER_KEY_ID, CINDER_DELETION_POLICY))
    for key_name, policy_name in pairs:
        key_id = properties.get(key_name)
        if not isinstance(key_id, str) or not key_id.strip():
            continue
        policy = _policy(properties.get(policy_name))
        claims[key_id] = DO_NOT_DELETE if claims.get(key_id) == DO_NOT_DELETE else policy
    return claims


def is_encrypted(properties: Mapping[str, object]) -> bool:
    """True when the image says it is encrypted: ``os_encrypt_format`` is set."""
    return properties.get(FORMAT) not in (None, "")


def is_luks(properties: Mapping[str, object]) -> bool:
    """True when ``os_encrypt_format`` says LUKS1 (``LUKSv1`` or ``luks``, any case)."""
    return str(properties.get(FORMAT, "")).strip().lower() in ("luksv1", "luks")


def stray_encryption_properties(properties: Mapping[str, object]) -> list[str]:
    """``os_encrypt_*`` properties set on an image that does not say its format (ambiguous)."""
    if is_encrypted(properties):
        return []
    return sorted(name for name, value in properties.items()
                  if name.startswith("os_encrypt_") and value not in (None, ""))


def deletion_policy(properties: Mapping[str, object]) -> Policy:
    """The image's key deletion policy; anything unknown means keep the key.

    ``on_image_deletion`` (Cinder's value) and ``True`` (the Glance 2025.1 spec's value) both
    mean delete; missing or any other value means do nothing, the safe choice.
    """
    return _policy(properties.get(DELETION_POLICY))


def _policy(value: object) -> Policy:
    text = str(value if value is not None else "").strip().lower()
    return ON_IMAGE_DELETION if text in (ON_IMAGE_DELETION, "true") else DO_NOT_DELETE


def encrypted_properties(*, header_size: int, key_id: str, policy: Policy,
                         plaintext_size: int, container_format: str) -> dict[str, str]:
    """The properties of an image whose data became an img-crypt file."""
    return {
        FORMAT: FORMAT_NAME,
        CIPHER: CIPHER_NAME,
        KEY_ID: key_id,
        DELETION_POLICY: policy,
        DECRYPT_CONTAINER_FORMAT: container_format,
        DECRYPT_SIZE: str(plaintext_size),
        HEADER_LENGTH: str(header_size),
    }


def luks_properties(*, key_id: str, policy: Policy, plaintext_size: int) -> dict[str, str]:
    """The properties of an image whose data became a raw LUKS1 container.

    The ``cinder_encryption_*`` pair is what today's Cinder reads to clone the key.
    """
    return {
        FORMAT: LUKS_FORMAT_NAME,
        KEY_ID: key_id,
        DELETION_POLICY: policy,
        DECRYPT_SIZE: str(plaintext_size),
        CINDER_KEY_ID: key_id,
        CINDER_DELETION_POLICY: policy,
    }

"""May ``PUT /v2/images/{id}/file`` store this image's data? The "no silent plaintext" rule.

With ``[image_encryption] require_encryption = True`` an upload is accepted only for an image
that says how it is encrypted, and only with data that backs the claim:

- ``os_encrypt_format`` exactly ``img-crypt-v1``: the data starts with an img-crypt header
  bound to this image whose slot for ``os_encrypt_key_id`` opens with that key (the DEK
  unwraps and the header MAC verifies: a forged header in front of plaintext fails);
- ``os_encrypt_format`` exactly ``LUKSv1`` (or ``luks``), or no ``os_encrypt_format`` but a
  ``cinder_encryption_key_id`` (Cinder's upload-to-image of an encrypted volume): the data
  starts with a LUKS version 1 header (oslo.utils' format inspector, as Glance's) and the key
  exists;
- any other ``os_encrypt_format`` only when the operator lists it, exactly, in
  ``[image_encryption] accepted_formats`` (its data cannot be checked);
- nothing else: no ``os_encrypt_format`` and no Cinder key is plaintext, refused.

:func:`property_refusal` is the part that needs no data (the ``img_crypt:upload`` policy check
uses it); :func:`data_refusal` the part that reads the first bytes (the upload guard).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Collection, Mapping

from oslo_utils.imageutils import format_inspector

from img_crypt import envelope
from img_crypt.errors import ImgCryptError
from img_crypt.format import MAX_HEADER
from img_crypt.glance import properties as props
from img_crypt.keys.base import KeyManager

HEAD_SIZE = MAX_HEADER
"""Bytes of the data the checks need at most (an img-crypt header; LUKS needs 592)."""
LUKS_HEAD = 592

PLAINTEXT = ("image {image} is not encrypted (no os_encrypt_format) and this Glance stores only "
             "encrypted images: import it (POST /v2/images/{image}/import encrypts it) or "
             "encrypt it first (img-crypt encrypt --image-id {image}) and set os_encrypt_*")


def _accepted(extra: Collection[str]) -> tuple[str, ...]:
    return (*props.CLIENT_FORMATS, *extra)


def property_refusal(image_id: str, properties: Mapping[str, object],
                     accepted: Collection[str] = ()) -> str | None:
    """Why the image's properties alone forbid an upload; None when they allow it."""
    claimed = properties.get(props.FORMAT)
    if claimed in (None, ""):
        if properties.get(props.CINDER_KEY_ID) in (None, ""):
            return PLAINTEXT.format(image=image_id)
        return None
    if claimed not in _accepted(accepted):
        return (f"image {image_id}: os_encrypt_format {str(claimed)!r} is not accepted here "
                f"(accepted: {', '.join(_accepted(accepted))})")
    if claimed in props.CLIENT_FORMATS and properties.get(props.KEY_ID) in (None, ""):
        return f"image {image_id}: os_encrypt_format {claimed} needs os_encrypt_key_id"
    return None


def data_refusal(image_id: str, properties: Mapping[str, object], head: bytes,
                 manager: KeyManager) -> str | None:
    """Why the first bytes ``head`` of the data do not back the claim; None when they do.

    Call it after :func:`property_refusal` allowed the image. ``manager`` acts for the
    uploading user: the keys the image names must exist for them.
    """
    claimed = properties.get(props.FORMAT)
    if claimed == props.FORMAT_NAME:
        return _ours_refusal(image_id, str(properties[props.KEY_ID]), head, manager)
    if claimed in (props.LUKS_FORMAT_NAME, props.LUKS_FORMAT_ALIAS):
        return _luks_refusal(image_id, str(properties[props.KEY_ID]), head, manager)
    if claimed in (None, ""):
        return _luks_refusal(image_id, str(properties[props.CINDER_KEY_ID]), head, manager)
    return None  # an operator-accepted format: nothing to check it against


def _ours_refusal(image_id: str, key_id: str, head: bytes, manager: KeyManager) -> str | None:
    def lookup(kind: str, slot_key: str) -> bytes | None:
        return manager.get_key(slot_key) if (kind, slot_key) == (manager.kind, key_id) else None

    try:
        image = uuid.UUID(image_id)
        envelope.authenticate_header(io.BytesIO(head), lookup, image_id=image)
    except (ImgCryptError, ValueError) as e:
        reason = str(e) or "the header does not authenticate with that key"
        return (f"image {image_id} says img-crypt-v1 with key {key_id}, but its data does not "
                f"start with a valid header for it: {reason}")
    return None


def _luks_refusal(image_id: str, key_id: str, head: bytes, manager: KeyManager) -> str | None:
    inspector = format_inspector.LUKSInspector()
    inspector.eat_chunk(head[:LUKS_HEAD])
    try:
        if len(head) < LUKS_HEAD or not inspector.format_match:
            return f"image {image_id} says LUKS, but its data does not start with a LUKS header"
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as e:
        return f"image {image_id} says LUKS, but its data is not LUKS version 1: {e}"
    try:
        manager.key_info(key_id)
    except ImgCryptError as e:
        return f"image {image_id} names key {key_id}, which cannot be used: {e}"
    return None

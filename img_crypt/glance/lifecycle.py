"""What happens to an encrypted image's key when the image is deleted.

One handler, :func:`on_image_delete`, for the in-Glance notifier driver, img-crypt-listener and
(by the same rules) ``img-crypt reconcile``. It is idempotent: a repeated or late notification
finds the consumer already gone and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from img_crypt.errors import (
    ConsumerNotFoundError,
    ImgCryptError,
    KeyHasConsumersError,
    KeyNotFoundError,
    UnavailableError,
)
from img_crypt.glance import properties as props
from img_crypt.keys.base import Consumer, KeyManager

LOG = logging.getLogger("img_crypt.glance.lifecycle")

DELETE_EVENT = "image.delete"


@dataclass(frozen=True)
class Outcome:
    """What the handler did for one deleted image."""

    image_id: str
    key_id: str
    consumer_removed: bool
    key_deleted: bool
    note: str = ""


def on_image_delete(image: Mapping[str, Any], manager_for: Callable[[str | None], KeyManager],
                    *, service: str) -> Outcome | None:
    """Unregister a deleted image from its key, then delete the key if its policy says so.

    The key is deleted only after this call removed the image's consumer record, or when the
    key is the one the plugin made for this very image (its name says so) and no consumer is
    left: image properties are user-writable, so naming someone else's key must not delete it.

    ``image`` is the ``image.delete`` payload (``id``, ``owner``, ``properties``);
    ``manager_for(owner)`` gives a key manager acting for the image's project. Images without
    ``os_encrypt_key_id`` are ignored (None). Key-manager errors other than "already gone"
    propagate, so a listener can retry.
    """
    properties = image.get("properties") or {}
    key_id = properties.get(props.KEY_ID)
    if not key_id:
        return None
    image_id = str(image["id"])
    manager = manager_for(image.get("owner"))
    consumer = Consumer(service=service, resource_type="image", resource_id=image_id)
    try:
        manager.remove_consumer(key_id, consumer)
    except ConsumerNotFoundError:
        # A repeated notification, or an image never registered: the properties alone never
        # delete a key. Only the key's own name can still prove it was this image's: a
        # redelivery after a removal whose answer was lost, or whose key delete failed.
        if (props.deletion_policy(properties) == props.ON_IMAGE_DELETION
                and _made_for(manager, key_id, image_id)):
            note = _delete_key(manager, key_id, image_id)
            return Outcome(image_id, key_id, False, not note, note)
        return Outcome(image_id, key_id, False, False, "kept: the image was not a consumer")
    except KeyNotFoundError:
        return Outcome(image_id, key_id, False, False, "the key was already deleted")
    if props.deletion_policy(properties) != props.ON_IMAGE_DELETION:
        return Outcome(image_id, key_id, True, False, "kept: policy do_not_delete")
    try:
        note = _unsafe_to_delete(manager, key_id, image_id) or _delete_key(manager, key_id,
                                                                           image_id)
    except UnavailableError:
        _restore(manager, key_id, consumer)
        raise
    return Outcome(image_id, key_id, True, not note, note)


def _made_for(manager: KeyManager, key_id: str, image_id: str) -> bool:
    """True when ``key_id`` is the per-image key the plugin made for this image to go with it.

    Its name (``img-crypt-image-<image id>``, see :func:`props.image_of_key`) is set when the
    key is created, from the image id and the policy; another image's properties can name the
    key but not rename it.
    """
    try:
        name = manager.key_info(key_id).name
    except KeyNotFoundError:
        return False
    return props.image_of_key(name) == image_id


def _restore(manager: KeyManager, key_id: str, consumer: Consumer) -> None:
    """Put back the consumer this call removed, before it fails so that it is retried.

    The removal was the proof that the image used the key; without it the retry would keep
    the key forever (or until ``img-crypt reconcile``).
    """
    try:
        manager.add_consumer(key_id, consumer)
    except ImgCryptError as e:
        LOG.warning("image %s: could not put its consumer back on key %s (%s); a retry will "
                    "not delete the key (img-crypt reconcile deletes a per-image key)",
                    consumer.resource_id, key_id, e)


def _unsafe_to_delete(manager: KeyManager, key_id: str, image_id: str) -> str:
    """Why the key must be kept although its policy says delete; "" when it may go.

    Where the key manager cannot refuse a delete atomically (Barbican below microversion
    1.2 deletes a secret *with* its consumers), "no consumers left, delete" is two steps,
    and an import registering on the key between them would store an image whose key is
    gone. Only a per-image key (named ``img-crypt-image-...``, made by the plugin for one
    image) has no such concurrent registrant; any other key (the shared ``kek_id``, a
    client's key) is kept there, for an operator to delete once nothing uses it.
    """
    if manager.delete_is_atomic:
        return ""
    try:
        name = manager.key_info(key_id).name or ""
    except KeyNotFoundError:
        return "the key was already deleted"
    if name.startswith(props.PER_IMAGE_KEY_PREFIX):
        return ""
    LOG.warning("key %s of deleted image %s kept: it may be shared, and this key manager "
                "cannot delete it without racing concurrent imports (Barbican below "
                "microversion 1.2); delete it by hand once no image uses it", key_id, image_id)
    return "kept: a shared key cannot be deleted safely below Barbican microversion 1.2"


def _delete_key(manager: KeyManager, key_id: str, image_id: str) -> str:
    """Delete the key unless consumers remain; "" when deleted, else why not."""
    try:
        manager.delete_key(key_id)
    except KeyHasConsumersError:
        LOG.warning("key %s of deleted image %s kept: other images still use it", key_id,
                    image_id)
        return "kept: other consumers remain"
    except KeyNotFoundError:
        return "the key was already deleted"
    LOG.info("deleted key %s with image %s", key_id, image_id)
    return ""

"""What happens to an encrypted image's key when the image is deleted.

One handler, :func:`on_image_delete`, for the in-Glance notifier driver and img-crypt-listener;
whether the key may go is :mod:`img_crypt.retention`'s rule, which ``img-crypt reconcile``
shares. It is idempotent: a repeated or late notification finds the consumer already gone and
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from img_crypt import retention
from img_crypt.errors import (
    ConsumerNotFoundError,
    ImgCryptError,
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
    more: tuple[Outcome, ...] = ()
    """The outcomes of the image's other keys (a ``cinder_encryption_key_id`` of its own)."""


def on_image_delete(image: Mapping[str, Any], manager_for: Callable[[str | None], KeyManager],
                    *, service: str, configured: Collection[str] = ()) -> Outcome | None:
    """Unregister a deleted image from its keys, then delete each key :mod:`retention` lets go.

    ``image`` is the ``image.delete`` payload (``id``, ``owner``, ``properties``);
    ``manager_for(owner)`` gives a key manager acting for the image's project; ``configured``
    are the key ids the operator configured (the shared ``kek_id``): their consumer is removed,
    the key never deleted, whatever the image's properties claim. The keys are the image's
    ``os_encrypt_key_id`` (any ``os_encrypt_format``) and ``cinder_encryption_key_id``, each
    under its own deletion policy (:func:`~img_crypt.glance.properties.key_claims`); the
    outcome is the first key's, with the others' in :attr:`Outcome.more`. Images naming no key
    are ignored (None). Key-manager errors other than "already gone" propagate, so a listener
    can retry.
    """
    claims = props.key_claims(image.get("properties") or {})
    if not claims:
        return None
    image_id = str(image["id"])
    manager = manager_for(image.get("owner"))
    consumer = Consumer(service=service, resource_type="image", resource_id=image_id)
    outcomes = [_release(manager, consumer, key_id, policy == props.ON_IMAGE_DELETION,
                         configured) for key_id, policy in claims.items()]
    return replace(outcomes[0], more=tuple(outcomes[1:]))


def _release(manager: KeyManager, consumer: Consumer, key_id: str, policy_deletes: bool,
             configured: Collection[str]) -> Outcome:
    """Remove the deleted image's consumer from one key, then delete the key if it may go."""
    image_id = consumer.resource_id
    try:
        manager.remove_consumer(key_id, consumer)
        removed = True
    except ConsumerNotFoundError:
        # A repeated notification, or an image never registered: only the key's own name can
        # still prove it was this image's (a redelivery after a removal whose answer was lost)
        removed = False
    except KeyNotFoundError:
        return Outcome(image_id, key_id, False, False, retention.GONE)
    try:
        note = retention.why_keep(manager, key_id, image_id=image_id, was_consumer=removed,
                                  policy_deletes=policy_deletes, configured=configured) \
            or retention.delete(manager, key_id)
    except UnavailableError:
        if removed:
            _restore(manager, key_id, consumer)
        raise
    if note == retention.IN_USE:
        LOG.warning("key %s of deleted image %s kept: other images still use it", key_id,
                    image_id)
    elif not note:
        LOG.info("deleted key %s with image %s", key_id, image_id)
    return Outcome(image_id, key_id, removed, not note, note)


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

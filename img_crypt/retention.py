"""May this key be deleted now, and why not: the one rule of the delete hook and ``reconcile``.

Pure: it talks to a key manager through :class:`~img_crypt.keys.base.KeyManager` only. Who
asks brings what they know (the image that is gone, whether its consumer record was there,
what the image's deletion policy claims); the rule weighs it:

1. A key the operator configured (Glance's ``[image_encryption] kek_id``) is never deleted:
   configuration is authority, image properties are claims anyone who can edit the image
   makes.
2. Without proof that the gone image used the key (its consumer record), only the key's own
   name can say it was this image's: ``img-crypt-image-<image id>`` (see
   :mod:`img_crypt.keys.naming`).
3. A policy of ``do_not_delete`` keeps the key. With no policy to read (``reconcile``: the
   image is gone), only a per-image key's name says it goes with its image.
4. Where the key manager cannot refuse a delete atomically (Barbican below microversion 1.2
   deletes a secret *with* its consumers), only a per-image key may go: any other may be
   shared, and an import registering between the check and the delete would lose its key.
5. The delete itself never forces: a consumer that is still there, or that appeared
   meanwhile, keeps the key.

And for ``reconcile``, which acts on what Glance does *not* have: a consumer record or a
per-image key younger than the grace period is left alone, since its image may not exist yet
(a client encrypts with ``--image-id`` before it creates the image). A record without a time
counts as young.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from img_crypt.errors import KeyHasConsumersError, KeyNotFoundError
from img_crypt.keys.base import KeyInfo, KeyManager
from img_crypt.keys.naming import PER_IMAGE_KEY_PREFIX, image_of_key

LOG = logging.getLogger("img_crypt.retention")

DEFAULT_GRACE = timedelta(days=7)
"""How long ``reconcile`` leaves a consumer or a per-image key whose image Glance lacks."""

CONFIGURED = "kept: it is the key configured for every image ([image_encryption] kek_id)"
NOT_A_CONSUMER = "kept: the image was not a consumer"
POLICY_KEEPS = "kept: policy do_not_delete"
NOT_PER_IMAGE = f"kept: not a per-image key (name does not start with {PER_IMAGE_KEY_PREFIX!r})"
NOT_ATOMIC = "kept: a shared key cannot be deleted safely below Barbican microversion 1.2"
GONE = "the key was already deleted"
IN_USE = "kept: other consumers remain"
YOUNG_REASON = "younger than the grace period; its image may not exist yet"
YOUNG = f"kept: {YOUNG_REASON}"


def why_keep(manager: KeyManager, key_id: str, *, image_id: str, was_consumer: bool,
             policy_deletes: bool | None, info: KeyInfo | None = None,
             configured: Collection[str] = ()) -> str:
    """Why ``key_id`` must stay now that image ``image_id`` is gone; "" when it may go.

    ``was_consumer``: the image's consumer record was on the key (this caller removed it).
    ``policy_deletes``: what the image's deletion policy says (None: nothing to read).
    ``info``: the key's metadata when the caller has it (else it is fetched if needed).
    ``configured``: key ids the operator configured, never deleted.
    """
    if key_id in configured:
        return CONFIGURED
    if policy_deletes is False:
        return POLICY_KEEPS if was_consumer else NOT_A_CONSUMER
    try:
        name = (info or manager.key_info(key_id)).name
    except KeyNotFoundError:
        return GONE
    per_image = image_of_key(name)
    if not was_consumer:
        return "" if per_image == image_id else NOT_A_CONSUMER
    return "" if per_image is not None else _why_keep_other(manager, key_id, image_id,
                                                            policy_deletes)


def _why_keep_other(manager: KeyManager, key_id: str, image_id: str,
                    policy_deletes: bool | None) -> str:
    """Rules 3 and 4 for a key whose name is not a per-image key's."""
    if policy_deletes is None:
        return NOT_PER_IMAGE
    if not manager.delete_is_atomic:
        LOG.warning("key %s of deleted image %s kept: it may be shared, and this key manager "
                    "cannot delete it without racing concurrent imports (Barbican below "
                    "microversion 1.2); delete it by hand once no image uses it", key_id,
                    image_id)
        return NOT_ATOMIC
    return ""


def delete(manager: KeyManager, key_id: str) -> str:
    """Delete a key that :func:`why_keep` let go, never by force; "" when deleted, else why not."""
    try:
        manager.delete_key(key_id, force=False)
    except KeyHasConsumersError:
        return IN_USE
    except KeyNotFoundError:
        return GONE
    return ""


def is_young(created: datetime | None, *, now: datetime, grace: timedelta) -> bool:
    """True when a record made at ``created`` is within ``grace`` of ``now`` (or has no time)."""
    if created is None:
        return True
    if created.tzinfo is None:  # a naive time from a key manager is UTC
        created = created.replace(tzinfo=UTC)
    return now - created < grace

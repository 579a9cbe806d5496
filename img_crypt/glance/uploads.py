"""What happens to an encrypted image's keys when its data lands, by any route.

Glance sends ``image.upload`` (each store written: import, ``PUT /file``, copy-image) and
``image.activate`` (the image became active) with the image as payload, properties included.
An active image naming ``os_encrypt_key_id`` (any ``os_encrypt_format``) or
``cinder_encryption_key_id`` is registered as a consumer of each key it names, through
:class:`~img_crypt.enrollment.Enrollment` (the same rules as the import plugin and the CLI):
already registered is left as it is, so a repeated event, or an image the plugin registered
itself, changes nothing (and costs no request when the plugin registered it in this process
moments ago: :mod:`.recent`). The same handler serves the in-Glance notifier driver and
img-crypt-listener; ``img-crypt reconcile`` repairs a lost event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from img_crypt.enrollment import Enrollment
from img_crypt.errors import ForbiddenError, KeyNotFoundError
from img_crypt.glance import properties as props
from img_crypt.glance import recent
from img_crypt.keys.base import Consumer, KeyManager

LOG = logging.getLogger("img_crypt.glance.uploads")

UPLOAD_EVENTS = ("image.upload", "image.activate")
"""The Glance notifications after which an image's data is stored."""
MISSING_KEY = "no such key in the image owner's project"
REFUSED_KEY = ("Barbican refused these credentials (HTTP 403): another project's key, or "
               "credentials without rights on the owner's keys (img-crypt-listener's service "
               "user under Barbican's default policies)")


@dataclass(frozen=True)
class Registration:
    """What the handler did for one uploaded image."""

    image_id: str
    registered: tuple[str, ...]
    """Key ids that now have the image as consumer."""
    missing: tuple[str, ...] = ()
    """Key ids the image names that the owner's project does not have."""
    refused: tuple[str, ...] = ()
    """Key ids whose consumers Barbican would not let these credentials read or change."""


def register_image(image: Mapping[str, Any], manager: KeyManager, *,
                   service: str) -> Registration | None:
    """Register image ``image`` (Glance's image payload) on each key it names.

    None when the image is not active or names no key. Key-manager errors other than a
    missing or forbidden key propagate (a listener retries), after the enrollment undid its
    own records.
    """
    if image.get("status") != "active":
        return None
    claims = props.key_claims(image.get("properties") or {})
    if not claims:
        return None
    image_id = str(image["id"])
    consumer = Consumer(service=service, resource_type="image", resource_id=image_id)
    registered: list[str] = []
    missing: list[str] = []
    refused: list[str] = []
    for key_id in claims:
        if recent.registered(key_id, consumer):  # the import plugin, moments ago
            registered.append(key_id)
            continue
        try:
            with Enrollment(manager) as enrollment:
                enrollment.register(consumer, [key_id])
        except (KeyNotFoundError, ForbiddenError) as e:
            forbidden = isinstance(e, ForbiddenError)
            LOG.error("image %s names key %s: %s; it %s by a consumer record", image_id,
                      key_id, REFUSED_KEY if forbidden else MISSING_KEY,
                      "may not be protected" if forbidden else "is not protected")
            (refused if forbidden else missing).append(key_id)
            continue
        registered.append(key_id)
    return Registration(image_id, tuple(registered), tuple(missing), tuple(refused))


def on_image_upload(image: object, manager_for: Callable[[str | None], KeyManager], *,
                    service: str) -> Registration | None:
    """The ``image.upload`` / ``image.activate`` handler: :func:`register_image`.

    ``image`` is the notification payload (Glance's error notifications of the same name
    carry a text: ignored); ``manager_for(owner)`` gives a key manager acting for the image's
    project, asked for only when there is something to register.
    """
    if not isinstance(image, Mapping) or image.get("status") != "active" \
            or not props.key_claims(image.get("properties") or {}):
        return None
    return register_image(image, manager_for(image.get("owner")), service=service)

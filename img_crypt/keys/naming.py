"""The names img-crypt gives the keys it makes for one image: the only place that knows them.

``img-crypt-image-<image id>``: made for one image (by the Glance plugin) and deleted with it;
``img-crypt-kept-<image id>``: made for one image, kept when it goes. A key manager reports
the name its caller gave (the Barbican adapter strips what it adds itself), so nothing here
knows any key manager's own naming.
"""

from __future__ import annotations

import uuid

PER_IMAGE_KEY_PREFIX = "img-crypt-image-"
"""Names of KEKs made for one image that may be deleted with it."""
KEPT_KEY_PREFIX = "img-crypt-kept-"
"""Names of KEKs made for one image that outlive it."""


def per_image_key_name(image_id: str, *, delete_with_image: bool) -> str:
    """The name of a KEK made for one image; it records whether it goes with the image."""
    return f"{PER_IMAGE_KEY_PREFIX if delete_with_image else KEPT_KEY_PREFIX}{image_id}"


def image_of_key(name: str | None) -> str | None:
    """The image a key named ``img-crypt-image-<uuid>`` goes with; None for any other name."""
    if not name or not name.startswith(PER_IMAGE_KEY_PREFIX):
        return None
    candidate = name.removeprefix(PER_IMAGE_KEY_PREFIX)
    try:
        image_id = str(uuid.UUID(candidate))
    except ValueError:
        return None
    return image_id if image_id == candidate.lower() else None

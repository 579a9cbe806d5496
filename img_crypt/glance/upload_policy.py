"""The ``img_crypt:upload`` policy check: Glance's ``upload_image`` rule, by image properties.

Glance 33 enforces ``upload_image`` (``PUT /v2/images/{id}/file`` only; staging for an import
is ``modify_image``) with the image as target, extra properties included. oslo.policy loads
this check from the entry point ``oslo.policy.rule_checks`` (name ``img_crypt``), so one line
of Glance's policy file keeps plaintext out even without the paste filter::

    "upload_image": "(rule:context_is_admin or (role:member and project_id:%(project_id)s))
                     and img_crypt:upload"

It applies :func:`img_crypt.glance.claims.property_refusal` (the data is not there yet: the
``img_crypt_upload`` paste filter checks it) and passes everything when
``[image_encryption] require_encryption`` is false. Duck-typed like oslo.policy's ``Check``
(``kind``, ``match``, called with target, creds, enforcer, rule name), so img-crypt does not
need oslo.policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from img_crypt.glance.claims import property_refusal
from img_crypt.glance.opts import GROUP, register_opts

LOG = logging.getLogger("img_crypt.glance.upload_policy")


class UploadCheck:
    """``img_crypt:upload``: True when the target image may receive data by ``PUT /file``."""

    scope_types: list[str] | None = None

    def __init__(self, kind: str, match: str) -> None:
        self.kind, self.match = kind, match

    def __str__(self) -> str:
        return f"{self.kind}:{self.match}"

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], enforcer: Any,
                 current_rule: str | None = None) -> bool:
        """Apply the property rule to ``target`` (Glance's ImageTarget)."""
        conf = enforcer.conf
        register_opts(conf)
        if self.match != "upload":
            LOG.error("unknown img_crypt policy check %r: refusing", str(self))
            return False
        if not conf[GROUP].require_encryption:
            return True
        refusal = property_refusal(str(target.get("id")), target, conf[GROUP].accepted_formats)
        if refusal is not None:
            LOG.warning("upload_image refused by policy: %s", refusal)
        return refusal is None

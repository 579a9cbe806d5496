"""The delete hook inside Glance: an oslo.messaging notifier driver.

Enabled with ``[oslo_messaging_notifications] driver = img_crypt`` (a MultiStrOpt: add a line
``driver = log`` or ``driver = messagingv2`` to keep the others). Glance calls it
synchronously after each image change, in the thread of the request; it acts on
``image.delete`` only, as the deleting user (see :func:`handle_delete`), and never raises into
Glance: a failure is logged, and ``img-crypt reconcile`` repairs it later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_messaging.notify import notifier

from img_crypt.errors import CredentialsError, ForbiddenError, ImgCryptError
from img_crypt.glance.context_auth import request_context
from img_crypt.glance.keys import for_owner, for_request
from img_crypt.glance.lifecycle import DELETE_EVENT, Outcome, on_image_delete
from img_crypt.glance.opts import GROUP, register_opts
from img_crypt.keys.base import KeyManager

LOG = logging.getLogger("img_crypt.glance.notifier")


def handle_delete(conf: cfg.ConfigOpts, payload: dict[str, Any], context: Any = None) -> None:
    """Run the delete handler and log the outcome.

    It acts as the deleting user (``context``: their request context, token as it is) when
    there is one and ``key_manager_auth = context``: under Barbican's default policies only a
    member of the key's project can remove the consumer that user's import registered. When
    that user is refused (an admin of another project, an expired token), or when there is no
    context (img-crypt-listener), it uses the ``[image_encryption_auth]`` service credentials.
    The configured ``kek_id`` is never deleted, whatever the image's properties claim.
    """
    group = conf[GROUP]

    def run(manager_for: Callable[[str | None], KeyManager]) -> Outcome | None:
        return on_image_delete(payload, manager_for, service=group.consumer_service,
                               configured=[group.kek_id] if group.kek_id else [])

    def service(owner: str | None) -> KeyManager:
        return for_owner(conf, owner)

    if context is None or group.key_manager_auth != "context":
        outcome = run(service)
    else:
        try:
            outcome = run(lambda owner: for_request(conf, context))
        except (CredentialsError, ForbiddenError) as e:
            LOG.warning("image %s: the deleting user cannot clean up its key (%s); trying the "
                        "service credentials", payload.get("id"), e)
            outcome = run(service)
    if outcome is not None:
        LOG.info("image %s deleted: consumer removed from key %s: %s; key deleted: %s%s",
                 outcome.image_id, outcome.key_id, outcome.consumer_removed,
                 outcome.key_deleted, f" ({outcome.note})" if outcome.note else "")


class ImageDeleteDriver(notifier.Driver):  # type: ignore[misc]
    """Notifier driver (entry point ``oslo.messaging.notify.drivers``, name ``img_crypt``)."""

    def __init__(self, conf: cfg.ConfigOpts, topics: list[str], transport: Any) -> None:
        super().__init__(conf, topics, transport)
        register_opts(conf)

    def notify(self, ctxt: Any, msg: dict[str, Any], priority: str, retry: Any) -> None:
        """Handle one notification; only ``image.delete`` matters."""
        if msg.get("event_type") != DELETE_EVENT:
            return
        payload = msg.get("payload") or {}
        try:
            handle_delete(self.conf, payload, context=request_context(ctxt))
        except ImgCryptError as e:
            LOG.error("image %s deleted, but its key was not cleaned up: %s (img-crypt "
                      "reconcile will retry)", payload.get("id"), e)
        except Exception:  # never break Glance's delete
            LOG.exception("image %s deleted; the img-crypt delete hook failed",
                          payload.get("id"))

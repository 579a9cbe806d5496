"""The delete hook inside Glance: an oslo.messaging notifier driver.

Enabled with ``[oslo_messaging_notifications] driver = img_crypt`` (a MultiStrOpt: add a line
``driver = log`` or ``driver = messagingv2`` to keep the others). Glance calls it
synchronously after each image change; it acts on ``image.delete`` only, and never raises into
Glance. The cleanup runs on this process's :mod:`.retry_worker` threads: the user's DELETE waits
for it at most ``[image_encryption] delete_hook_budget`` seconds, and the thread retries it
while Barbican is unavailable; what still fails is logged, and ``img-crypt reconcile`` repairs
it later.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from oslo_config import cfg
from oslo_messaging.notify import notifier

from img_crypt.glance import retry_worker
from img_crypt.glance.keys import for_owner
from img_crypt.glance.lifecycle import DELETE_EVENT, on_image_delete
from img_crypt.glance.opts import GROUP, register_opts

LOG = logging.getLogger("img_crypt.glance.notifier")


def handle_delete(conf: cfg.ConfigOpts, payload: dict[str, Any]) -> None:
    """Run the delete handler with the service credentials of ``conf``; log the outcome.

    The configured ``kek_id`` is never deleted, whatever the image's properties claim.
    """
    group = conf[GROUP]
    outcome = on_image_delete(payload, lambda owner: for_owner(conf, owner),
                              service=group.consumer_service,
                              configured=[group.kek_id] if group.kek_id else [])
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
        group = self.conf[GROUP]
        try:
            ticket = retry_worker.shared().submit(
                f"key cleanup of deleted image {payload.get('id')}",
                functools.partial(handle_delete, self.conf, payload),
                retries=group.delete_hook_retries, delay=group.delete_hook_retry_delay)
            if not ticket.wait(group.delete_hook_budget):
                LOG.info("image %s: key cleanup not done within %.1f s; it goes on in the "
                         "background", payload.get("id"), group.delete_hook_budget)
        except Exception:  # never break Glance's delete
            LOG.exception("image %s deleted; the img-crypt delete hook failed",
                          payload.get("id"))

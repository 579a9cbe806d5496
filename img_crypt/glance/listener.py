"""``img-crypt-listener``: the lifecycle hooks for Glance deployments that notify through a broker.

Glance with ``[oslo_messaging_notifications] driver = messagingv2`` sends ``image.delete``,
``image.upload`` and ``image.activate`` to the ``notifications`` topic of the ``glance``
exchange; this listens there with its own pool (queue) and runs the same handlers as the
in-Glance driver (:data:`img_crypt.glance.notifier.HANDLERS`). Run it with Glance's config file:
``img-crypt-listener --config-file /etc/glance/glance-api.conf``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

import oslo_messaging
from oslo_config import cfg

from img_crypt.errors import ImgCryptError, UnavailableError
from img_crypt.glance.notifier import HANDLERS
from img_crypt.glance.opts import GROUP, register_opts

LOG = logging.getLogger("img_crypt.glance.listener")
EXCHANGE = "glance"


class DeleteEndpoint:
    """Notification endpoint: the events of ``HANDLERS`` in, consumer and key changes out."""

    filter_rule = oslo_messaging.NotificationFilter(
        event_type=r"^image\.(delete|upload|activate)$")

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: dict[str, Any],
             metadata: dict[str, Any]) -> Any:
        """Handle one event; ask for redelivery when the key manager is unavailable."""
        entry = HANDLERS.get(event_type)
        if entry is None or not isinstance(payload, dict):
            return oslo_messaging.NotificationResult.HANDLED
        handler, job = entry
        try:
            handler(self.conf, payload, None)  # no user token: the service credentials
        except UnavailableError as e:
            LOG.warning("image %s: key manager unavailable (%s); requeued", payload.get("id"), e)
            return oslo_messaging.NotificationResult.REQUEUE
        except ImgCryptError as e:
            LOG.error("%s %s failed: %s", job, payload.get("id"), e)
        return oslo_messaging.NotificationResult.HANDLED


def build(conf: cfg.ConfigOpts, transport: Any = None) -> Any:
    """A notification listener on ``conf``'s transport (not started)."""
    register_opts(conf)
    transport = transport or oslo_messaging.get_notification_transport(conf)
    targets = [oslo_messaging.Target(topic=topic, exchange=EXCHANGE)
               for topic in conf[GROUP].listener_topics]
    return oslo_messaging.get_notification_listener(
        transport, targets, [DeleteEndpoint(conf)], executor="threading",
        pool=conf[GROUP].listener_pool, allow_requeue=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script: listen until SIGTERM or SIGINT."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf(list(argv) if argv is not None else None, project="glance",
         prog="img-crypt-listener")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    listener = build(conf)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    listener.start()
    LOG.info("listening for %s on %s", ", ".join(HANDLERS),
             ", ".join(conf[GROUP].listener_topics))
    stop.wait()
    listener.stop()
    listener.wait()
    return 0

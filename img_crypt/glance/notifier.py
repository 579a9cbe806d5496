"""The lifecycle hooks inside Glance: an oslo.messaging notifier driver.

Enabled with ``[oslo_messaging_notifications] driver = img_crypt`` (a MultiStrOpt: add a line
``driver = log`` or ``driver = messagingv2`` to keep the others). Glance calls it
synchronously after each image change, in the thread of the request; it acts on the events
of :data:`HANDLERS` (delete, upload, activate) as the user of that request (see
:func:`handle_delete`), and never raises into Glance. The work runs on this process's
:mod:`.retry_worker` threads: the request waits for it at most ``[image_encryption]
delete_hook_budget`` seconds, and the thread retries it while Barbican is unavailable; what
still fails is logged, and ``img-crypt reconcile`` repairs it later.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from oslo_config import cfg
from oslo_messaging.notify import notifier

from img_crypt.errors import CredentialsError, ForbiddenError
from img_crypt.glance import retry_worker
from img_crypt.glance.context_auth import request_context
from img_crypt.glance.keys import for_owner, for_request
from img_crypt.glance.lifecycle import DELETE_EVENT, on_image_delete
from img_crypt.glance.opts import GROUP, register_opts
from img_crypt.glance.uploads import UPLOAD_EVENTS, on_image_upload
from img_crypt.keys.base import KeyManager

LOG = logging.getLogger("img_crypt.glance.notifier")


T = TypeVar("T")
ManagerFor = Callable[[str | None], KeyManager]


def as_user_then_service(conf: cfg.ConfigOpts, payload: dict[str, Any], context: Any,
                         run: Callable[[ManagerFor], T]) -> T:
    """``run`` with key managers acting as the request's user, else as the service user.

    It acts as the user of the request (``context``: their request context, token as it is)
    when there is one and ``key_manager_auth = context``: under Barbican's default policies
    only a member of the key's project can add or remove the consumers of that project's keys.
    When that user is refused (an admin of another project, an expired token), or when there
    is no context (img-crypt-listener), it uses the ``[image_encryption_auth]`` service
    credentials.
    """
    def service(owner: str | None) -> KeyManager:
        return for_owner(conf, owner)

    if context is None or conf[GROUP].key_manager_auth != "context":
        return run(service)
    try:
        return run(lambda owner: for_request(conf, context))
    except (CredentialsError, ForbiddenError) as e:
        LOG.warning("image %s: the request's user cannot update its key's consumers (%s); "
                    "trying the service credentials", payload.get("id"), e)
        return run(service)


def handle_delete(conf: cfg.ConfigOpts, payload: dict[str, Any], context: Any = None) -> None:
    """Release a deleted image's keys (:func:`as_user_then_service`); log the outcome.

    The configured ``kek_id`` is never deleted, whatever the image's properties claim.
    """
    group = conf[GROUP]
    outcome = as_user_then_service(conf, payload, context, lambda manager_for: on_image_delete(
        payload, manager_for, service=group.consumer_service,
        configured=[group.kek_id] if group.kek_id else []))
    for each in () if outcome is None else (outcome, *outcome.more):
        LOG.info("image %s deleted: consumer removed from key %s: %s; key deleted: %s%s",
                 each.image_id, each.key_id, each.consumer_removed,
                 each.key_deleted, f" ({each.note})" if each.note else "")


def handle_upload(conf: cfg.ConfigOpts, payload: dict[str, Any], context: Any = None) -> None:
    """Register an active image on the keys it names (:func:`as_user_then_service`)."""
    done = as_user_then_service(conf, payload, context, lambda manager_for: on_image_upload(
        payload, manager_for, service=conf[GROUP].consumer_service))
    if done is not None and done.registered:
        LOG.info("image %s is a consumer of key(s) %s", done.image_id,
                 ", ".join(done.registered))


Handler = Callable[[cfg.ConfigOpts, dict[str, Any], Any], None]
HANDLERS: dict[str, tuple[Handler, str]] = {
    DELETE_EVENT: (handle_delete, "key cleanup of deleted image"),
    **{event: (handle_upload, "consumer registration of stored image")
       for event in UPLOAD_EVENTS},
}
"""event type -> (handler, what it does to the image, for the log and the worker's job name)."""


class ImageDeleteDriver(notifier.Driver):  # type: ignore[misc]
    """Notifier driver (entry point ``oslo.messaging.notify.drivers``, name ``img_crypt``)."""

    def __init__(self, conf: cfg.ConfigOpts, topics: list[str], transport: Any) -> None:
        super().__init__(conf, topics, transport)
        register_opts(conf)

    def notify(self, ctxt: Any, msg: dict[str, Any], priority: str, retry: Any) -> None:
        """Handle one notification of :data:`HANDLERS`; others, and errors, are ignored."""
        entry = HANDLERS.get(msg.get("event_type", ""))
        payload = msg.get("payload")
        if entry is None or str(priority).upper() != "INFO" or not isinstance(payload, dict):
            return
        handler, job = entry
        group = self.conf[GROUP]
        try:
            # the request's context is read here, in the request's thread (oslo.context keeps
            # it per thread), before the work moves to the worker's threads
            ticket = retry_worker.shared().submit(
                f"{job} {payload.get('id')}",
                functools.partial(handler, self.conf, payload, request_context(ctxt)),
                retries=group.delete_hook_retries, delay=group.delete_hook_retry_delay)
            if not ticket.wait(group.delete_hook_budget):
                LOG.info("%s %s: not done within %.1f s; it goes on in the background",
                         job, payload.get("id"), group.delete_hook_budget)
        except Exception:  # never break Glance
            LOG.exception("%s %s: the img-crypt hook failed", job, payload.get("id"))

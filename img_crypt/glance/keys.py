"""Key managers for code running inside (or beside) Glance.

Both return our :class:`~img_crypt.keys.barbican.BarbicanKeyManager`, so every Barbican era is
handled the same way as in the CLI (consumers over REST where python-barbicanclient refuses
them); only the way to authenticate differs:

- :func:`for_request` (the import plugin, and the in-Glance delete hook acting as the deleting
  user): the request's token as it is, at the endpoint the ``[barbican]`` options or the
  request's service catalog name (:mod:`.context_auth`).
- :func:`for_owner` (the listener, and the delete hook's fallback): the
  ``[image_encryption_auth]`` service credentials, since notifications carry no user token.

With ``[image_encryption] key_manager_auth = noauth`` (no Keystone) both send the image owner's
project in ``X-Project-Id`` to ``[barbican] barbican_endpoint``.
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import loading as ks_loading
from keystoneauth1.session import Session
from oslo_config import cfg

from img_crypt.errors import KeyManagerError
from img_crypt.glance.context_auth import request_endpoint, request_session
from img_crypt.glance.opts import AUTH_GROUP, GROUP, register_opts
from img_crypt.keys._barbican_http import shared_endpoint
from img_crypt.keys.barbican import BarbicanKeyManager


def _castellan(conf: cfg.ConfigOpts) -> None:
    """Check that ``conf`` selects castellan's Barbican backend (this registers its options)."""
    from castellan import key_manager
    from castellan.key_manager.barbican_key_manager import BarbicanKeyManager as Castellan

    try:
        manager = key_manager.API(conf)
    except Exception as e:  # an unknown name is imported as a class path: ValueError, ...
        raise KeyManagerError(f"cannot load [key_manager] backend "
                              f"{conf.key_manager.backend!r}: {type(e).__name__}: {e}") from None
    if not isinstance(manager, Castellan):
        raise KeyManagerError(f"img-crypt needs [key_manager] backend = barbican, not "
                              f"{conf.key_manager.backend!r} ({type(manager).__name__})")


def _manager(conf: cfg.ConfigOpts, session: Session, endpoint: str | None,
             project_id: str | None) -> BarbicanKeyManager:
    if not endpoint:
        raise KeyManagerError("no Barbican endpoint: set [barbican] barbican_endpoint or "
                              "register key-manager in the service catalog")
    group = conf[GROUP]
    # one era discovery per Barbican and process, not one per import and hook run
    return BarbicanKeyManager(session, shared_endpoint(endpoint), project_id=project_id,
                              service=group.consumer_service, consumers=group.consumers)


def _noauth(conf: cfg.ConfigOpts, project_id: str | None) -> BarbicanKeyManager:
    if not project_id:
        raise KeyManagerError("key_manager_auth = noauth needs the image owner's project id")
    return _manager(conf, Session(timeout=conf[GROUP].timeout),
                    conf.barbican.barbican_endpoint, project_id)


def for_request(conf: cfg.ConfigOpts, context: Any) -> BarbicanKeyManager:
    """A key manager acting as the user of ``context`` (a Glance request context)."""
    register_opts(conf)
    _castellan(conf)
    if conf[GROUP].key_manager_auth == "noauth":
        return _noauth(conf, getattr(context, "project_id", None))
    session = request_session(conf, context, conf[GROUP].timeout)
    return _manager(conf, session, request_endpoint(conf, context, session), None)


def for_owner(conf: cfg.ConfigOpts, owner: str | None) -> BarbicanKeyManager:
    """A key manager with the service credentials, for images of project ``owner``."""
    register_opts(conf)
    _castellan(conf)
    if conf[GROUP].key_manager_auth == "noauth":
        return _noauth(conf, owner)
    auth = ks_loading.load_auth_from_conf_options(conf, AUTH_GROUP)
    if auth is None:
        raise KeyManagerError(f"no service credentials: set auth_type and its options in "
                              f"[{AUTH_GROUP}]")
    session = ks_loading.load_session_from_conf_options(conf, AUTH_GROUP, auth=auth)
    if session.timeout is None:
        session.timeout = conf[GROUP].timeout
    barbican = conf.barbican
    endpoint = barbican.barbican_endpoint or session.get_endpoint(
        service_type="key-manager", interface=barbican.barbican_endpoint_type,
        region_name=barbican.barbican_region_name)
    return _manager(conf, session, endpoint, None)

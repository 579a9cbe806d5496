"""Key managers for code running inside (or beside) Glance.

Both return our :class:`~img_crypt.keys.barbican.BarbicanKeyManager`, so every Barbican era is
handled the same way as in the CLI (consumers over REST where python-barbicanclient refuses
them); only the way to authenticate differs:

- :func:`for_request` (the import plugin): the importing user's request context, turned into a
  keystoneauth plugin and an endpoint by castellan itself, from the ``[key_manager]`` and
  ``[barbican]`` options Glance already has.
- :func:`for_owner` (the delete hook, the listener): the ``[image_encryption_auth]`` service
  credentials, since notifications carry no user token.

With ``[image_encryption] key_manager_auth = noauth`` (no Keystone) both send the image owner's
project in ``X-Project-Id`` to ``[barbican] barbican_endpoint``.
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import loading as ks_loading
from keystoneauth1.session import Session
from oslo_config import cfg

from img_crypt.errors import KeyManagerError
from img_crypt.glance.opts import AUTH_GROUP, GROUP, register_opts
from img_crypt.keys.barbican import BarbicanKeyManager


def _castellan(conf: cfg.ConfigOpts) -> Any:
    """The castellan key manager for ``conf`` (this also registers its options)."""
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
    return manager


def _manager(conf: cfg.ConfigOpts, session: Session, endpoint: str | None,
             project_id: str | None) -> BarbicanKeyManager:
    if not endpoint:
        raise KeyManagerError("no Barbican endpoint: set [barbican] barbican_endpoint or "
                              "register key-manager in the service catalog")
    group = conf[GROUP]
    return BarbicanKeyManager(session, endpoint, project_id=project_id,
                              service=group.consumer_service, consumers=group.consumers)


def _noauth(conf: cfg.ConfigOpts, project_id: str | None) -> BarbicanKeyManager:
    if not project_id:
        raise KeyManagerError("key_manager_auth = noauth needs the image owner's project id")
    return _manager(conf, Session(timeout=conf[GROUP].timeout),
                    conf.barbican.barbican_endpoint, project_id)


def for_request(conf: cfg.ConfigOpts, context: Any) -> BarbicanKeyManager:
    """A key manager acting as the user of ``context`` (a Glance request context)."""
    register_opts(conf)
    castellan = _castellan(conf)
    if conf[GROUP].key_manager_auth == "noauth":
        return _noauth(conf, getattr(context, "project_id", None))
    if context is None or not getattr(context, "auth_token", None):
        raise KeyManagerError("the import's request context carries no token")
    # castellan's own choice of auth plugin (a token rescoped at [barbican] auth_endpoint,
    # optionally wrapped with a service token) and of endpoint, for this context.
    auth = castellan._get_keystone_auth(context)
    session = Session(auth=auth, verify=castellan._verify, timeout=conf[GROUP].timeout)
    return _manager(conf, session, castellan._get_barbican_endpoint(auth, session), None)


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

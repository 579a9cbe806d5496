"""Act in Barbican as the user of a Glance request: their token as it is, their catalog.

Like Nova's and Cinder's context auth plugins, the token the user sent to Glance is sent on
unchanged (no rescoping at Keystone, which needs no ``[barbican] auth_endpoint`` and keeps
the user's scope exactly). The Barbican endpoint is ``[barbican] barbican_endpoint`` if set,
else the ``key-manager`` entry of the service catalog: the one the request context carries
(keystonemiddleware's ``X-Service-Catalog``), else Keystone's ``GET /v3/auth/catalog`` for that
token at ``[barbican] auth_endpoint``. Interface and region come from ``[barbican]
barbican_endpoint_type`` and ``barbican_region_name``. All options are castellan's, read
through ``conf``.
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import plugin
from keystoneauth1.access import service_catalog
from keystoneauth1.session import Session
from oslo_config import cfg

from img_crypt.errors import CredentialsError, KeyManagerError

SERVICE_TYPE = "key-manager"


class ContextAuth(plugin.BaseAuthPlugin):
    """A keystoneauth plugin whose token is the request's token, never a new one."""

    def __init__(self, token: str, catalog: list[dict[str, Any]] | None) -> None:
        super().__init__()
        self.token = token
        self.catalog = catalog or []

    def get_token(self, session: Any = None, **kwargs: Any) -> str:
        """The user's token, unchanged."""
        return self.token

    def get_endpoint(self, session: Any = None, service_type: str | None = None,
                     interface: str | None = None, region_name: str | None = None,
                     service_name: str | None = None, **kwargs: Any) -> str | None:
        """The catalog's URL for ``service_type``, or None without a catalog."""
        if not self.catalog:
            return None
        return str(_catalog(self.catalog).url_for(
            service_type=service_type, service_name=service_name, interface=interface,
            region_name=region_name))


def _catalog(entries: list[dict[str, Any]]) -> Any:
    """The catalog object for its form: v2 from keystonemiddleware, v3 from Keystone."""
    v3 = any("interface" in e for entry in entries for e in entry.get("endpoints") or [])
    kind = service_catalog.ServiceCatalogV3 if v3 else service_catalog.ServiceCatalogV2
    return kind(entries)


def request_context(ctxt: Any) -> Any:
    """The request context of the notification being sent, or None.

    Glance notifies with an empty context (``{}``), so an in-process notifier driver finds the
    request's own in oslo.context's thread-local, where Glance's ContextMiddleware put it for
    this request. ``ctxt`` itself wins when it carries a token (another caller, a test).
    """
    if _token(ctxt):
        return ctxt
    from oslo_context import context as oslo_context

    current = oslo_context.get_current()
    return current if _token(current) else None


def _token(context: Any) -> str | None:
    """``context``'s token, if any."""
    return _field(context, "auth_token") or None


def _field(context: Any, name: str) -> Any:
    """An attribute of a request context, or a key of a serialized one (a dict)."""
    if isinstance(context, dict):
        return context.get(name)
    return getattr(context, name, None)


def verify(conf: cfg.ConfigOpts) -> bool | str:
    """TLS verification from ``[barbican] verify_ssl`` and ``verify_ssl_path``."""
    if not conf.barbican.verify_ssl:
        return False
    return str(conf.barbican.verify_ssl_path or "") or True


def request_session(conf: cfg.ConfigOpts, context: Any, timeout: float) -> Session:
    """A session that authenticates as the user of ``context``; KeyManagerError without one."""
    token = _token(context)
    if not token:
        raise KeyManagerError("the request context carries no token")
    auth: Any = ContextAuth(token, _field(context, "service_catalog"))
    if conf.barbican.send_service_user_token:
        from keystoneauth1 import loading, service_token

        service_auth = loading.load_auth_from_conf_options(conf, "barbican_service_user")
        if service_auth is None:
            raise KeyManagerError("[barbican] send_service_user_token needs credentials in "
                                  "[barbican_service_user]")
        auth = service_token.ServiceTokenAuthWrapper(user_auth=auth, service_auth=service_auth)
    return Session(auth=auth, verify=verify(conf), timeout=timeout)


def request_endpoint(conf: cfg.ConfigOpts, context: Any, session: Session) -> str:
    """Barbican's URL for this request (see the module docstring for the order)."""
    barbican = conf.barbican
    if barbican.barbican_endpoint:
        return str(barbican.barbican_endpoint)
    catalog = _field(context, "service_catalog") or _keystone_catalog(conf, session)
    try:
        url = _catalog(catalog).url_for(service_type=SERVICE_TYPE,
                                        interface=barbican.barbican_endpoint_type,
                                        region_name=barbican.barbican_region_name)
    except ks_exc.EndpointNotFound:
        url = None
    if not url:
        raise KeyManagerError(f"no Barbican endpoint: the service catalog has no "
                              f"{barbican.barbican_endpoint_type} {SERVICE_TYPE} endpoint; "
                              f"set [barbican] barbican_endpoint")
    return str(url)


def _keystone_catalog(conf: cfg.ConfigOpts, session: Session) -> list[dict[str, Any]]:
    """The token's catalog from Keystone (``GET /v3/auth/catalog``, the same token)."""
    url = str(conf.barbican.auth_endpoint).rstrip("/")
    try:
        resp = session.get(f"{url}/auth/catalog", raise_exc=False)
    except ks_exc.ConnectionError:
        raise KeyManagerError(f"cannot reach Keystone at {url} for the service "
                              f"catalog") from None
    if resp.status_code == 401:
        raise CredentialsError()
    try:
        catalog = resp.json()["catalog"] if resp.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        catalog = None
    if not isinstance(catalog, list):
        raise KeyManagerError(f"Keystone at {url} gave no service catalog "
                              f"(HTTP {resp.status_code})")
    return catalog

"""clouds.yaml / ``OS_*`` credentials: a keystoneauth session and one service's endpoint.

Beside its first user, the Barbican connection (:mod:`img_crypt.keys.connect`); ``reconcile``'s
Glance client (:mod:`img_crypt.glance.images`) borrows it for the image endpoint. Both are
command-line paths: inside Glance credentials come from oslo.config instead. openstacksdk is
imported only when this is called, so the local code paths never load it.
"""

from __future__ import annotations

from typing import Any

from img_crypt.errors import UsageError


def session_and_endpoint(cloud: str | None, service_type: str,
                         timeout: float) -> tuple[Any, str | None]:
    """The session of clouds.yaml entry ``cloud`` (or ``OS_*``) and its ``service_type`` URL.

    keystoneauth errors (bad credentials, no catalog) propagate for the caller to translate.
    """
    import openstack.config
    from openstack import exceptions as os_exc

    try:
        region = openstack.config.OpenStackConfig(load_envvars=True).get_one(cloud=cloud)
    except (os_exc.ConfigException, KeyError) as e:
        raise UsageError(f"no usable OpenStack credentials (clouds.yaml or OS_* variables): "
                         f"{e}") from None
    session = region.get_session()
    if session.timeout is None:
        session.timeout = timeout
    endpoint = region.get_endpoint(service_type) or session.get_endpoint(
        service_type=service_type, interface=region.get_interface(),
        region_name=region.region_name)
    return session, str(endpoint) if endpoint else None

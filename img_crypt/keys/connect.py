"""Build a Barbican key manager from what an OpenStack user already has.

Either clouds.yaml / ``OS_*`` variables (openstacksdk's loader, keystoneauth session), or, for
development deployments without Keystone, a Barbican URL and a project id (no auth). Imported
only when Barbican is used: the local paths load no OpenStack library.
"""

from __future__ import annotations

from typing import Any

from img_crypt.errors import CredentialsError, KeyManagerError, UsageError
from img_crypt.keys.barbican import BarbicanKeyManager, ConsumerPolicy
from img_crypt.keys.clouds import session_and_endpoint

DEFAULT_TIMEOUT = 30.0


def connect(*, url: str | None = None, project_id: str | None = None, cloud: str | None = None,
            service: str = "image", consumers: ConsumerPolicy = "required",
            timeout: float = DEFAULT_TIMEOUT, **options: Any) -> BarbicanKeyManager:
    """A Barbican key manager: no-auth at ``url`` for ``project_id``, else from clouds.yaml."""
    from keystoneauth1 import exceptions as ks_exc
    from keystoneauth1.session import Session

    if url:
        if not project_id:
            raise UsageError("--barbican-url needs --project-id (or OS_PROJECT_ID)")
        return BarbicanKeyManager(Session(timeout=timeout), url, project_id=project_id,
                                  service=service, consumers=consumers, **options)
    try:
        session, endpoint = _from_cloud(cloud, timeout)
    except ks_exc.Unauthorized:
        raise CredentialsError() from None
    except ks_exc.ClientException as e:
        raise KeyManagerError(f"cannot find Barbican in the service catalog: "
                              f"{type(e).__name__}") from None
    return BarbicanKeyManager(session, endpoint, service=service, consumers=consumers,
                              **options)


def _from_cloud(cloud: str | None, timeout: float) -> tuple[Any, str]:
    session, endpoint = session_and_endpoint(cloud, "key-manager", timeout)
    if not endpoint:
        raise KeyManagerError("the service catalog has no key-manager endpoint")
    return session, endpoint

"""Run inside the Glance venv (castellan 5.8.0): fetch a key the way Cinder does, print its hex.

Reads ``{"barbican_url": ..., "project_id": ..., "key_id": ...}`` on stdin. Cinder's
``volume_utils.clone_encryption_key`` calls castellan's ``key_manager.API(conf).get(context,
key_id)`` and Cinder/os-brick then use ``binascii.hexlify(key.get_encoded())`` as the LUKS
passphrase. The test Barbican has no Keystone (``unauthenticated-context``: the project is the
``X-Project-Id`` header), so the request context is an oslo.context ``RequestContext`` with
``get_auth_plugin()``, the hook castellan's Barbican key manager calls for such contexts (as
Nova's and Cinder's contexts have); its plugin sends that header instead of a token.
``[barbican] barbican_endpoint`` names the server, so no catalog is needed. Prints JSON:
``managed_type``, ``algorithm``, ``bit_length`` and ``passphrase``.
"""

from __future__ import annotations

import binascii
import json
import sys
from typing import Any

from castellan import key_manager
from keystoneauth1 import plugin
from oslo_config import cfg
from oslo_context import context as oslo_context


class ProjectHeaderAuth(plugin.BaseAuthPlugin):
    """No token: the project as ``X-Project-Id``, what a keystone-less Barbican reads."""

    def __init__(self, project_id: str) -> None:
        super().__init__()
        self.project_id = project_id

    def get_headers(self, session: Any, **kwargs: Any) -> dict[str, str]:
        """The identity headers of every request."""
        return {"X-Project-Id": self.project_id}


class Context(oslo_context.RequestContext):
    """A request context whose auth plugin castellan uses as it is."""

    def __init__(self, project_id: str) -> None:
        super().__init__(project_id=project_id)
        self.auth = ProjectHeaderAuth(project_id)

    def get_auth_plugin(self) -> ProjectHeaderAuth:
        """castellan asks for this before anything else on a RequestContext."""
        return self.auth


def main() -> None:
    request = json.load(sys.stdin)
    conf = cfg.ConfigOpts()
    conf([], project="castellan-get-key", default_config_files=[])
    manager = key_manager.API(conf)  # [key_manager] backend defaults to barbican
    conf.set_override("barbican_endpoint", request["barbican_url"], group="barbican")
    key: Any = manager.get(Context(request["project_id"]), request["key_id"])
    json.dump({"managed_type": key.managed_type(), "algorithm": key.algorithm,
               "bit_length": key.bit_length,
               "passphrase": binascii.hexlify(key.get_encoded()).decode("utf-8")}, sys.stdout)


if __name__ == "__main__":
    main()

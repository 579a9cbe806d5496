"""Helpers of the real-auth end-to-end tests: act as a Keystone user in Glance and Barbican."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from keystoneauth1.session import Session

from img_crypt.errors import KeyNotFoundError
from img_crypt.glance.context_auth import ContextAuth
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from tests.servers.cloud import Cloud, Member
from tests.servers.glance import GlanceClient
from tests.support.e2e_glance import MiB, import_image, plaintext


def barbican_as(cloud: Cloud, token: str) -> BarbicanKeyManager:
    """Our key manager on the cloud's Barbican with ``token`` as it is."""
    return BarbicanKeyManager(Session(auth=ContextAuth(token, None), timeout=30),
                              cloud.barbican.url)


@dataclass(frozen=True)
class SecretAcl:
    """A secret's ACL in Barbican, changed as the user of ``token``."""

    url: str
    token: str

    def _call(self, method: str, json: dict[str, Any] | None = None) -> None:
        with requests.Session() as session:
            session.trust_env = False
            resp = session.request(method, self.url, json=json, timeout=30,
                                   headers={"X-Auth-Token": self.token})
        assert resp.status_code in (200, 201, 204), f"{method} {self.url}: {resp.text}"

    def put(self, json: dict[str, Any]) -> None:
        """Replace the ACL."""
        self._call("PUT", json)

    def delete(self) -> None:
        """Back to the default ACL."""
        self._call("DELETE")


def key_gone(cloud: Cloud, key_id: str) -> bool:
    """True when alice's project no longer has secret ``key_id``."""
    try:
        barbican_as(cloud, cloud.a.token()).key_info(key_id)
    except KeyNotFoundError:
        return True
    return False


def barbican_status(cloud: Cloud, token: str, method: str, path: str,
                    json: dict[str, Any] | None = None) -> int:
    """The HTTP status Barbican (microversion 1.2) answers ``method path`` as ``token``'s user."""
    with requests.Session() as session:
        session.trust_env = False
        resp = session.request(method, f"{cloud.barbican.url}{path}", json=json, timeout=30,
                               headers={"X-Auth-Token": token,
                                        "OpenStack-API-Version": "key-manager 1.2"})
    return resp.status_code


def barbican_acl(cloud: Cloud, key_id: str, token: str) -> SecretAcl:
    """The ACL of secret ``key_id``."""
    return SecretAcl(f"{cloud.barbican.url}/v1/secrets/{key_id}/acl", token)


def image_consumer(image_id: str) -> Consumer:
    """The consumer record the plugin registers for ``image_id``."""
    return Consumer(service="image", resource_type="image", resource_id=image_id)


@contextmanager
def glance_as(cloud: Cloud, token: str, project_id: str) -> Iterator[GlanceClient]:
    """A Glance client sending ``token``."""
    with GlanceClient(cloud.glance.url, project_id, token=token) as client:
        yield client


def encrypted_import(cloud: Cloud, token: str, project_id: str, data: Path,
                     **fields: Any) -> tuple[str, Any]:
    """glance-direct import as the token's user: (image id, ImportResult)."""
    with glance_as(cloud, token, project_id) as client:
        return import_image(client, data, **fields)


def import_as_alice(cloud: Cloud, directory: Path) -> tuple[str, str]:
    """An image alice imported (password): (image id, key id)."""
    data = directory / "alice.raw"
    data.write_bytes(plaintext(MiB + 5))
    image_id, result = encrypted_import(cloud, cloud.a.token(), cloud.a.project_id, data)
    assert result.task_status == "success", result.task_message
    return image_id, str(result.image["os_encrypt_key_id"])


def clouds_yaml_of(monkeypatch: pytest.MonkeyPatch, user: Member, directory: Path) -> None:
    """A clouds.yaml entry ``mycloud`` of ``user`` (password) and ``OS_CLOUD=mycloud``, as the
    README's cron line runs ``reconcile``; no other ``OS_*`` variable."""
    for name in [n for n in os.environ if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    path = directory / "clouds.yaml"
    path.write_text(json.dumps({"clouds": {"mycloud": {
        "auth": {"auth_url": user.auth_url, "username": user.name, "password": user.password,
                 "project_name": user.project, "user_domain_name": "Default",
                 "project_domain_name": "Default"},
        "identity_api_version": 3, "interface": "public"}}}))  # JSON is YAML
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    monkeypatch.setenv("OS_CLOUD", "mycloud")


def use_credentials_of(monkeypatch: pytest.MonkeyPatch, user: Member) -> None:
    """``OS_*`` variables of ``user`` (password), as a CLI user would export them."""
    for name in [n for n in os.environ if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", os.devnull)
    for name, value in (("AUTH_URL", user.auth_url), ("USERNAME", user.name),
                        ("PASSWORD", user.password), ("PROJECT_NAME", user.project),
                        ("USER_DOMAIN_NAME", "Default"), ("PROJECT_DOMAIN_NAME", "Default"),
                        ("IDENTITY_API_VERSION", "3"), ("INTERFACE", "public")):
        monkeypatch.setenv(f"OS_{name}", value)

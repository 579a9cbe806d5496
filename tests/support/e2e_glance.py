"""Helpers of the end-to-end tests against a real Glance: its configuration, data, imports.

The Glance configuration is what an operator adds to glance-api.conf (README, "Glance").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from img_crypt.cli import main
from tests.servers.glance import GlanceClient, RealGlance

PROJECT = "p-e2e"
MiB = 1 << 20
CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed",
                     "encrypted"]


def glance_conf(barbican_url: str, **image_encryption: str) -> str:
    """The configuration an operator adds to glance-api.conf (README, "Glance")."""
    options = {"key_manager_auth": "noauth", **image_encryption}
    lines = "\n".join(f"{k} = {v}" for k, v in options.items())
    return (f"[key_manager]\nbackend = barbican\n\n[barbican]\nbarbican_endpoint = {barbican_url}"
            f"\n\n[image_encryption]\n{lines}\n")


def plugin_glance(barbican_url: str, **image_encryption: str) -> RealGlance:
    """A Glance (not started yet) configured as the README says, with the plugin."""
    return RealGlance(plugins=["image_encryption"], notification_drivers=["img_crypt", "log"],
                      container_formats=CONTAINER_FORMATS,
                      extra_conf=glance_conf(barbican_url, **image_encryption))


def start_glance(barbican_url: str, **image_encryption: str) -> RealGlance:
    return plugin_glance(barbican_url, **image_encryption).start()


GUARD_FILTER = {"img_crypt_upload": "img_crypt.glance.upload_guard:filter_factory"}
"""The paste filter an operator adds before ``rootapp`` (README, "PUT /file")."""
UPLOAD_POLICY = {"upload_image": "(rule:context_is_admin or (role:member and "
                                 "project_id:%(project_id)s)) and img_crypt:upload"}
"""The policy line an operator adds to Glance's policy file (README, "PUT /file")."""


def start_guarded_glance(barbican_url: str, *, guard: bool = True, policy: bool = True,
                         **image_encryption: str) -> RealGlance:
    """:func:`start_glance` with the upload paste filter and/or the upload policy line."""
    return RealGlance(plugins=["image_encryption"], notification_drivers=["img_crypt", "log"],
                      container_formats=CONTAINER_FORMATS,
                      extra_conf=glance_conf(barbican_url, **image_encryption),
                      paste_filters=GUARD_FILTER if guard else None,
                      policy=UPLOAD_POLICY if policy else None).start()


def plaintext(size: int) -> bytes:
    """Image-like data: a recognisable text block then random bytes."""
    marker = b"IMG-CRYPT-E2E-PLAINTEXT " * 2048
    return (marker + os.urandom(max(0, size - len(marker))))[:size]


def import_image(client: GlanceClient, data_path: Path, *, method: str = "glance-direct",
                 uri: str | None = None, **fields: Any) -> tuple[str, Any]:
    image = client.create_image(name="e2e", disk_format=fields.pop("disk_format", "raw"),
                                container_format=fields.pop("container_format", "bare"),
                                **fields)
    if method == "glance-direct":
        client.stage(image["id"], data_path)
    client.import_image(image["id"], method=method, uri=uri)
    return image["id"], client.wait_import(image["id"])


def encrypted_image(glance: RealGlance, data_file: Path) -> tuple[str, str]:
    """Import ``data_file`` into ``glance`` (with the plugin); (image id, its key id)."""
    with GlanceClient(glance.url, PROJECT) as client:
        image_id, result = import_image(client, data_file)
    assert result.task_status == "success", result.task_message
    return image_id, str(result.image["os_encrypt_key_id"])


def decrypt_cli(src: Path, dest: Path, barbican_url: str, image_id: str) -> int:
    return main(["decrypt", str(src), str(dest), "--key-manager", "barbican",
                 "--barbican-url", barbican_url, "--project-id", PROJECT,
                 "--image-id", image_id])


def inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def staging_files(glance: RealGlance) -> list[str]:
    return sorted(p.name for p in glance.staging_dir.iterdir())

"""The real-Glance fixture works on its own, without our plugin (tests/servers/glance.py).

Proves the interoperable import paths our plugin hooks into (glance-direct and web-download)
end to end, that an unloadable plugin name is silently skipped by Glance (so plugin tests must
check an effect), and that a Glance that cannot start fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.glance import GlanceClient, ImportResult, RealGlance, serve_file

PAYLOAD_SIZE = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def plain_glance(glance_venv: Path) -> Iterator[RealGlance]:
    """One Glance without import plugins for the round-trip tests of this module."""
    with RealGlance(venv=glance_venv) as server:
        yield server


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    """3 MiB of random bytes in a file."""
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(PAYLOAD_SIZE))
    return path


def _new_image(client: GlanceClient) -> str:
    image = client.create_image(
        name="fixture-test", disk_format="raw", container_format="bare", img_crypt_test="yes"
    )
    assert image["status"] == "queued"
    assert image["img_crypt_test"] == "yes"
    return str(image["id"])


def _assert_stored(
    server: RealGlance, client: GlanceClient, result: ImportResult, expected: bytes,
    tmp_path: Path,
) -> None:
    image_id = str(result.image["id"])
    assert result.status == "active", result
    assert result.task_status == "success", result
    assert result.image["size"] == len(expected)
    assert "os_glance_import_task" not in result.image
    downloaded = tmp_path / "downloaded.bin"
    assert client.download(image_id, downloaded) == len(expected)
    assert downloaded.read_bytes() == expected
    assert (server.store_dir / image_id).read_bytes() == expected
    assert not (server.staging_dir / image_id).exists()


def test_glance_direct_import_round_trip(
    plain_glance: RealGlance, payload: Path, tmp_path: Path
) -> None:
    with GlanceClient(plain_glance.url, "p-direct") as client:
        image_id = _new_image(client)
        client.stage(image_id, payload)  # a path: streamed
        staged = client.get_image(image_id)
        assert staged is not None and staged["status"] == "uploading"
        client.import_image(image_id, "glance-direct")
        result = client.wait_import(image_id)
        _assert_stored(plain_glance, client, result, payload.read_bytes(), tmp_path)
        assert [i["id"] for i in client.list_images()] == [image_id]
        client.delete_image(image_id)
        assert client.get_image(image_id) is None
    assert not (plain_glance.store_dir / image_id).exists()


def test_web_download_import_round_trip(
    plain_glance: RealGlance, payload: Path, tmp_path: Path
) -> None:
    with GlanceClient(plain_glance.url, "p-web") as client, serve_file(payload) as url:
        assert url.startswith("http://127.0.0.1:")
        image_id = _new_image(client)
        client.import_image(image_id, "web-download", uri=url)
        result = client.wait_import(image_id)
        _assert_stored(plain_glance, client, result, payload.read_bytes(), tmp_path)
    assert result.task is not None
    assert result.task["input"]["import_req"]["method"]["uri"] == url


def test_unloadable_plugin_is_skipped_silently(glance_venv: Path, tmp_path: Path) -> None:
    """Glance logs a stevedore warning and imports without the plugin: check effects."""
    data = os.urandom(PAYLOAD_SIZE)
    server = RealGlance(plugins=["does_not_exist"], venv=glance_venv)
    with server, GlanceClient(server.url, "p-bogus") as client:
        image_id = _new_image(client)
        client.stage(image_id, data)
        client.import_image(image_id)
        result = client.wait_import(image_id)
        _assert_stored(server, client, result, data, tmp_path)
        log = server.log_text()
    warnings = [line for line in log.splitlines() if "WARNING stevedore.named" in line]
    assert any("Could not load does_not_exist" in line for line in warnings), log[-3000:]


def test_broken_configuration_fails_start(glance_venv: Path) -> None:
    """A typed option with a bad value: start() raises RuntimeError with the logs' tails."""
    server = RealGlance(extra_conf="[wsgi]\ntask_pool_threads = lots\n", venv=glance_venv)
    with pytest.raises(RuntimeError) as caught:
        server.start()
    message = str(caught.value)
    assert "did not start" in message
    assert "task_pool_threads" in message
    assert server.proc is None and server.tmpdir is None  # cleaned up


def test_our_entry_points_are_installed(glance_venv: Path) -> None:
    """The editable install registers our plugin and notifier driver (nothing is imported)."""
    script = (
        "from importlib.metadata import entry_points as e\n"
        "print(sorted(x.value for x in e(group='glance.image_import.plugins')"
        " if x.name == 'image_encryption'))\n"
        "print(sorted(x.value for x in e(group='oslo.messaging.notify.drivers')"
        " if x.name == 'img_crypt'))\n"
    )
    out = subprocess.run(
        [str(glance_venv / "bin" / "python"), "-c", script],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out == ["['img_crypt.glance.plugin:get_flow']",
                   "['img_crypt.glance.notifier:ImageDeleteDriver']"]

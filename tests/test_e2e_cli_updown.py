"""End to end: ``img-crypt upload`` and ``download`` against a real Glance 33 and Barbican 23.

Glance runs with the operator configuration of the README (plugin, delete hook, container
format ``encrypted``) plus ``image_size_cap``, so that a too-large upload is one Glance refuses
after the image, its key and its consumer exist. Each test uses a project of its own: "nothing
left" is then exactly "no image, no key" in that project.
"""

from __future__ import annotations

import binascii
import io
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from img_crypt import luks
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from img_crypt.keys.connect import connect
from tests.servers.glance import GlanceClient, RealGlance
from tests.support.cli import Run, cli
from tests.support.e2e_glance import CONTAINER_FORMATS, MiB, glance_conf, plaintext

SIZE_CAP = 8 * MiB
Runner = Callable[..., Run]
"""``run(*argv, barbican_url=None, glance_url=None)``: the fixture below."""


@pytest.fixture(scope="module")
def glance(real_barbican: Any) -> Iterator[RealGlance]:
    server = RealGlance(plugins=["image_encryption"], notification_drivers=["img_crypt", "log"],
                        container_formats=CONTAINER_FORMATS,
                        extra_conf=glance_conf(real_barbican.url) +
                        f"\n[DEFAULT]\nimage_size_cap = {SIZE_CAP}\n").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def project() -> str:
    return f"p-updown-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(glance: RealGlance, project: str) -> Iterator[GlanceClient]:
    with GlanceClient(glance.url, project, roles="reader,member") as c:  # admin sees all
        yield c


@pytest.fixture
def km(real_barbican: Any, project: str) -> BarbicanKeyManager:
    return connect(url=real_barbican.url, project_id=project)


@pytest.fixture
def run(glance: RealGlance, real_barbican: Any, project: str) -> Runner:
    """``img-crypt COMMAND ...`` against this Glance and Barbican, as ``project`` (noauth)."""
    def call(*argv: str, barbican_url: str | None = None, glance_url: str | None = None) -> Run:
        return cli(*argv, "--glance-url", glance_url or glance.url, "--project-id", project,
                   "--barbican-url", barbican_url or real_barbican.url)
    return call


def uploaded_id(result: Run) -> str:
    assert result.code == 0, result.err
    found = re.search(r"-> image ([0-9a-f-]{36})", result.out)
    assert found, result.out
    return found[1]


def image_of(client: GlanceClient, image_id: str) -> dict[str, Any]:
    image = client.get_image(image_id)
    assert image is not None
    return image


def image_consumer(image_id: str) -> Consumer:
    return Consumer(service="image", resource_type="image", resource_id=image_id)


# --- upload -----------------------------------------------------------------------------------


def test_upload_creates_an_active_image_with_every_property_the_plugin_sets(
        run: Runner, client: GlanceClient, glance: RealGlance, km: BarbicanKeyManager,
        tmp_path: Path) -> None:
    data = plaintext(3 * MiB + 4321)
    (tmp_path / "disk.qcow2").write_bytes(data)
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.qcow2"), "--name", "web",
                               "--disk-format", "qcow2"))
    image = image_of(client, image_id)
    stored = glance.store_dir / image_id
    key_id = image["os_encrypt_key_id"]
    assert image["status"] == "active"
    assert (image["name"], image["disk_format"], image["container_format"]) == \
        ("web", "qcow2", "encrypted")
    assert {name: image[name] for name in (
        "os_encrypt_format", "os_encrypt_cipher", "os_encrypt_key_deletion_policy",
        "os_decrypt_container_format", "os_decrypt_size")} == {
        "os_encrypt_format": "img-crypt-v1", "os_encrypt_cipher": "AES-256-GCM",
        "os_encrypt_key_deletion_policy": "on_image_deletion",
        "os_decrypt_container_format": "bare", "os_decrypt_size": str(len(data))}
    assert image["size"] == stored.stat().st_size
    header = cli("inspect", str(stored), "--json")
    assert f'"image_id": "{image_id}"' in header.out
    assert f'"key_id": "{key_id}"' in header.out
    assert f'"header_size": {image["img_crypt_header_length"]}' in header.out
    assert f'"plaintext_size": {len(data)}' in header.out
    assert [k.name for k in km.list_keys() if k.key_id == key_id] == \
        [f"img-crypt-image-{image_id}"]
    assert km.list_consumers(key_id) == [image_consumer(image_id)]


def test_upload_with_kek_uses_that_key_and_keeps_it_when_the_image_goes(
        run: Runner, client: GlanceClient, km: BarbicanKeyManager, tmp_path: Path) -> None:
    kek = km.create_key("shared")
    (tmp_path / "disk.raw").write_bytes(plaintext(MiB))
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "x",
                               "--kek", kek))
    image = image_of(client, image_id)
    assert (image["os_encrypt_key_id"], image["os_encrypt_key_deletion_policy"]) == \
        (kek, "do_not_delete")
    assert km.list_consumers(kek) == [image_consumer(image_id)]
    assert [k.key_id for k in km.list_keys()] == [kek]  # no key of its own


def test_download_returns_the_plaintext_of_an_uploaded_image(
        run: Runner, tmp_path: Path) -> None:
    data = plaintext(5 * MiB + 7)
    (tmp_path / "disk.raw").write_bytes(data)
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "x"))
    result = run("download", image_id, str(tmp_path / "back.raw"))
    assert result.code == 0, result.err
    assert (tmp_path / "back.raw").read_bytes() == data
    assert f"{len(data)} bytes plaintext" in result.out


def test_img_crypt_decrypt_opens_the_ciphertext_glance_stored(
        run: Runner, glance: RealGlance, real_barbican: Any, project: str, tmp_path: Path) -> None:
    data = plaintext(MiB + 1)
    (tmp_path / "disk.raw").write_bytes(data)
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "x"))
    result = cli("decrypt", str(glance.store_dir / image_id), str(tmp_path / "out"),
                 "--image-id", image_id, "--key-manager", "barbican",
                 "--barbican-url", real_barbican.url, "--project-id", project)
    assert result.code == 0, result.err
    assert (tmp_path / "out").read_bytes() == data


def test_an_empty_file_uploads_and_downloads(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    image_id = uploaded_id(run("upload", str(tmp_path / "empty"), "--name", "x"))
    assert run("download", image_id, str(tmp_path / "back")).code == 0
    assert (tmp_path / "back").read_bytes() == b""


def test_upload_as_luks_stores_a_raw_luks1_image_glance_inspected_and_cinder_can_open(
        run: Runner, client: GlanceClient, glance: RealGlance, km: BarbicanKeyManager,
        tmp_path: Path) -> None:
    data = plaintext(MiB + 300)
    (tmp_path / "disk.raw").write_bytes(data)
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "vol",
                               "--format", "luks"))
    image = image_of(client, image_id)
    key_id = image["os_encrypt_key_id"]
    assert image["status"] == "active"  # container bare: Glance's format inspector passed it
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert {name: image[name] for name in (
        "os_encrypt_format", "os_decrypt_size", "cinder_encryption_key_id",
        "os_encrypt_key_deletion_policy", "cinder_encryption_key_deletion_policy")} == {
        "os_encrypt_format": "LUKSv1", "os_decrypt_size": str(len(data)),
        "cinder_encryption_key_id": key_id,
        "os_encrypt_key_deletion_policy": "on_image_deletion",
        "cinder_encryption_key_deletion_policy": "on_image_deletion"}
    out = io.BytesIO()
    with open(glance.store_dir / image_id, "rb") as stored:  # the hex of the KEK, as Cinder
        luks.decrypt(stored, out, binascii.hexlify(km.get_key(key_id)), size=len(data))
    assert out.getvalue() == data
    assert km.list_consumers(key_id) == [image_consumer(image_id)]
    result = run("download", image_id, str(tmp_path / "back"))
    assert result.code == 0, result.err
    assert (tmp_path / "back").read_bytes() == data


def test_upload_as_luks_of_a_non_raw_disk_is_refused_before_anything_is_created(
        run: Runner, client: GlanceClient, km: BarbicanKeyManager, tmp_path: Path) -> None:
    (tmp_path / "disk.qcow2").write_bytes(b"x" * 100)
    result = run("upload", str(tmp_path / "disk.qcow2"), "--name", "x", "--format", "luks",
                 "--disk-format", "qcow2")
    assert result.code == 2
    assert "qemu-img convert -O raw" in result.err
    assert client.list_images() == []
    assert km.list_keys() == []


# --- upload: failures leave nothing -----------------------------------------------------------


def test_upload_with_barbican_down_deletes_the_image_and_leaves_nothing(
        run: Runner, client: GlanceClient, down_url: str, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(plaintext(MiB))
    result = run("upload", str(tmp_path / "disk.raw"), "--name", "x", barbican_url=down_url)
    assert result.code == 1
    assert result.err.startswith("img-crypt: error: ") and result.err.count("\n") == 1
    assert client.list_images() == []


def test_upload_refused_by_glance_removes_the_new_key_and_the_image(
        run: Runner, client: GlanceClient, km: BarbicanKeyManager, tmp_path: Path) -> None:
    (tmp_path / "big.raw").write_bytes(plaintext(SIZE_CAP + MiB))
    result = run("upload", str(tmp_path / "big.raw"), "--name", "x")
    assert result.code == 1
    # 413, or the connection closed by Glance while the body was still being sent
    assert "upload the data of image" in result.err
    assert client.list_images() == []
    assert km.list_keys() == []


def test_upload_refused_by_glance_removes_the_consumer_from_a_given_kek(
        run: Runner, client: GlanceClient, km: BarbicanKeyManager, tmp_path: Path) -> None:
    kek = km.create_key("shared")
    (tmp_path / "big.raw").write_bytes(plaintext(SIZE_CAP + MiB))
    result = run("upload", str(tmp_path / "big.raw"), "--name", "x", "--kek", kek)
    assert result.code == 1
    assert client.list_images() == []
    assert [k.key_id for k in km.list_keys()] == [kek]
    assert km.list_consumers(kek) == []


def test_upload_with_glance_down_makes_no_key(
        run: Runner, km: BarbicanKeyManager, down_url: str, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(plaintext(MiB))
    result = run("upload", str(tmp_path / "disk.raw"), "--name", "x", glance_url=down_url)
    assert result.code == 1
    assert result.err.startswith("img-crypt: error: cannot create the image: ")
    assert result.err.count("\n") == 1
    assert km.list_keys() == []  # the image comes first: no key waits for a missing image


def test_upload_of_a_missing_file_creates_no_image(
        run: Runner, client: GlanceClient, tmp_path: Path) -> None:
    result = run("upload", str(tmp_path / "nope"), "--name", "x")
    assert result.code == 1
    assert "cannot read" in result.err
    assert client.list_images() == []


def test_upload_from_a_pipe_is_refused_before_anything_is_created(
        run: Runner, client: GlanceClient) -> None:
    result = run("upload", "-", "--name", "x")
    assert result.code == 2
    assert "needs a regular file" in result.err
    assert client.list_images() == []


def test_upload_with_a_disk_format_glance_does_not_know_creates_nothing(
        run: Runner, client: GlanceClient, km: BarbicanKeyManager, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(b"x" * 100)
    result = run("upload", str(tmp_path / "disk.raw"), "--name", "x", "--disk-format", "nope")
    assert result.code == 1
    assert "Glance refused to create the image: HTTP 400" in result.err
    assert client.list_images() == []
    assert km.list_keys() == []


# --- download: nothing at OUTPUT unless authenticated -----------------------------------------


def test_download_without_the_key_leaves_nothing_at_output(
        run: Runner, km: BarbicanKeyManager, client: GlanceClient, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(plaintext(MiB))
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "x"))
    km.delete_key(image_of(client, image_id)["os_encrypt_key_id"], force=True)
    result = run("download", image_id, str(tmp_path / "back"))
    assert result.code == 1
    assert not (tmp_path / "back").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "disk.raw"]


def test_download_of_tampered_data_leaves_nothing_at_output(
        run: Runner, glance: RealGlance, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(plaintext(3 * MiB))
    image_id = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "x"))
    stored = glance.store_dir / image_id
    raw = bytearray(stored.read_bytes())
    raw[-1] ^= 1  # the last chunk: every earlier chunk decrypts before the failure
    stored.write_bytes(bytes(raw))
    result = run("download", image_id, str(tmp_path / "back"))
    assert result.code == 1
    assert "authentication failed" in result.err.lower() or "authentic" in result.err.lower()
    assert list(tmp_path.iterdir()) == [tmp_path / "disk.raw"]


def test_download_with_glance_down_leaves_nothing_at_output(
        run: Runner, down_url: str, tmp_path: Path) -> None:
    result = run("download", str(uuid.uuid4()), str(tmp_path / "back"), glance_url=down_url)
    assert result.code == 1
    assert result.err.startswith("img-crypt: error: cannot find image ")
    assert result.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_download_of_another_images_ciphertext_is_refused_and_leaves_nothing(
        run: Runner, client: GlanceClient, glance: RealGlance, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(plaintext(MiB))
    original = uploaded_id(run("upload", str(tmp_path / "disk.raw"), "--name", "x"))
    props = {k: v for k, v in image_of(client, original).items()
             if k.startswith(("os_", "img_crypt_"))}
    copy = client.create_image(name="copy", disk_format="raw", container_format="encrypted",
                               **props)
    client.upload(copy["id"], glance.store_dir / original)
    result = run("download", copy["id"], str(tmp_path / "back"))
    assert result.code == 1
    assert f"bound to {original}, not to image {copy['id']}" in result.err
    assert not (tmp_path / "back").exists()


def test_download_of_a_plaintext_image_is_refused(
        run: Runner, client: GlanceClient, tmp_path: Path) -> None:
    image = client.create_image(name="plain", disk_format="raw", container_format="bare")
    client.upload(image["id"], b"plain data")
    result = run("download", image["id"], str(tmp_path / "back"))
    assert result.code == 1
    assert "is not encrypted" in result.err
    assert not (tmp_path / "back").exists()


def test_download_of_an_image_of_another_format_is_refused(
        run: Runner, client: GlanceClient, tmp_path: Path) -> None:
    image = client.create_image(name="other", disk_format="raw", container_format="bare",
                                os_encrypt_format="something-else")
    result = run("download", image["id"], str(tmp_path / "back"))
    assert result.code == 1
    assert "'something-else'" in result.err
    assert not (tmp_path / "back").exists()


def test_download_of_an_unknown_image_says_glance_has_no_such_image(
        run: Runner, tmp_path: Path) -> None:
    missing = str(uuid.uuid4())
    result = run("download", missing, str(tmp_path / "back"))
    assert result.code == 1
    assert "HTTP 404" in result.err and missing in result.err
    assert not (tmp_path / "back").exists()


def test_download_opens_a_luks1_image_with_its_os_encrypt_key_id(
        run: Runner, client: GlanceClient, km: BarbicanKeyManager, real_barbican: Any,
        project: str, tmp_path: Path) -> None:
    data = plaintext(MiB + 100)
    (tmp_path / "disk.raw").write_bytes(data)
    kek = km.create_key("luks")
    made = cli("encrypt", "--format", "luks", str(tmp_path / "disk.raw"),
               str(tmp_path / "disk.luks"), "--kek", kek, "--key-manager", "barbican",
               "--barbican-url", real_barbican.url, "--project-id", project)
    assert made.code == 0, made.err
    image = client.create_image(name="luks", disk_format="raw", container_format="bare",
                                os_encrypt_format="LUKSv1", os_encrypt_key_id=kek,
                                os_decrypt_size=str(len(data)))
    client.upload(image["id"], tmp_path / "disk.luks")
    result = run("download", image["id"], str(tmp_path / "back"))
    assert result.code == 0, result.err
    assert (tmp_path / "back").read_bytes() == data


# --- command line ---------------------------------------------------------------------------


def test_glance_url_without_a_project_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(b"x")
    result = cli("upload", str(tmp_path / "disk.raw"), "--name", "x", "--glance-url",
                 "http://127.0.0.1:9", "--barbican-url", "http://127.0.0.1:9")
    assert result.code == 2
    assert "--glance-url needs --project-id" in result.err


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OS_* variable, an empty HOME, and ``tmp_path`` as the working directory."""
    for name in [n for n in os.environ if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_upload_without_credentials_is_a_one_line_usage_error(
        no_credentials: Path, real_barbican: Any) -> None:
    (no_credentials / "disk.raw").write_bytes(b"x")
    result = cli("upload", str(no_credentials / "disk.raw"), "--name", "x",
                 "--barbican-url", real_barbican.url, "--project-id", "p")
    assert result.code == 2
    assert result.err.startswith("img-crypt: error: no usable OpenStack credentials")
    assert result.err.count("\n") == 1


def test_upload_through_clouds_yaml_refused_by_glance_says_only_that_authentication_failed(
        no_credentials: Path, glance: RealGlance, real_barbican: Any,
        km: BarbicanKeyManager, project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(no_credentials / "clouds.yaml"))
    (no_credentials / "clouds.yaml").write_text(
        f"clouds:\n  dev:\n    auth_type: none\n    image_endpoint_override: {glance.url}\n")
    (no_credentials / "disk.raw").write_bytes(b"x")
    result = cli("upload", str(no_credentials / "disk.raw"), "--name", "x", "--os-cloud", "dev",
                 "--barbican-url", real_barbican.url, "--project-id", project)
    assert (result.code, result.err) == (1, "img-crypt: error: authentication with Glance "
                                            "failed\n")
    assert km.list_keys() == []


def test_upload_and_download_keep_keys_in_barbican_by_default_and_other_commands_locally(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMG_CRYPT_KEY_MANAGER", raising=False)
    assert "(default: barbican," in " ".join(cli("upload", "--help").out.split())
    assert "(default: barbican," in " ".join(cli("download", "--help").out.split())
    for command in ("encrypt", "decrypt", "rewrap"):
        assert "(default: local," in " ".join(cli(command, "--help").out.split())

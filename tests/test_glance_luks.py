"""``[image_encryption] format = luks``: the import plugin stores a raw LUKS1 container.

Driven through the fake Glance 33 action wrapper on the local store and barbican_mock. The
container must open with the lowercase hex of the KEK (what Cinder derives from the secret
it clones) and hold the raw disk; everything else (keys, consumers, undo) is the same as for
img-crypt-v1.
"""

from __future__ import annotations

import binascii
import io
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from img_crypt import luks
from img_crypt.errors import AuthenticationError, FormatError
from img_crypt.glance import lifecycle, luks_output
from img_crypt.glance import properties as props
from img_crypt.keys.base import KeyManager
from tests.support import crafted_images as crafted
from tests.support.backends import PROJECT, Backend, open_backend
from tests.support.glance_import import RESERVED, Import, make_conf, using

LUKS = {"format": "luks"}
GLANCE_ENCRYPTION_PROPERTIES = {
    props.FORMAT, props.KEY_ID, props.DELETION_POLICY, props.DECRYPT_SIZE,
    props.CINDER_KEY_ID, props.CINDER_DELETION_POLICY}


@pytest.fixture(params=["local", "2026.2"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def barbican(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("2026.2", tmp_path) as opened:
        yield opened


def opened(path: Path, key: bytes, size: int | None = None) -> bytes:
    """The plaintext of a LUKS1 file, unlocked with the hex of ``key`` as Cinder does."""
    out = io.BytesIO()
    with open(path, "rb") as source:
        luks.decrypt(source, out, binascii.hexlify(key), size=size)
    return out.getvalue()


def qcow2_of(raw: bytes, tmp_path: Path) -> bytes:
    """``raw`` converted to qcow2 by qemu-img."""
    (tmp_path / "disk.raw").write_bytes(raw)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2",
                    str(tmp_path / "disk.raw"), str(tmp_path / "disk.qcow2")],
                   check=True, timeout=60)
    return (tmp_path / "disk.qcow2").read_bytes()


def assert_nothing_left(imp: Import, backend: Backend) -> None:
    """No key, no consumer, no temporary or LUKS file; the image as before the plugin ran."""
    assert backend.keys() == {}
    assert backend.all_consumers() == []
    assert imp.staging_files() == [imp.image_id]
    assert imp.unchanged


# --- the container --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 300_001])
def test_a_raw_image_becomes_a_luks1_container_that_opens_with_the_hex_of_its_kek(
        backend: Backend, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    imp = Import(tmp_path, data, make_conf(**LUKS), using(backend.manager))
    assert imp.run() == f"file://{imp.luks}"
    assert imp.staging_files() == [imp.luks.name]  # the plaintext is gone
    [key_id] = backend.keys()
    key = backend.manager.get_key(key_id)
    assert opened(imp.luks, key, size) == data
    padded = opened(imp.luks, key)  # what qemu-img and a volume see: whole sectors
    assert padded == data + bytes(-size % 512)
    assert imp.luks.stat().st_size == luks.PAYLOAD_OFFSET * 512 + len(padded)


def test_the_container_does_not_open_with_another_passphrase(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"disk", make_conf(**LUKS), using(backend.manager))
    imp.run()
    with pytest.raises(AuthenticationError):
        opened(imp.luks, os.urandom(32))


def test_a_luks_image_carries_the_standard_and_the_cinder_properties(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, os.urandom(5000), make_conf(**LUKS), using(backend.manager))
    imp.run()
    image = imp.image
    [key_id] = backend.keys()
    assert (image.disk_format, image.container_format) == ("raw", "bare")
    assert image.size == imp.luks.stat().st_size
    assert image.status == "importing"
    assert {k: v for k, v in image.extra_properties.items() if not k.startswith(RESERVED)} == {
        "os_encrypt_format": "LUKSv1",
        "os_encrypt_key_id": key_id,
        "os_encrypt_key_deletion_policy": "on_image_deletion",
        "os_decrypt_size": "5000",
        "cinder_encryption_key_id": key_id,
        "cinder_encryption_key_deletion_policy": "on_image_deletion",
    }
    assert backend.consumers(key_id) == [
        {"service": "image", "resource_type": "image", "resource_id": imp.image_id}]


def test_a_qcow2_image_is_stored_as_its_raw_disk_in_the_container(
        backend: Backend, tmp_path: Path) -> None:
    raw = os.urandom(1024 * 1024 + 1536)
    imp = Import(tmp_path, qcow2_of(raw, tmp_path), make_conf(**LUKS), using(backend.manager),
                 disk_format="qcow2")
    imp.run()
    [key_id] = backend.keys()
    assert opened(imp.luks, backend.manager.get_key(key_id)) == raw
    image = imp.image
    assert (image.disk_format, image.container_format) == ("raw", "bare")
    assert image.extra_properties[props.DECRYPT_SIZE] == str(len(raw))  # the virtual size
    assert imp.staging_files() == [imp.luks.name]  # neither the qcow2 nor the raw temp


def test_a_shared_kek_is_the_cinder_key_too_and_is_kept(backend: Backend,
                                                       tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"disk", make_conf(kek_id=kek_id, **LUKS), using(backend.manager))
    imp.run()
    extra = imp.image.extra_properties
    assert list(backend.keys()) == [kek_id]
    assert extra[props.KEY_ID] == extra[props.CINDER_KEY_ID] == kek_id
    assert extra[props.DELETION_POLICY] == extra[props.CINDER_DELETION_POLICY] == \
        "do_not_delete"
    assert opened(imp.luks, backend.manager.get_key(kek_id), 4) == b"disk"
    assert backend.consumer_ids(kek_id) == [imp.image_id]


def test_the_default_format_is_still_img_crypt_v1(backend: Backend, tmp_path: Path) -> None:
    assert make_conf().image_encryption.format == "img-crypt-v1"
    imp = Import(tmp_path, b"disk", make_conf(), using(backend.manager))
    imp.run()
    assert imp.image.extra_properties[props.FORMAT] == "img-crypt-v1"
    assert imp.image.container_format == "encrypted"


def test_an_unknown_format_is_refused_by_the_configuration() -> None:
    with pytest.raises(ValueError):
        make_conf(format="luks2")


# --- refusals and undo ------------------------------------------------------------------------

@pytest.mark.parametrize("disk_format", ["vmdk", "iso", "vhd", "ploop", None])
def test_a_disk_format_cinder_cannot_copy_as_a_raw_disk_is_refused_before_any_key(
        backend: Backend, tmp_path: Path, disk_format: str | None) -> None:
    # real images of each format: Glance's format check would refuse anything else first
    build = {"vmdk": crafted.vmdk, "iso": crafted.iso, "vhd": crafted.vhd}.get(disk_format or "")
    data = build(tmp_path).read_bytes() if build else b"disk"
    imp = Import(tmp_path, data, make_conf(**LUKS), using(backend.manager),
                 disk_format=disk_format)
    with pytest.raises(RuntimeError) as caught:
        imp.run()
    message = str(caught.value)
    assert f"needs disk_format raw or qcow2, not {disk_format!r}" in message
    assert "Cinder copies the image's bytes" in message and "\n" not in message
    assert_nothing_left(imp, backend)


def test_a_qcow2_that_qemu_img_cannot_read_fails_and_leaves_nothing(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, crafted.qcow2_bad_cluster_size(tmp_path).read_bytes(),
                 make_conf(**LUKS), using(backend.manager), disk_format="qcow2")
    with pytest.raises(RuntimeError, match=r"qemu-img could not read the qcow2 image "
                                           r"\(exit 1\): "):
        imp.run()
    assert_nothing_left(imp, backend)


@pytest.mark.parametrize("option", ["backing", "data_file"])
def test_a_qcow2_that_refers_to_another_file_of_the_host_is_refused(
        backend: Backend, tmp_path: Path, option: str) -> None:
    secret = tmp_path / "host-file"
    secret.write_bytes(b"a file of the Glance host" * 100)
    made = tmp_path / "made.qcow2"
    extra = ["-b", str(secret), "-F", "raw"] if option == "backing" else \
        ["-o", f"data_file={secret},data_file_raw=on"]
    subprocess.run(["qemu-img", "create", "-f", "qcow2", *extra, str(made), "2500"],
                   check=True, timeout=60, capture_output=True)
    # the import: Glance's own safety checks refuse it first (tests/test_glance_inspection.py)
    imp = Import(tmp_path, made.read_bytes(), make_conf(**LUKS), using(backend.manager),
                 disk_format="qcow2")
    with pytest.raises(RuntimeError, match=r"^Image failed safety checks$"):
        imp.run()
    assert_nothing_left(imp, backend)
    # and the luks output on its own refuses it before qemu-img converts it
    with pytest.raises(FormatError, match=r"refers to another file .* read files of the "
                                          r"Glance host"):
        luks_output.encrypt_file(made, "qcow2", b"passphrase")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host-file", "made.qcow2", "staging"]


def test_a_qemu_img_that_hangs_is_stopped_and_leaves_nothing(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real_run = subprocess.run

    def hanging(argv: list[str], **kwargs: Any) -> Any:
        seen.append((argv, kwargs))
        if argv[1] == "info":
            return real_run(argv, **kwargs)
        Path(argv[-1]).write_bytes(b"half")
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    data = crafted.qcow2(tmp_path).read_bytes()
    monkeypatch.setattr(luks_output, "QEMU_IMG_TIMEOUT", 7.0)
    monkeypatch.setattr(subprocess, "run", hanging)
    imp = Import(tmp_path, data, make_conf(**LUKS), using(backend.manager),
                 disk_format="qcow2")
    with pytest.raises(RuntimeError, match="qemu-img convert of the qcow2 image took more "
                                           "than 7 s"):
        imp.run()
    [_, (argv, kwargs)] = seen
    assert argv[:6] == ["qemu-img", "convert", "-f", "qcow2", "-O", "raw"]
    assert argv[6] == str(imp.staged) and kwargs["timeout"] == 7.0
    assert "shell" not in kwargs
    assert_nothing_left(imp, backend)


def test_a_missing_qemu_img_is_named(backend: Backend, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = crafted.qcow2(tmp_path).read_bytes()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    imp = Import(tmp_path, data, make_conf(**LUKS), using(backend.manager),
                 disk_format="qcow2")
    with pytest.raises(RuntimeError, match=r"needs qemu-img .* not installed"):
        imp.run()
    assert_nothing_left(imp, backend)


@pytest.mark.parametrize("bits", [128, 192, 512])
def test_a_kek_that_is_not_256_bit_is_refused_before_it_gets_a_consumer(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int) -> None:
    kek_id = backend.manager.create_key("shared")
    monkeypatch.setattr(backend.manager, "get_key", lambda key_id: os.urandom(bits // 8))
    imp = Import(tmp_path, b"disk", make_conf(kek_id=kek_id, **LUKS), using(backend.manager))
    with pytest.raises(RuntimeError, match=f"needs a 256-bit symmetric KEK .*not a "
                                           f"{bits}-bit one"):
        imp.run()
    assert list(backend.keys()) == [kek_id]
    assert backend.all_consumers() == []
    assert imp.staging_files() == [imp.image_id] and imp.unchanged


def test_a_refused_consumer_registration_leaves_nothing(barbican: Backend,
                                                       tmp_path: Path) -> None:
    assert barbican.mock is not None
    barbican.mock.faults.consumers_fail = 403
    imp = Import(tmp_path, b"disk", make_conf(**LUKS), using(barbican.manager))
    with pytest.raises(RuntimeError, match="403"):
        imp.run()
    assert_nothing_left(imp, barbican)


def test_a_luks_write_failing_midway_leaves_no_partial_file_key_or_consumer(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: Any, sink: Any, passphrase: bytes, **kwargs: Any) -> int:
        sink.write(b"LUKS\xba\xbe half a header")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(luks, "encrypt", broken)
    imp = Import(tmp_path, qcow2_of(os.urandom(100_000), tmp_path), make_conf(**LUKS),
                 using(backend.manager), disk_format="qcow2")
    monkeypatch.setattr(luks_output, "_convert",
                        lambda src, dest, timeout: dest.write_bytes(src.read_bytes()))
    with pytest.raises(OSError, match="No space left"):
        imp.run()
    assert_nothing_left(imp, backend)


def test_revert_after_a_qcow2_import_restores_the_image_and_removes_the_key(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, qcow2_of(os.urandom(4096), tmp_path), make_conf(**LUKS),
                 using(backend.manager), disk_format="qcow2")
    imp.run()
    assert imp.image.disk_format == "raw"
    imp.task.revert(result=None)
    image = imp.image
    assert (image.status, image.disk_format, image.container_format) == \
        ("queued", "qcow2", "bare")
    assert not set(image.extra_properties) & GLANCE_ENCRYPTION_PROPERTIES
    assert image.extra_properties["os_glance_failed_import"] == "fast"
    assert imp.staging_files() == []
    assert backend.keys() == {} and backend.all_consumers() == []


# --- deletion ---------------------------------------------------------------------------------

def manager_of(backend: Backend) -> Any:
    def manager_for(owner: str | None) -> KeyManager:
        return backend.manager_for(owner)
    return manager_for


def test_the_delete_hook_removes_the_consumer_and_the_per_image_key_of_a_luks_image(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"disk", make_conf(**LUKS), using(backend.manager))
    imp.run()
    assert imp.image.extra_properties[props.FORMAT] == "LUKSv1"
    assert len(backend.keys()) == 1
    outcome = lifecycle.on_image_delete(
        {"id": imp.image_id, "owner": PROJECT, "properties": imp.image.extra_properties},
        manager_of(backend), service="image")
    assert outcome is not None and outcome.consumer_removed and outcome.key_deleted
    assert backend.keys() == {} and backend.all_consumers() == []


def test_the_delete_hook_keeps_a_shared_kek_of_a_luks_image(backend: Backend,
                                                           tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"disk", make_conf(kek_id=kek_id, **LUKS), using(backend.manager))
    imp.run()
    assert imp.image.extra_properties[props.CINDER_KEY_ID] == kek_id
    outcome = lifecycle.on_image_delete(
        {"id": imp.image_id, "owner": PROJECT, "properties": imp.image.extra_properties},
        manager_of(backend), service="image", configured=[kek_id])
    assert outcome is not None and outcome.consumer_removed and not outcome.key_deleted
    assert list(backend.keys()) == [kek_id] and backend.all_consumers() == []


# --- reading the property, secrets ------------------------------------------------------------

@pytest.mark.parametrize("value", ["LUKSv1", "luksv1", "LUKS", "luks", " Luks "])
def test_both_upstream_spellings_of_the_luks_format_are_read(value: str) -> None:
    assert props.is_luks({props.FORMAT: value})
    assert props.is_encrypted({props.FORMAT: value})


@pytest.mark.parametrize("value", ["img-crypt-v1", "LUKSv2", "luks2", "", None])
def test_other_formats_are_not_luks(value: str | None) -> None:
    assert not props.is_luks({props.FORMAT: value} if value is not None else {})


def test_the_passphrase_is_never_logged(backend: Backend, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    imp = Import(tmp_path, b"disk", make_conf(**LUKS), using(backend.manager))
    imp.run()
    [key_id] = backend.keys()
    key = backend.manager.get_key(key_id)
    assert "encrypted (luks)" in caplog.text
    for secret in (binascii.hexlify(key).decode(), binascii.hexlify(key).decode().upper()):
        assert secret not in caplog.text


def test_the_luks_option_is_documented_for_the_generator() -> None:
    conf = cfg.ConfigOpts()
    from img_crypt.glance import opts
    names = [opt.name for opt in dict(opts.list_opts())[opts.GROUP]]
    assert "format" in names
    opts.register_opts(conf)
    conf([])
    assert conf.image_encryption.format == "img-crypt-v1"


def test_the_luks_staging_copy_is_not_fsynced(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``staged.encrypt_file``: Glance fsyncs neither its staging area nor its stores."""
    def fsync(fd: int) -> None:
        raise AssertionError("fsync")

    src = tmp_path / "raw"
    src.write_bytes(os.urandom(4096))
    monkeypatch.setattr(os, "fsync", fsync)
    result = luks_output.encrypt_file(src, "raw", b"passphrase")
    assert result.path.exists() and result.plaintext_size == 4096

"""Glance 33's import-time format rules, as the plugin applies them to the staged plaintext.

``img_crypt.glance.inspection.check`` on the crafted images of tests/support/crafted_images.py
(the verdicts a real Glance gives them: tests/test_e2e_glance_inspection.py), each rule and
option on its own, then the plugin: a refused image fails the import with Glance's message
before any key or consumer exists, in both output formats and whatever require_encryption
says, and an accepted one gets the ``virtual_size`` of its plaintext.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg
from oslo_utils.imageutils import format_inspector as fi

from img_crypt.errors import UnsafeImageError
from img_crypt.glance import inspection
from tests.support import crafted_images as crafted
from tests.support.backends import Backend, open_backend
from tests.support.crafted_images import CASES, SAFETY, Case, mismatch
from tests.support.glance_import import Import, make_conf, never, using

MiB = 1 << 20


def glance_options(**image_format: Any) -> cfg.ConfigOpts:
    """Glance's configuration (its [image_format] defaults), with overrides."""
    conf = make_conf()
    for name, value in image_format.items():
        conf.set_override(name, value, group="image_format")
    return conf


def check(path: Path, disk_format: str, container_format: str = "bare",
          **image_format: Any) -> inspection.Verdict:
    return inspection.check(path, container_format, disk_format, glance_options(**image_format))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("local", tmp_path / "keys") as opened:
        yield opened


# --- the crafted images: Glance's verdicts ------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_crafted_image_gets_the_verdict_glance_gives_it(case: Case, tmp_path: Path) -> None:
    image = case.build(tmp_path)
    if case.accepted:
        verdict = check(image, case.disk_format, case.container_format)
        assert verdict.virtual_size == case.expected_virtual_size(image)
    else:
        with pytest.raises(UnsafeImageError) as refused:
            check(image, case.disk_format, case.container_format)
        assert str(refused.value) == case.message


# --- each rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("container_format", ["ovf", "ova", "ami", "docker", "compressed"])
def test_only_a_bare_container_is_inspected(tmp_path: Path, container_format: str) -> None:
    image = crafted.qcow2_backing_file(tmp_path)
    assert check(image, "qcow2", container_format) == inspection.Verdict(None, None)


def test_the_detected_format_and_its_virtual_size_are_reported(tmp_path: Path) -> None:
    assert check(crafted.qcow2(tmp_path), "qcow2") == \
        inspection.Verdict("qcow2", crafted.QCOW2_VIRTUAL_SIZE)


def test_raw_accepts_any_format_with_its_byte_size_as_virtual_size(tmp_path: Path,
                                                                   caplog: Any) -> None:
    iso = crafted.iso(tmp_path)
    with caplog.at_level(logging.WARNING, "img_crypt.glance.inspection"):
        verdict = check(iso, "raw")
    assert verdict == inspection.Verdict("iso", iso.stat().st_size)
    assert "claims disk_format raw but is actually iso" in caplog.text


def test_an_empty_raw_image_records_no_virtual_size(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert check(tmp_path / "empty", "raw") == inspection.Verdict("raw", None)


@pytest.mark.parametrize("disk_format", ["ami", "ari", "aki", "ploop"])
def test_an_uninspectable_disk_format_accepts_unrecognised_data_without_virtual_size(
        tmp_path: Path, disk_format: str) -> None:
    assert check(crafted.raw(tmp_path), disk_format) == inspection.Verdict("raw", None)


@pytest.mark.parametrize("disk_format", ["ami", "ari", "aki", "ploop", "vdi", "vhd"])
def test_an_uninspectable_or_other_disk_format_refuses_a_recognised_format(
        tmp_path: Path, disk_format: str) -> None:
    with pytest.raises(UnsafeImageError, match=f"^{mismatch(disk_format, 'qcow2')}$"):
        check(crafted.qcow2(tmp_path), disk_format)


def test_data_read_across_many_chunks_is_inspected_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.raw"
    big.write_bytes(crafted.qcow2(tmp_path).read_bytes().ljust(3 * inspection.CHUNK + 5, b"\0"))
    assert check(big, "qcow2") == inspection.Verdict("qcow2", crafted.QCOW2_VIRTUAL_SIZE)
    assert check(big, "raw") == inspection.Verdict("qcow2", 3 * inspection.CHUNK + 5)


def test_two_formats_in_one_image_are_refused(tmp_path: Path) -> None:
    image = bytearray(crafted.qcow2(tmp_path).read_bytes())
    image[32 * 1024:32 * 1024 + 6] = b"\x01CD001"  # an ISO 9660 descriptor inside the qcow2
    (tmp_path / "both").write_bytes(image)
    with pytest.raises(UnsafeImageError, match=r"^Multiple formats detected: "):
        check(tmp_path / "both", "qcow2")


def test_without_require_image_format_match_a_mismatch_is_accepted_without_virtual_size(
        tmp_path: Path, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, "img_crypt.glance.inspection"):
        verdict = check(crafted.raw(tmp_path), "qcow2", require_image_format_match=False)
    assert verdict == inspection.Verdict("raw", None)
    assert "image format qcow2 did not match" in caplog.text


def test_without_require_image_format_match_a_mismatch_skips_the_safety_checks_as_glance_does(
        tmp_path: Path) -> None:
    image = crafted.qcow2_backing_file(tmp_path)
    assert check(image, "vmdk", require_image_format_match=False) == \
        inspection.Verdict("qcow2", None)


def test_without_require_image_format_match_the_safety_checks_still_refuse(
        tmp_path: Path) -> None:
    with pytest.raises(UnsafeImageError, match=f"^{SAFETY}$"):
        check(crafted.qcow2_backing_file(tmp_path), "qcow2", require_image_format_match=False)


def test_gpt_safety_checks_named_nonfatal_let_a_gpt_through(tmp_path: Path,
                                                            caplog: Any) -> None:
    image = crafted.gpt_extra_partition(tmp_path)
    with caplog.at_level(logging.WARNING, "img_crypt.glance.inspection"):
        verdict = check(image, "raw", gpt_safety_checks_nonfatal=["mbr"])
    assert verdict == inspection.Verdict("gpt", crafted.GPT_SIZE)
    assert "non-fatal" in caplog.text


def test_nonfatal_gpt_checks_do_not_relax_other_formats(tmp_path: Path) -> None:
    with pytest.raises(UnsafeImageError, match=f"^{SAFETY}$"):
        check(crafted.qcow2_backing_file(tmp_path), "qcow2",
              gpt_safety_checks_nonfatal=["backing_file", "mbr"])


def test_nonfatal_gpt_checks_other_than_the_failing_one_still_refuse(tmp_path: Path) -> None:
    with pytest.raises(UnsafeImageError, match=f"^{SAFETY}$"):
        check(crafted.gpt_extra_partition(tmp_path), "raw", gpt_safety_checks_nonfatal=["gptmbr"])


def test_a_refusal_logs_which_check_failed(tmp_path: Path, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, "img_crypt.glance.inspection"), \
            pytest.raises(UnsafeImageError):
        check(crafted.qcow2_data_file(tmp_path), "qcow2")
    assert "image refused: qcow2 Safety checks failed: data_file" in caplog.text


def broken_virtual_size(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def virtual_size(self: Any) -> int:
        raise error

    monkeypatch.setattr(fi.QcowInspector, "virtual_size", property(virtual_size))


def test_an_inspector_failing_unexpectedly_refuses_the_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken_virtual_size(monkeypatch, struct.error("unpack requires a buffer"))
    with pytest.raises(UnsafeImageError, match=r"^Image format inspection failed$"):
        check(crafted.qcow2(tmp_path), "qcow2")


def test_an_inspector_failing_unexpectedly_passes_without_require_image_format_match(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken_virtual_size(monkeypatch, struct.error("unpack requires a buffer"))
    assert check(crafted.qcow2(tmp_path), "qcow2", require_image_format_match=False) == \
        inspection.Verdict("qcow2", None)


def test_an_attribute_error_counts_as_not_inspected_as_in_glance(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken_virtual_size(monkeypatch, AttributeError("no such field"))
    assert check(crafted.qcow2(tmp_path), "qcow2") == inspection.Verdict("qcow2", None)


# --- the plugin ---------------------------------------------------------------------------------

REFUSED = [case for case in CASES if not case.accepted]


@pytest.mark.parametrize("output", ["img-crypt-v1", "luks"])
@pytest.mark.parametrize("require_encryption", [True, False])
@pytest.mark.parametrize("case", REFUSED, ids=str)
def test_a_refused_image_fails_the_import_with_glances_message_before_any_key(
        case: Case, output: str, require_encryption: bool, tmp_path: Path) -> None:
    conf = make_conf(format=output, require_encryption=require_encryption)
    imp = Import(tmp_path, case.build(tmp_path).read_bytes(), conf, never,
                 disk_format=case.disk_format, container_format=case.container_format)
    with pytest.raises(RuntimeError) as refused:  # Glance's UploadException outside Glance
        imp.run()
    assert str(refused.value) == case.message
    assert imp.unchanged and imp.staging_files() == [imp.image_id]
    imp.task.revert(result=None)
    assert imp.image.status == "queued" and imp.staging_files() == []


def test_the_plugin_follows_glances_own_require_image_format_match(
        backend: Backend, tmp_path: Path) -> None:
    data = crafted.raw(tmp_path).read_bytes()
    strict = Import(tmp_path, data, make_conf(), never, disk_format="qcow2")
    with pytest.raises(RuntimeError, match=f"^{mismatch('qcow2', 'raw')}$"):
        strict.run()
    conf = make_conf()
    conf.set_override("require_image_format_match", False, group="image_format")
    relaxed = Import(tmp_path, data, conf, using(backend.manager),
                     disk_format="qcow2")
    relaxed.run()
    assert relaxed.image.container_format == "encrypted"
    assert relaxed.image.virtual_size is None


@pytest.mark.parametrize("case", [case for case in CASES if case.accepted], ids=str)
def test_an_accepted_image_is_encrypted_with_the_virtual_size_of_its_plaintext(
        case: Case, backend: Backend, tmp_path: Path) -> None:
    image = case.build(tmp_path)
    imp = Import(tmp_path, image.read_bytes(), make_conf(), using(backend.manager),
                 disk_format=case.disk_format, container_format=case.container_format)
    imp.run()
    assert imp.image.container_format == "encrypted"
    assert imp.image.virtual_size == case.expected_virtual_size(image)


def test_revert_after_success_forgets_the_virtual_size(backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, crafted.qcow2(tmp_path).read_bytes(), make_conf(),
                 using(backend.manager), disk_format="qcow2")
    imp.run()
    assert imp.image.virtual_size == crafted.QCOW2_VIRTUAL_SIZE
    imp.task.revert(result=None)
    assert imp.image.virtual_size is None and imp.image.status == "queued"


def test_a_client_encrypted_image_is_left_to_glance_and_not_read_for_inspection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def inspected(*args: Any) -> Any:
        raise AssertionError("a client-side encrypted image must not be inspected here")

    monkeypatch.setattr(inspection, "check", inspected)
    # (with require_encryption the claim itself is checked: tests/test_glance_import_claims.py)
    imp = Import(tmp_path, crafted.qcow2_backing_file(tmp_path).read_bytes(),
                 make_conf(require_encryption=False), never,
                 disk_format="raw", extra={"os_encrypt_format": "luks",
                                           "os_encrypt_key_id": str(uuid.uuid4())})
    assert imp.run() == imp.file_path

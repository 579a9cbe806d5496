"""``format = luks``: a qcow2 whose virtual size would fill the staging area is refused early.

A qcow2 of a few KiB can claim terabytes; converting it to raw and encrypting that writes its
whole virtual size. ``[image_encryption] luks_max_virtual_size`` (default 1 TiB, Glance's own
image_size_cap default) caps it, and the staging area's free space must hold it twice (raw
temporary, then the container). Both are checked on the qcow2 header before qemu-img runs
and before any key exists; nothing is left behind.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from img_crypt.glance.opts import GROUP
from tests.support import crafted_images as crafted
from tests.support.backends import Backend, open_backend
from tests.support.glance_import import Import, make_conf, never, using
from tests.support.luks_tools import qcow2_claiming

MIB = 1 << 20
TIB = 1 << 40
HEADER = 2 * MIB  # our LUKS1 payload offset


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("local", tmp_path) as opened:
        yield opened


@pytest.fixture
def qemu_img_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command the plugin runs (they still run)."""
    calls: list[list[str]] = []
    real = subprocess.run

    def recording(argv: list[str], **kwargs: Any) -> Any:
        calls.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording)
    return calls


def refused(imp: Import) -> str:
    """The one-line error of a refused import, after checking it left nothing."""
    with pytest.raises(RuntimeError) as caught:
        imp.run()
    message = str(caught.value)
    assert "\n" not in message
    assert imp.staging_files() == [imp.image_id] and imp.unchanged
    return message


def test_the_default_cap_is_one_tib_glances_own_image_size_cap_default() -> None:
    assert make_conf()[GROUP].luks_max_virtual_size == TIB


def test_a_qcow2_claiming_more_than_the_cap_is_refused_before_qemu_img_or_any_key(
        tmp_path: Path, qemu_img_calls: list[list[str]]) -> None:
    data = qcow2_claiming(tmp_path / "big.qcow2", 4 * MIB + 512)
    qemu_img_calls.clear()
    imp = Import(tmp_path, data, make_conf(format="luks", luks_max_virtual_size=4 * MIB),
                 never, disk_format="qcow2")
    message = refused(imp)
    assert message == (f"image {imp.image_id} could not be encrypted: the qcow2 image's "
                       f"virtual size, {4 * MIB + 512} bytes, is above [image_encryption] "
                       f"luks_max_virtual_size ({4 * MIB} bytes)")
    assert qemu_img_calls == []


def test_a_tiny_qcow2_claiming_four_tib_is_refused_by_the_default_cap(
        tmp_path: Path, qemu_img_calls: list[list[str]]) -> None:
    data = qcow2_claiming(tmp_path / "huge.qcow2", 4 * TIB)
    assert len(data) < MIB
    qemu_img_calls.clear()
    imp = Import(tmp_path, data, make_conf(format="luks"), never, disk_format="qcow2")
    assert "is above [image_encryption] luks_max_virtual_size (1099511627776 bytes)" in \
        refused(imp)
    assert qemu_img_calls == []


def test_a_qcow2_exactly_at_the_cap_is_converted_and_encrypted(
        backend: Backend, tmp_path: Path) -> None:
    data = qcow2_claiming(tmp_path / "edge.qcow2", 4 * MIB)
    imp = Import(tmp_path, data, make_conf(format="luks", luks_max_virtual_size=4 * MIB),
                 using(backend.manager), disk_format="qcow2")
    imp.run()
    assert imp.luks.stat().st_size == HEADER + 4 * MIB


def test_a_cap_of_zero_leaves_only_the_free_space_rule(
        backend: Backend, tmp_path: Path) -> None:
    data = qcow2_claiming(tmp_path / "any.qcow2", 3 * MIB)
    imp = Import(tmp_path, data, make_conf(format="luks", luks_max_virtual_size=0),
                 using(backend.manager), disk_format="qcow2")
    imp.run()
    assert imp.luks.stat().st_size == HEADER + 3 * MIB


def test_a_raw_image_is_not_capped_its_size_is_already_on_disk(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, os.urandom(MIB + 1), make_conf(format="luks",
                                                          luks_max_virtual_size=MIB),
                 using(backend.manager), disk_format="raw")
    imp.run()
    assert imp.luks.exists()


@pytest.mark.parametrize(("spare", "accepted"), [(0, True), (-1, False)])
def test_the_virtual_size_must_fit_twice_in_the_staging_free_space(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spare: int,
        accepted: bool) -> None:
    size = 2 * MIB
    needed = 2 * size + HEADER
    data = qcow2_claiming(tmp_path / "d.qcow2", size)
    imp = Import(tmp_path, data, make_conf(format="luks"), using(backend.manager),
                 disk_format="qcow2")
    real_statvfs, asked = os.statvfs, []

    def statvfs(path: Any) -> Any:
        if Path(path) != imp.staging:
            return real_statvfs(path)
        asked.append(path)
        return SimpleNamespace(f_bavail=needed + spare, f_frsize=1)

    monkeypatch.setattr(os, "statvfs", statvfs)
    if accepted:
        imp.run()
        assert imp.luks.stat().st_size == HEADER + size
    else:
        assert refused(imp).endswith(
            f"the qcow2 image's virtual size, {size} bytes, needs up to {needed} bytes of "
            f"staging space to convert and encrypt; {needed - 1} are free")
        assert backend.keys() == {}
    assert asked


def test_data_that_is_not_qcow2_under_disk_format_qcow2_is_refused_before_any_key(
        tmp_path: Path) -> None:
    """Glance's format check refuses it first; without that check the luks output still does."""
    (tmp_path / "checked").mkdir()
    (tmp_path / "unchecked").mkdir()
    imp = Import(tmp_path / "checked", b"QFI", make_conf(format="luks"), never,
                 disk_format="qcow2")
    assert refused(imp).endswith("Image disk_format qcow2 does not match stream data raw")
    conf = make_conf(format="luks")
    conf.set_override("require_image_format_match", False, group="image_format")
    imp = Import(tmp_path / "unchecked", b"QFI", conf, never, disk_format="qcow2")
    assert refused(imp).endswith("the image's data is not qcow2, but its disk_format is qcow2")


def test_qemu_img_reading_another_virtual_size_than_the_header_is_refused_before_converting(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    data = crafted.qcow2(tmp_path).read_bytes()

    def lying(argv: list[str], **kwargs: Any) -> Any:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout='{"virtual-size": 1099511627776}',
                                           stderr="")

    monkeypatch.setattr(subprocess, "run", lying)
    imp = Import(tmp_path, data, make_conf(format="luks"), using(backend.manager),
                 disk_format="qcow2")
    assert refused(imp).endswith("qemu-img reads a virtual size of 1099511627776 bytes, not "
                                 "the qcow2 header's: refused")
    assert [argv[1] for argv in calls] == ["info"]
    assert backend.keys() == {} and backend.all_consumers() == []

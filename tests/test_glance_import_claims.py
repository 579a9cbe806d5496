"""An import of an image that says it is already encrypted: the claim is checked as on PUT.

With ``require_encryption`` the plugin stores a client-side encrypted image as it is only when
its claim is backed (img_crypt.glance.claims, the rule the PUT guard applies): an accepted
``os_encrypt_format``, data that starts as that format says, and a key the importing user can
use. Plaintext labelled ``LUKSv1`` must not become an "encrypted" image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import crafted_images as crafted
from tests.support.backends import Backend, open_backend
from tests.support.glance_import import Import, make_conf, using


@pytest.fixture(params=["local", "2026.2"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


def claiming(fmt: str, key_id: str) -> dict[str, str]:
    return {"os_encrypt_format": fmt, "os_encrypt_key_id": key_id}


def refused(imp: Import) -> str:
    """The one-line error of a refused import, after checking it changed nothing."""
    with pytest.raises(RuntimeError) as caught:
        imp.run()
    message = str(caught.value)
    assert "\n" not in message
    assert imp.unchanged
    return message


def test_plaintext_labelled_luksv1_is_refused_and_registers_nothing(
        backend: Backend, tmp_path: Path) -> None:
    key_id = backend.manager.create_key()
    imp = Import(tmp_path, os.urandom(8192), make_conf(), using(backend.manager),
                 extra=claiming("LUKSv1", key_id))
    assert refused(imp).endswith("says LUKS, but its data does not start with a LUKS header")
    assert backend.consumers(key_id) == []


def test_a_luks2_container_labelled_luksv1_is_refused(backend: Backend, tmp_path: Path) -> None:
    key_id = backend.manager.create_key()
    data = crafted.luks2(tmp_path).read_bytes()
    imp = Import(tmp_path, data, make_conf(), using(backend.manager),
                 extra=claiming("LUKSv1", key_id))
    assert "says LUKS, but its data is not LUKS version 1" in refused(imp)


def test_a_luks1_container_naming_a_missing_key_is_refused(
        backend: Backend, tmp_path: Path) -> None:
    data = crafted.luks1(tmp_path).read_bytes()
    missing = "0b7e2c5e-1d6f-4f0e-9a57-2f6f2b8f7a11"
    imp = Import(tmp_path, data, make_conf(), using(backend.manager),
                 extra=claiming("LUKSv1", missing))
    assert f"names key {missing}, which cannot be used" in refused(imp)


def test_a_luks1_container_with_its_key_is_stored_as_it_is(
        backend: Backend, tmp_path: Path) -> None:
    key_id = backend.manager.create_key()
    imp = Import(tmp_path, crafted.luks1(tmp_path).read_bytes(), make_conf(),
                 using(backend.manager), extra=claiming("LUKSv1", key_id))
    assert imp.run() == imp.file_path
    assert imp.unchanged  # stored as it is; the upload events register the consumer


@pytest.mark.parametrize("claimed", ["vendor-x", " LUKSv1", "LUKSv1 ", "luksv1", "img-crypt-v1\n"])
def test_a_format_outside_the_accepted_list_is_refused_exactly(
        backend: Backend, tmp_path: Path, claimed: str) -> None:
    key_id = backend.manager.create_key()
    imp = Import(tmp_path, os.urandom(4096), make_conf(), using(backend.manager),
                 extra=claiming(claimed, key_id))
    assert "is not accepted here" in refused(imp)


def test_a_format_the_operator_lists_is_stored_unchecked(
        backend: Backend, tmp_path: Path) -> None:
    key_id = backend.manager.create_key()
    imp = Import(tmp_path, os.urandom(4096), make_conf(accepted_formats=["vendor-x"]),
                 using(backend.manager), extra=claiming("vendor-x", key_id))
    assert imp.run() == imp.file_path


def test_without_require_encryption_a_claim_is_not_checked(
        backend: Backend, tmp_path: Path) -> None:
    key_id = backend.manager.create_key()
    imp = Import(tmp_path, os.urandom(4096), make_conf(require_encryption=False),
                 using(backend.manager), extra=claiming("LUKSv1", key_id))
    assert imp.run() == imp.file_path

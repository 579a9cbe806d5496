"""os-brick (PyPI 7.1.1, its own venv) opens our LUKS1 images with the passphrase we used.

os-brick is what Nova and Cinder attach encrypted volumes with: ``get_passphrase_from_secret``
turns the castellan secret into the LUKS passphrase, and ``LuksEncryptor`` feeds it to
``cryptsetup luksOpen --key-file=-``. These tests run that real code against images written
by ``img_crypt.luks`` with ``img_crypt.luks.passphrase`` (the plugin's and the CLI's rule).
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from img_crypt import luks
from tests.servers.os_brick_venv import brick_open, ensure_venv
from tests.support.luks_tools import tool


@pytest.fixture(scope="session")
def os_brick_venv() -> Path:
    """The os-brick virtualenv, installed once (a failed install fails the tests)."""
    return ensure_venv()


def image_for(path: Path, key: bytes) -> Path:
    """A LUKS1 image of 64 KiB + 1 byte, written with the plugin's passphrase rule."""
    with path.open("wb") as sink:
        luks.encrypt(io.BytesIO(os.urandom(65537)), sink, luks.passphrase(key, str(uuid.uuid4())))
    return path


def test_get_passphrase_from_secret_derives_exactly_our_passphrase_from_the_key_bytes(
        os_brick_venv: Path, tmp_path: Path) -> None:
    key = os.urandom(32)
    report = brick_open(os_brick_venv, key, image_for(tmp_path / "img.luks", key))
    assert report["passphrase"] == luks.passphrase(key, "k").decode("ascii")


def test_os_brick_luks_encryptor_opens_our_image_with_cryptsetup_key_file_stdin(
        os_brick_venv: Path, tmp_path: Path) -> None:
    tool("cryptsetup")
    key = os.urandom(32)
    image = image_for(tmp_path / "img.luks", key)
    report = brick_open(os_brick_venv, key, image)
    assert report["opened"] is True
    opens = [c for c in report["calls"] if c["argv"][:2] == ["cryptsetup", "luksOpen"]]
    assert len(opens) == 1 and opens[0]["exit"] == 0
    assert opens[0]["argv"][2:4] == ["--key-file=-", str(image)]
    assert opens[0]["stdin"] == luks.passphrase(key, "k").decode("ascii")
    assert not any(c["argv"][1] == "luksFormat" for c in report["calls"])


def test_os_brick_refuses_our_image_with_another_key_and_does_not_format_it(
        os_brick_venv: Path, tmp_path: Path) -> None:
    image = image_for(tmp_path / "img.luks", os.urandom(32))
    before = image.read_bytes()
    report = brick_open(os_brick_venv, os.urandom(32), image)
    assert report["opened"] is False
    assert [c["argv"][1] for c in report["calls"]] == ["luksOpen"]
    assert report["calls"][0]["exit"] == 2  # cryptsetup: no key available with this passphrase
    assert image.read_bytes() == before


def test_a_passphrase_type_secret_is_used_verbatim_so_our_hex_image_needs_a_symmetric_one(
        os_brick_venv: Path, tmp_path: Path) -> None:
    key = b"0123456789abcdefghijklmnopqrstuv"  # 32 bytes a passphrase secret could hold
    image = image_for(tmp_path / "img.luks", key)
    report = brick_open(os_brick_venv, key, image, secret_type="passphrase")
    assert report["passphrase"] == key.decode()
    assert report["opened"] is False

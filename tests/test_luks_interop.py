"""Interop proof of our LUKS1 writer and reader against the real tools (nothing mocked).

cryptsetup and QEMU read what we write; our reader opens what they write; oslo.utils' format
inspector (the one Glance 33 and Nova run) detects ``luks`` and passes its safety check. The
passphrase is the lowercase hex of a random 256-bit key, as Cinder and Nova derive it.
"""

from __future__ import annotations

import binascii
import io
import os
from pathlib import Path

import pytest
from oslo_utils.imageutils import format_inspector

from img_crypt import luks
from img_crypt.errors import AuthenticationError
from tests.support.luks_tools import (
    cryptsetup_format,
    passfile,
    qemu_decrypt,
    qemu_encrypt,
    run,
    tool,
)

MIB = 1 << 20
KEY = os.urandom(32)
PASS = binascii.hexlify(KEY).decode().encode()


def write_ours(path: Path, data: bytes, passphrase: bytes = PASS) -> Path:
    with path.open("wb") as f:
        luks.encrypt(io.BytesIO(data), f, passphrase)
    return path


def read_ours(path: Path, passphrase: bytes = PASS, size: int | None = None) -> bytes:
    out = io.BytesIO()
    with path.open("rb") as f:
        luks.decrypt(f, out, passphrase, size=size)
    return out.getvalue()


@pytest.fixture
def ours(tmp_path: Path) -> Path:
    """One image of ours: 1 MiB + 512 bytes of random plaintext."""
    return write_ours(tmp_path / "ours.luks", os.urandom(MIB + 512))


# --- cryptsetup reads ours ---------------------------------------------------------------------

def test_cryptsetup_luksdump_reports_luks1_aes_xts_plain64_sha256(ours: Path) -> None:
    dump = run("cryptsetup", "luksDump", str(ours)).stdout.decode()
    fields = {k.strip(): v.strip() for k, _, v in
              (line.partition(":") for line in dump.splitlines() if ":" in line)}
    assert fields["Version"] == "1"
    assert (fields["Cipher name"], fields["Cipher mode"], fields["Hash spec"]) == (
        "aes", "xts-plain64", "sha256")
    assert (fields["Payload offset"], fields["MK bits"], fields["MK iterations"]) == (
        "4096", "512", "1000")
    assert "Key Slot 0: ENABLED" in dump and dump.count("DISABLED") == 7


def test_cryptsetup_accepts_the_hex_passphrase_on_stdin_and_rejects_another(ours: Path) -> None:
    ok = run("cryptsetup", "open", "--test-passphrase", "--key-file=-", str(ours), stdin=PASS,
             check=False)
    assert ok.returncode == 0, ok.stderr
    bad = run("cryptsetup", "open", "--test-passphrase", "--key-file=-", str(ours),
              stdin=PASS.upper(), check=False)
    assert bad.returncode != 0 and b"No key available" in bad.stderr


# --- QEMU reads ours ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 512, MIB + 512, 1000, 3 * 512 + 1])
def test_qemu_img_decrypts_our_image_to_the_plaintext_padded_to_a_sector(
        tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    image = write_ours(tmp_path / "ours.luks", data)
    got = qemu_decrypt(image, passfile(tmp_path, PASS), tmp_path / "out.raw")
    assert got == data + bytes(-size % 512)


def test_qemu_img_refuses_our_image_with_a_wrong_passphrase(ours: Path, tmp_path: Path) -> None:
    proc = run("qemu-img", "convert", "--object",
               f"secret,id=s,file={passfile(tmp_path, PASS.upper())}", "--image-opts",
               f"driver=luks,key-secret=s,file.filename={ours}", "-O", "raw",
               str(tmp_path / "out.raw"), check=False)
    assert proc.returncode != 0 and b"Invalid password" in proc.stderr


# --- oslo.utils' format inspector (Glance 33, Nova) -------------------------------------------

def test_oslo_format_inspector_detects_luks_and_passes_its_safety_check(ours: Path) -> None:
    inspector = format_inspector.detect_file_format(str(ours))
    assert inspector is not None and inspector.NAME == "luks"
    inspector.safety_check()


def test_oslo_luks_inspector_opens_our_key_slot_with_the_hex_passphrase(ours: Path) -> None:
    right = format_inspector.detect_file_format(
        str(ours), params={"luks_passphrase": PASS.decode()})
    assert right is not None and right.NAME == "luks"
    right.safety_check()
    wrong = format_inspector.detect_file_format(
        str(ours), params={"luks_passphrase": PASS.decode().upper()})
    assert wrong is not None
    with pytest.raises(format_inspector.SafetyCheckFailed):
        wrong.safety_check()


# --- our reader opens theirs ------------------------------------------------------------------

def test_our_reader_opens_a_cryptsetup_luksformat_image(tmp_path: Path) -> None:
    data = os.urandom(MIB + 512)
    (tmp_path / "plain.raw").write_bytes(data)
    image = tmp_path / "cs.luks"
    pass_path = passfile(tmp_path, PASS)
    cryptsetup_format(image, pass_path, tmp_path / "plain.raw")
    assert luks.inspect(io.BytesIO(image.read_bytes()[:4096])).payload_offset == 2 * MIB
    assert read_ours(image) == data
    with pytest.raises(AuthenticationError):
        read_ours(image, PASS.upper())


def test_our_reader_tries_every_active_key_slot(tmp_path: Path) -> None:
    data = os.urandom(4096)
    (tmp_path / "plain.raw").write_bytes(data)
    image, pass_path = tmp_path / "cs.luks", passfile(tmp_path, PASS)
    cryptsetup_format(image, pass_path, tmp_path / "plain.raw")
    other = b"another passphrase"
    (tmp_path / "other").write_bytes(other)
    run("cryptsetup", "luksAddKey", "-q", "--pbkdf-force-iterations", "1000", "--key-file=-",
        str(image), str(tmp_path / "other"), stdin=PASS)
    assert luks.inspect(image.open("rb")).active_slots == (0, 1)
    assert read_ours(image, other) == data and read_ours(image) == data
    run("cryptsetup", "luksKillSlot", "-q", str(image), "0", "--key-file=-", stdin=other)
    assert read_ours(image, other) == data
    with pytest.raises(AuthenticationError):
        read_ours(image)


def test_our_reader_opens_a_qemu_img_luks_image_with_qemus_layout(tmp_path: Path) -> None:
    data = os.urandom(MIB + 1000)
    (tmp_path / "plain.raw").write_bytes(data)
    image = tmp_path / "q.luks"
    qemu_encrypt(tmp_path / "plain.raw", passfile(tmp_path, PASS), image)
    info = luks.inspect(image.open("rb"))
    assert info.payload_offset != luks.PAYLOAD_OFFSET * 512  # qemu packs its slots tighter
    assert read_ours(image, size=len(data)) == data


def test_a_missing_tool_fails_the_test_instead_of_skipping() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"run scripts/setup\.sh --test"):
        tool("qemu-img-that-does-not-exist")

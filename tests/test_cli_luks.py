"""``img-crypt`` and raw LUKS1 images: ``encrypt --format luks``, ``decrypt --kek``, ``inspect``.

The passphrase is the lowercase hex of the KEK's 32 bytes (Cinder's and Nova's convention), so
cryptsetup and qemu-img open what the command line writes (the interop case at the end).
"""

from __future__ import annotations

import binascii
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from barbican_mock import MockBarbican
from img_crypt import luks
from img_crypt.errors import AuthenticationError
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore
from tests.support.cli import Run, cli
from tests.support.luks_tools import passfile, qemu_decrypt, run

PROJECT = "p1"
IMAGE = "0e7f3c57-9a43-4d5e-8f7e-2b1c6d9a0f11"
SIZE = 3 * 65536 + 77  # not a whole number of sectors


@dataclass
class Store:
    """Where the CLI's keys live, and a manager that sees the same keys."""

    options: list[str]
    manager: KeyManager

    def key_ids(self) -> list[str]:
        return sorted(k.key_id for k in self.manager.list_keys())

    def consumers(self, key_id: str) -> list[str]:
        return [c.resource_id for c in self.manager.list_consumers(key_id)]


@pytest.fixture(params=["local", "2026.2"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        path = tmp_path / "keys"
        yield Store(["--key-store", str(path)], LocalKeyStore(path))
        return
    with MockBarbican(era=request.param) as mock:
        yield Store(["--key-manager", "barbican", "--barbican-url", mock.url,
                     "--project-id", PROJECT], connect(url=mock.url, project_id=PROJECT,
                                                      backoff=0))


@pytest.fixture
def local(tmp_path: Path) -> Store:
    path = tmp_path / "keys"
    return Store(["--key-store", str(path)], LocalKeyStore(path))


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(SIZE))
    return path


def img_crypt(store: Store, *argv: str | Path) -> Run:
    return cli(*(str(a) for a in argv), *store.options)


def usage_error(result: Run, *words: str) -> None:
    assert result.code == 2, (result.code, result.err)
    assert result.err.startswith("img-crypt: error: ") and result.err.count("\n") == 1
    for word in words:
        assert word in result.err, result.err


def encrypted(store: Store, plain: Path, out: Path, *argv: str) -> str:
    """Encrypt ``plain`` to LUKS1 ``out``; return the KEK id."""
    kek = store.manager.create_key("luks")
    result = img_crypt(store, "encrypt", "--format", "luks", plain, out, "--kek", kek, *argv)
    assert result.code == 0, result.err
    return kek


class FakeStdin:
    """Stands in for ``sys.stdin``: the CLI reads ``sys.stdin.buffer``."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def isatty(self) -> bool:
        return False


class FakeStdout:
    """Stands in for ``sys.stdout``: the CLI writes data to ``sys.stdout.buffer``."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def isatty(self) -> bool:
        return False


def test_encrypt_format_luks_writes_a_luks1_image_and_decrypt_gives_it_back(
        store: Store, plain: Path, tmp_path: Path) -> None:
    out, back = tmp_path / "disk.luks", tmp_path / "back.raw"
    kek = encrypted(store, plain, out)
    assert luks.is_luks(out.read_bytes()[:6])
    result = img_crypt(store, "decrypt", out, back, "--kek", kek, "--size", str(SIZE))
    assert result.code == 0, result.err
    assert back.read_bytes() == plain.read_bytes()


def test_the_passphrase_is_the_lowercase_hex_of_the_kek(local: Store, plain: Path,
                                                        tmp_path: Path) -> None:
    out, back = tmp_path / "disk.luks", io.BytesIO()
    kek = encrypted(local, plain, out)
    hexkey = binascii.hexlify(local.manager.get_key(kek))
    assert luks.decrypt(out.read_bytes(), back, hexkey, size=SIZE) == SIZE
    assert back.getvalue() == plain.read_bytes()


def test_encrypt_luks_reports_the_plaintext_size_and_the_key(local: Store, plain: Path,
                                                            tmp_path: Path) -> None:
    kek = local.manager.create_key("k")
    result = img_crypt(local, "encrypt", "--format", "luks", plain, tmp_path / "o", "--kek", kek)
    assert f"os_decrypt_size={SIZE}" in result.out
    assert f"local:{kek}" in result.out


def test_encrypt_luks_without_kek_creates_exactly_one_new_key(store: Store, plain: Path,
                                                              tmp_path: Path) -> None:
    result = img_crypt(store, "encrypt", "--format", "luks", plain, tmp_path / "o")
    assert result.code == 0, result.err
    (key_id,) = store.key_ids()
    assert f"{key_id} (new)" in result.out


def test_the_passphrase_is_never_printed(local: Store, plain: Path, tmp_path: Path) -> None:
    kek = local.manager.create_key("k")
    hexkey = binascii.hexlify(local.manager.get_key(kek)).decode()
    result = img_crypt(local, "--debug", "encrypt", "--format", "luks", plain, tmp_path / "o",
                       "--kek", kek)
    assert result.code == 0, result.err
    assert hexkey not in result.out + result.err


def test_format_luks_takes_at_most_one_kek(store: Store, plain: Path, tmp_path: Path) -> None:
    a, b = store.manager.create_key("a"), store.manager.create_key("b")
    result = img_crypt(store, "encrypt", "--format", "luks", plain, tmp_path / "o",
                       "--kek", a, "--kek", b)
    usage_error(result, "one --kek")
    assert not (tmp_path / "o").exists()


def test_image_id_registers_the_image_as_consumer_of_the_kek(store: Store, plain: Path,
                                                             tmp_path: Path) -> None:
    kek = encrypted(store, plain, tmp_path / "o", "--image-id", IMAGE)
    assert store.consumers(kek) == [IMAGE]


def test_a_failed_encrypt_removes_only_what_it_created(store: Store, plain: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = store.manager.create_key("before")
    store.manager.add_consumer(before, Consumer("image", "image", IMAGE))
    shared = store.manager.create_key("shared")

    def full(*args: Any, **kwargs: Any) -> int:
        args[1].write(b"half a header")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(luks, "encrypt", full)
    out = tmp_path / "o"
    for kek in ([], ["--kek", before], ["--kek", shared]):
        result = img_crypt(store, "encrypt", "--format", "luks", plain, out, *kek,
                           "--image-id", IMAGE)
        assert result.code == 1 and result.err.count("\n") == 1, result.err
        assert not out.exists()
    assert store.key_ids() == sorted([before, shared])  # the new key is gone
    assert store.consumers(before) == [IMAGE]  # there before: kept
    assert store.consumers(shared) == []  # added by the failed run: undone


def test_decrypt_with_a_wrong_kek_fails_opaquely_and_writes_nothing(
        store: Store, plain: Path, tmp_path: Path) -> None:
    out, back = tmp_path / "disk.luks", tmp_path / "back.raw"
    encrypted(store, plain, out)
    wrong = store.manager.create_key("wrong")
    result = img_crypt(store, "decrypt", out, back, "--kek", wrong)
    assert result.code == 1
    assert result.err == f"img-crypt: error: {AuthenticationError()}\n"
    assert not back.exists()
    assert list(tmp_path.glob("back.raw*")) == []


def test_decrypt_without_size_pads_to_a_whole_sector_and_says_so(
        local: Store, plain: Path, tmp_path: Path) -> None:
    out, back = tmp_path / "disk.luks", tmp_path / "back.raw"
    kek = encrypted(local, plain, out)
    result = img_crypt(local, "decrypt", out, back, "--kek", kek)
    assert result.code == 0, result.err
    padded = -(-SIZE // 512) * 512
    assert back.read_bytes() == plain.read_bytes() + bytes(padded - SIZE)
    assert "padded" in result.out and "--size" in result.out


@pytest.mark.parametrize("size", [SIZE - 512, SIZE + 512])
def test_decrypt_with_a_size_the_payload_does_not_match_fails(
        local: Store, plain: Path, tmp_path: Path, size: int) -> None:
    out, back = tmp_path / "disk.luks", tmp_path / "back.raw"
    kek = encrypted(local, plain, out)
    result = img_crypt(local, "decrypt", out, back, "--kek", kek, "--size", str(size))
    assert result.code == 1 and "plaintext size" in result.err, result.err
    assert not back.exists()


def test_decrypt_reads_a_luks_pipe_and_writes_to_stdout(
        local: Store, plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "disk.luks"
    kek = encrypted(local, plain, out)
    stdout = FakeStdout()
    with out.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", FakeStdin(f))
        monkeypatch.setattr(sys, "stdout", stdout)
        from img_crypt.cli import main

        code = main(["decrypt", "-", "-", "--kek", kek, "--size", str(SIZE), *local.options])
    assert code == 0
    assert stdout.buffer.getvalue() == plain.read_bytes()


def test_encrypt_luks_reads_a_pipe(local: Store, plain: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out, back = tmp_path / "disk.luks", tmp_path / "back.raw"
    kek = local.manager.create_key("k")
    with plain.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", FakeStdin(f))
        result = img_crypt(local, "encrypt", "--format", "luks", "-", out, "--kek", kek)
    assert result.code == 0, result.err
    assert img_crypt(local, "decrypt", out, back, "--kek", kek, "--size", str(SIZE)).code == 0
    assert back.read_bytes() == plain.read_bytes()


def test_an_img_crypt_file_from_a_pipe_still_decrypts(
        local: Store, plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, back = tmp_path / "disk.icr", tmp_path / "back.raw"
    assert img_crypt(local, "encrypt", plain, out).code == 0
    with out.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", FakeStdin(f))
        result = img_crypt(local, "decrypt", "-", back)
    assert result.code == 0, result.err
    assert back.read_bytes() == plain.read_bytes()


def test_decrypt_of_luks_without_kek_is_a_usage_error(local: Store, plain: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "disk.luks"
    encrypted(local, plain, out)
    usage_error(img_crypt(local, "decrypt", out, tmp_path / "b"), "--kek")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("option", [["--image-id", IMAGE], ["--range", "0:10"]])
def test_decrypt_of_luks_refuses_image_id_and_range(local: Store, plain: Path, tmp_path: Path,
                                                    option: list[str]) -> None:
    out = tmp_path / "disk.luks"
    kek = encrypted(local, plain, out)
    usage_error(img_crypt(local, "decrypt", out, tmp_path / "b", "--kek", kek, *option),
                option[0])
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("option", [["--kek", "k"], ["--size", "10"]])
def test_kek_and_size_are_refused_for_an_img_crypt_file(local: Store, plain: Path,
                                                        tmp_path: Path,
                                                        option: list[str]) -> None:
    out = tmp_path / "disk.icr"
    assert img_crypt(local, "encrypt", plain, out).code == 0
    usage_error(img_crypt(local, "decrypt", out, tmp_path / "b", *option), "LUKS1")


@pytest.mark.parametrize("bad", ["-1", "x", "1.5"])
def test_size_must_be_a_byte_count(local: Store, tmp_path: Path, bad: str) -> None:
    result = img_crypt(local, "decrypt", tmp_path / "i", tmp_path / "o", "--size", bad)
    assert result.code == 2 and f"not a byte count: {bad!r}" in result.err, result.err


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_a_kek_that_is_not_256_bits_is_refused(local: Store, plain: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               command: str) -> None:
    out = tmp_path / "disk.luks"
    kek = encrypted(local, plain, out)
    monkeypatch.setattr(LocalKeyStore, "get_key", lambda self, key_id: bytes(16))
    argv = ["--format", "luks", plain, tmp_path / "o"] if command == "encrypt" \
        else [out, tmp_path / "o"]
    result = img_crypt(local, command, *argv, "--kek", kek)
    assert result.code == 1 and "not a 256-bit key" in result.err, result.err
    assert not (tmp_path / "o").exists()


def test_inspect_describes_a_luks_image_without_a_key(local: Store, plain: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "disk.luks"
    encrypted(local, plain, out)
    header = luks.inspect(out.read_bytes())
    result = cli("inspect", str(out), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "format": "luks", "version": 1, "cipher": "aes-xts-plain64", "hash": "sha256",
        "key_bits": 512, "key_slots": [0], "payload_offset": luks.PAYLOAD_OFFSET * 512,
        "uuid": header.uuid}
    text = cli("inspect", str(out)).out
    for line in ("format:     LUKS1", "cipher:     aes-xts-plain64", "hash:       sha256",
                 "key bits:   512", "key slots:  0 in use", f"uuid:       {header.uuid}",
                 f"payload:    at byte {luks.PAYLOAD_OFFSET * 512}"):
        assert line in text, text


def test_inspect_reads_a_luks_stream(local: Store, plain: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "disk.luks"
    encrypted(local, plain, out)
    with out.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", FakeStdin(f))
        result = cli("inspect", "-", "--json")
    assert json.loads(result.out)["format"] == "luks"


def test_inspect_escapes_the_uuid_text_of_a_hostile_header(tmp_path: Path,
                                                           local: Store, plain: Path) -> None:
    out = tmp_path / "disk.luks"
    encrypted(local, plain, out)
    data = bytearray(out.read_bytes())
    data[168:168 + 40] = b"\x1b[2J\x1b]0;owned\x07".ljust(40, b"\0")  # the uuid field
    out.write_bytes(bytes(data))
    result = cli("inspect", str(out))
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\\x1b[2J" in result.out


def test_cryptsetup_and_qemu_open_what_the_cli_writes(local: Store, plain: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "disk.luks"
    kek = encrypted(local, plain, out)
    hexkey = binascii.hexlify(local.manager.get_key(kek))
    run("cryptsetup", "open", "--test-passphrase", "--key-file=-", str(out), stdin=hexkey)
    got = qemu_decrypt(out, passfile(tmp_path, hexkey), tmp_path / "back.raw")
    assert got == plain.read_bytes() + bytes(-(-SIZE // 512) * 512 - SIZE)

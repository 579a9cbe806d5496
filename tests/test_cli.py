"""The ``img-crypt`` command line, as README.md promises it to users.

Most tests run ``img_crypt.cli.main(argv)`` in process, each with its own key store (the
``IMG_CRYPT_KEY_STORE`` environment variable points into ``tmp_path``). What depends on real
file descriptors (stdin/stdout streams, a broken pipe, a terminal on stderr or stdout) runs
``python -m img_crypt`` in a subprocess.

Exit codes: 0 success; 1 failure with exactly one line ``img-crypt: error: ...`` on stderr;
2 usage error.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import pty
import re
import shutil
import stat
import struct
import subprocess
import sys
import termios
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from img_crypt import __version__
from img_crypt.cli import main
from img_crypt.keys.base import Consumer
from img_crypt.keys.local import LocalKeyStore

REPO = Path(__file__).resolve().parent.parent
CHUNK = 16384  # plaintext bytes per full chunk
CT_CHUNK = 16400  # ciphertext bytes per full chunk
PREFIX = 56  # salt (24) + commitment (32)
PLAIN_SIZE = 2 * CHUNK + 500  # three chunks, the last one partial
HEADER_BOUND = 165  # one local slot with a UUID key id, and an image id (FORMAT.md section 9)
HEADER_UNBOUND = HEADER_BOUND - 16
IMAGE = "5c1b7a52-0f8e-4d0a-9a57-3c1f2d4e6b80"
OTHER_IMAGE = "0e6e2d0c-7d55-4f3b-8a3c-9f6b1c2d3e4f"
AUTH_MESSAGE = ("img-crypt: error: authentication failed: the file is corrupt, truncated, "
                "or not encrypted under this key\n")
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


# --- the test world ------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


class Ctx:
    """One test's world: a fresh key store (the default, through ``IMG_CRYPT_KEY_STORE``), a
    work directory holding a three-chunk plaintext file, and ``cli(...)`` to run ``main``.

    ``key_id`` (a key in the store) and ``encrypted`` (the plaintext encrypted under it and
    bound to IMAGE) are made on first use, so a test that uses neither starts with no key.
    """

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp = tmp_path
        self._capsys = capsys
        self.store_dir = tmp_path / "keys"
        self.store = LocalKeyStore(self.store_dir)
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.plaintext = os.urandom(PLAIN_SIZE)
        self.plain_file = self.work / "disk.raw"
        self.plain_file.write_bytes(self.plaintext)

    def cli(self, *argv: str | Path) -> Run:
        self._capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self._capsys.readouterr()
        return Run(code, captured.out, captured.err)

    @functools.cached_property
    def key_id(self) -> str:
        return self.store.create_key(name="test")

    @functools.cached_property
    def encrypted(self) -> Path:
        path = self.work / "disk.raw.icr"
        result = self.cli("encrypt", self.plain_file, path, "--kek", self.key_id,
                          "--image-id", IMAGE)
        assert result.code == 0, result.err
        return path

    def key_ids(self) -> list[str]:
        return [k.key_id for k in self.store.list_keys()]

    def only(self, key: str) -> Path:
        """A second private key store holding a copy of ``key`` alone."""
        target = self.tmp / f"only-{key}"
        target.mkdir(mode=0o700)
        shutil.copy2(self.store_dir / f"{key}.key.json", target / f"{key}.key.json")
        return target

    def inspect_json(self, path: Path) -> dict[str, Any]:
        result = self.cli("inspect", path, "--json")
        assert result.code == 0, result.err
        info = json.loads(result.out)
        assert isinstance(info, dict)
        return info

    def part_files(self) -> list[str]:
        return [p.name for p in self.work.iterdir() if p.name.endswith(".part")]

    def env(self) -> dict[str, str]:
        """Environment for a subprocess: this key store, and the repository on PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "COLUMNS"}}
        env["PYTHONPATH"] = str(REPO)
        env["IMG_CRYPT_KEY_STORE"] = str(self.store_dir)
        return env

    def args_for(self, command: str) -> tuple[Path, list[str]]:
        """INPUT and options of a successful ``command`` (encrypt, decrypt or rewrap)."""
        if command == "encrypt":
            return self.plain_file, ["--kek", self.key_id]
        if command == "decrypt":
            return self.encrypted, []
        return self.encrypted, ["--add-kek", self.store.create_key()]


@pytest.fixture
def ctx(tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Ctx:
    monkeypatch.setenv("IMG_CRYPT_KEY_STORE", str(tmp_path / "keys"))
    return Ctx(tmp_path, capsys)


class FakeStdin:
    """Stands in for ``sys.stdin``: the CLI reads ``sys.stdin.buffer``."""

    def __init__(self, buffer: object) -> None:
        self.buffer = buffer

    def isatty(self) -> bool:
        return False


def assert_one_error_line(err: str) -> None:
    """Exactly one line ``img-crypt: error: ...`` and no traceback."""
    assert err.startswith("img-crypt: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


def img_crypt(*argv: str | Path) -> list[str]:
    """The command line of the real program (``python -m img_crypt``, as ``img-crypt``)."""
    return [sys.executable, "-m", "img_crypt", *(str(a) for a in argv)]


def test_python_dash_m_img_crypt_is_the_command_line(ctx: Ctx) -> None:
    assert (REPO / "img_crypt" / "__main__.py").is_file()
    result = subprocess.run(img_crypt("--version"), env=ctx.env(), capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.decode() == f"img-crypt {__version__}\n"


# --- encrypt, decrypt ----------------------------------------------------------------------

def test_encrypt_without_kek_creates_exactly_one_new_key_and_names_it(ctx: Ctx) -> None:
    result = ctx.cli("encrypt", ctx.plain_file, ctx.work / "out.icr")

    assert result.code == 0, result.err
    assert result.err == ""
    [created] = ctx.key_ids()
    assert re.fullmatch(UUID_RE, created)
    assert result.out.splitlines()[0] == f"key: local:{created} (new)"
    assert re.fullmatch(r"encrypted \S*disk\.raw -> \S*out\.icr: 32\.5 KiB plaintext, "
                        r"[\d.]+ KiB encrypted, image unbound", result.out.splitlines()[1])
    assert len(result.out.splitlines()) == 2
    listed = ctx.cli("keys", "list").out.splitlines()
    assert len(listed) == 1 and listed[0].startswith(created)


def test_decrypt_gives_back_identical_bytes(ctx: Ctx) -> None:
    assert ctx.cli("encrypt", ctx.plain_file, ctx.work / "out.icr").code == 0

    result = ctx.cli("decrypt", ctx.work / "out.icr", ctx.work / "back.raw")

    assert result.code == 0, result.err
    assert (ctx.work / "back.raw").read_bytes() == ctx.plaintext
    assert re.fullmatch(r"decrypted \S*out\.icr -> \S*back\.raw: 32\.5 KiB\n", result.out)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK])
def test_roundtrip_at_chunk_edges(ctx: Ctx, size: int) -> None:
    data = os.urandom(size)
    (ctx.work / "in").write_bytes(data)
    assert ctx.cli("encrypt", ctx.work / "in", ctx.work / "ct", "--kek", ctx.key_id).code == 0
    assert ctx.cli("decrypt", ctx.work / "ct", ctx.work / "out").code == 0
    assert (ctx.work / "out").read_bytes() == data


def test_repeated_kek_uses_existing_keys_and_creates_none(ctx: Ctx) -> None:
    first, second = ctx.store.create_key(), ctx.store.create_key()

    result = ctx.cli("encrypt", ctx.plain_file, ctx.work / "out.icr",
                     "--kek", first, "--kek", second)

    assert result.code == 0, result.err
    assert sorted(ctx.key_ids()) == sorted([first, second])
    assert result.out.splitlines()[:2] == [f"key: local:{first}", f"key: local:{second}"]
    assert "(new)" not in result.out
    assert ctx.inspect_json(ctx.work / "out.icr")["key_slots"] == [
        {"kind": "local", "key_id": first}, {"kind": "local", "key_id": second}]
    for key in (first, second):  # either key alone opens the file
        out = ctx.work / f"back-{key}"
        opened = ctx.cli("decrypt", ctx.work / "out.icr", out, "--key-store", ctx.only(key))
        assert opened.code == 0, opened.err
        assert out.read_bytes() == ctx.plaintext


def test_the_same_kek_twice_is_refused(ctx: Ctx) -> None:
    result = ctx.cli("encrypt", ctx.plain_file, ctx.work / "out.icr",
                     "--kek", ctx.key_id, "--kek", ctx.key_id)

    assert result.code in (1, 2)
    assert_one_error_line(result.err)
    assert sorted(os.listdir(ctx.work)) == ["disk.raw"]


def test_encrypt_with_an_unknown_kek_fails_and_creates_nothing(ctx: Ctx) -> None:
    existing = ctx.key_id

    result = ctx.cli("encrypt", ctx.plain_file, ctx.work / "out.icr", "--kek", str(uuid.uuid4()))

    assert result.code == 1
    assert_one_error_line(result.err)
    assert "not found" in result.err
    assert ctx.key_ids() == [existing]
    assert sorted(os.listdir(ctx.work)) == ["disk.raw"]


def test_decrypt_without_the_key_fails(ctx: Ctx) -> None:
    empty = ctx.tmp / "empty-store"
    empty.mkdir(mode=0o700)

    result = ctx.cli("decrypt", ctx.encrypted, ctx.work / "out", "--key-store", empty)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert "no key available" in result.err
    assert not (ctx.work / "out").exists()


# --- inspect -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, CHUNK, PLAIN_SIZE])
@pytest.mark.parametrize("image", [None, IMAGE])
def test_inspect_json_describes_the_file(ctx: Ctx, size: int, image: str | None) -> None:
    (ctx.work / "in").write_bytes(os.urandom(size))
    bind = ["--image-id", image] if image else []
    assert ctx.cli("encrypt", ctx.work / "in", ctx.work / "ct", "--kek", ctx.key_id,
                   *bind).code == 0

    info = ctx.inspect_json(ctx.work / "ct")

    chunks = size // CHUNK + 1
    header = HEADER_BOUND if image else HEADER_UNBOUND
    assert info["format"] == "img-crypt"
    assert info["version"] == 1
    assert info["suite"] == 1
    assert "Cobblestone-256" in info["suite_name"]
    assert info["image_id"] == image
    assert info["key_slots"] == [{"kind": "local", "key_id": ctx.key_id}]
    assert info["header_size"] == header
    assert info["payload_size"] == PREFIX + size + 16 * chunks
    assert info["plaintext_size"] == size
    assert header + info["payload_size"] == (ctx.work / "ct").stat().st_size


def test_inspect_human_output(ctx: Ctx) -> None:
    result = ctx.cli("inspect", ctx.encrypted)

    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "format:     img-crypt v1",
        "suite:      1 (Cobblestone-256 payload, AES-256-GCM key slots, HMAC-SHA-256 header)",
        f"image id:   {IMAGE}",
        "key slots:  1",
        f"  local     {ctx.key_id}",
        f"header:     {HEADER_BOUND} bytes",
        f"payload:    {PREFIX + PLAIN_SIZE + 16 * 3} bytes",
        f"plaintext:  {PLAIN_SIZE} bytes",
    ]


def test_inspect_flags_an_impossible_payload_length(ctx: Ctx) -> None:
    cut = ctx.work / "cut.icr"
    cut.write_bytes(ctx.encrypted.read_bytes()[:HEADER_BOUND + PREFIX + CT_CHUNK])

    assert ctx.inspect_json(cut)["plaintext_size"] is None
    human = ctx.cli("inspect", cut)
    assert human.code == 0
    assert "plaintext:  invalid payload length" in human.out


@pytest.mark.parametrize("store_state", ["missing", "empty"])
def test_inspect_needs_no_key_store(ctx: Ctx, monkeypatch: pytest.MonkeyPatch,
                                    store_state: str) -> None:
    encrypted = ctx.encrypted
    elsewhere = ctx.tmp / "no-keys-here"
    if store_state == "empty":
        elsewhere.mkdir(mode=0o700)
    monkeypatch.setenv("IMG_CRYPT_KEY_STORE", str(elsewhere))

    result = ctx.cli("inspect", encrypted, "--json")

    assert result.code == 0, result.err
    assert json.loads(result.out)["plaintext_size"] == PLAIN_SIZE
    assert not elsewhere.exists() or list(elsewhere.iterdir()) == []


def test_inspect_reads_a_stream_from_stdin(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    with ctx.encrypted.open("rb") as stdin_file:
        monkeypatch.setattr(sys, "stdin", FakeStdin(stdin_file))
        result = ctx.cli("inspect", "-", "--json")

    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["image_id"] == IMAGE
    assert info["header_size"] == HEADER_BOUND
    # a stream is not read past its header (it may never end): sizes unknown
    assert info["payload_size"] is None and info["plaintext_size"] is None


def test_inspect_of_a_non_img_crypt_file_fails(ctx: Ctx) -> None:
    result = ctx.cli("inspect", ctx.plain_file)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert "not an img-crypt file" in result.err


# --- image id binding ----------------------------------------------------------------------

def test_decrypt_with_the_bound_image_id(ctx: Ctx) -> None:
    result = ctx.cli("decrypt", ctx.encrypted, ctx.work / "out", "--image-id", IMAGE)

    assert result.code == 0, result.err
    assert (ctx.work / "out").read_bytes() == ctx.plaintext


def test_decrypt_with_another_image_id_fails(ctx: Ctx) -> None:
    result = ctx.cli("decrypt", ctx.encrypted, ctx.work / "out", "--image-id", OTHER_IMAGE)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert OTHER_IMAGE in result.err
    assert not (ctx.work / "out").exists()
    assert ctx.part_files() == []


def test_an_unbound_file_fails_when_an_image_id_is_required(ctx: Ctx) -> None:
    assert ctx.cli("encrypt", ctx.plain_file, ctx.work / "ct", "--kek", ctx.key_id).code == 0

    result = ctx.cli("decrypt", ctx.work / "ct", ctx.work / "out", "--image-id", IMAGE)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert not (ctx.work / "out").exists()


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
@pytest.mark.parametrize("bad", ["not-a-uuid", "", "5c1b7a52"])
def test_image_id_must_be_a_uuid(ctx: Ctx, command: str, bad: str) -> None:
    source, options = ctx.args_for(command)

    result = ctx.cli(command, source, ctx.work / "out", *options, "--image-id", bad)

    assert result.code == 2
    assert "not a UUID" in result.err
    assert not (ctx.work / "out").exists()


# --- decrypt --range -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "start", "end"), [
    ("0:10", 0, 10),
    ("16383:16385", 16383, 16385),  # spans a chunk boundary
    (f"{CHUNK}:{2 * CHUNK}", CHUNK, 2 * CHUNK),  # exactly the middle chunk
    ("5:", 5, PLAIN_SIZE),
    (f"{2 * CHUNK + 1}:", 2 * CHUNK + 1, PLAIN_SIZE),  # inside the final chunk
    (":777", 0, 777),
    (":", 0, PLAIN_SIZE),
    (f"0:{PLAIN_SIZE}", 0, PLAIN_SIZE),
    (f"{PLAIN_SIZE}:{PLAIN_SIZE}", PLAIN_SIZE, PLAIN_SIZE),  # empty, at the end
    ("7:7", 7, 7),
])
def test_range_is_the_slice_of_the_plaintext(ctx: Ctx, text: str, start: int,
                                             end: int) -> None:
    result = ctx.cli("decrypt", ctx.encrypted, ctx.work / "part", "--range", text)

    assert result.code == 0, result.err
    assert (ctx.work / "part").read_bytes() == ctx.plaintext[start:end]
    assert f"bytes {start}:{end}" in result.out


@pytest.mark.parametrize("text", [f"0:{PLAIN_SIZE + 1}", f"{PLAIN_SIZE + 1}:",
                                  f"{PLAIN_SIZE + 5}:{PLAIN_SIZE + 9}"])
def test_range_beyond_the_plaintext_is_a_usage_error(ctx: Ctx, text: str) -> None:
    result = ctx.cli("decrypt", ctx.encrypted, ctx.work / "part", "--range", text)

    assert result.code == 2
    assert_one_error_line(result.err)
    assert not (ctx.work / "part").exists()
    assert ctx.part_files() == []


@pytest.mark.parametrize("text", ["5", "", "a:b", "1:2:3", "10:5", "-1:4", "0x10:20", "1.5:2"])
def test_malformed_range_is_a_usage_error(ctx: Ctx, text: str) -> None:
    result = ctx.cli("decrypt", ctx.encrypted, ctx.work / "part", f"--range={text}")

    assert result.code == 2
    assert "byte range" in result.err
    assert not (ctx.work / "part").exists()


def test_range_needs_a_seekable_input(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    with ctx.encrypted.open("rb") as stdin_file:
        monkeypatch.setattr(sys, "stdin", FakeStdin(stdin_file))
        result = ctx.cli("decrypt", "-", ctx.work / "part", "--range", "0:10")

    assert result.code == 2
    assert_one_error_line(result.err)
    assert "--range" in result.err
    assert not (ctx.work / "part").exists()


def _flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


@pytest.mark.parametrize(("case", "text"), [
    ("header MAC", "0:10"),
    ("commitment", "0:10"),
    ("final chunk", "0:10"),  # the final chunk is always read: it proves the length
    ("first chunk", "0:10"),
    ("middle chunk", f"{CHUNK}:{CHUNK + 10}"),
    ("truncated", "0:10"),
])
def test_range_refuses_a_tampered_file(ctx: Ctx, case: str, text: str) -> None:
    data = ctx.encrypted.read_bytes()
    chunk0 = HEADER_BOUND + PREFIX
    bad = {
        "header MAC": _flipped(data, HEADER_BOUND - 1),
        "commitment": _flipped(data, HEADER_BOUND + 30),
        "final chunk": _flipped(data, len(data) - 20),
        "first chunk": _flipped(data, chunk0 + 5),
        "middle chunk": _flipped(data, chunk0 + CT_CHUNK + 5),
        "truncated": data[:-1],
    }[case]
    (ctx.work / "bad.icr").write_bytes(bad)

    result = ctx.cli("decrypt", ctx.work / "bad.icr", ctx.work / "part", "--range", text)

    assert result.code == 1
    assert result.err == AUTH_MESSAGE
    assert not (ctx.work / "part").exists()
    assert ctx.part_files() == []


def test_range_reads_only_the_chunks_it_needs(ctx: Ctx) -> None:
    """README: random access decrypts only the chunks of the range (and the final chunk)."""
    data = ctx.encrypted.read_bytes()
    (ctx.work / "bad.icr").write_bytes(_flipped(data, HEADER_BOUND + PREFIX + CT_CHUNK + 5))

    result = ctx.cli("decrypt", ctx.work / "bad.icr", ctx.work / "part", "--range", "0:10")

    assert result.code == 0, result.err
    assert (ctx.work / "part").read_bytes() == ctx.plaintext[:10]


# --- rewrap --------------------------------------------------------------------------------

def test_rewrap_add_kek_copies_the_payload_byte_for_byte(ctx: Ctx) -> None:
    old, new = ctx.key_id, ctx.store.create_key()

    result = ctx.cli("rewrap", ctx.encrypted, ctx.work / "two.icr", "--add-kek", new)

    assert result.code == 0, result.err
    assert f"key slots local:{old}, local:{new}" in result.out
    before, after = ctx.inspect_json(ctx.encrypted), ctx.inspect_json(ctx.work / "two.icr")
    assert after["key_slots"] == [{"kind": "local", "key_id": old},
                                  {"kind": "local", "key_id": new}]
    assert after["image_id"] == IMAGE
    assert after["payload_size"] == before["payload_size"]
    old_file, new_file = ctx.encrypted.read_bytes(), (ctx.work / "two.icr").read_bytes()
    assert new_file[after["header_size"]:] == old_file[before["header_size"]:]
    assert new_file[:after["header_size"]] != old_file[:before["header_size"]]


def test_rewrap_remove_kek_locks_out_the_old_key(ctx: Ctx) -> None:
    old, new = ctx.key_id, ctx.store.create_key()
    assert ctx.cli("rewrap", ctx.encrypted, ctx.work / "both.icr", "--add-kek", new).code == 0

    result = ctx.cli("rewrap", ctx.work / "both.icr", ctx.work / "new.icr", "--remove-kek", old)

    assert result.code == 0, result.err
    assert ctx.inspect_json(ctx.work / "new.icr")["key_slots"] == [
        {"kind": "local", "key_id": new}]
    only_old, only_new = ctx.only(old), ctx.only(new)

    locked_out = ctx.cli("decrypt", ctx.work / "new.icr", ctx.work / "a", "--key-store", only_old)
    assert locked_out.code == 1
    assert_one_error_line(locked_out.err)
    assert not (ctx.work / "a").exists()

    opened = ctx.cli("decrypt", ctx.work / "new.icr", ctx.work / "b", "--key-store", only_new,
                     "--image-id", IMAGE)
    assert opened.code == 0, opened.err
    assert (ctx.work / "b").read_bytes() == ctx.plaintext
    # rewrap wrote a new file: the original still opens with the old key
    assert ctx.cli("decrypt", ctx.encrypted, ctx.work / "c", "--key-store", only_old).code == 0


def test_rewrap_needs_a_key_of_the_file(ctx: Ctx) -> None:
    encrypted, new = ctx.encrypted, ctx.store.create_key()

    result = ctx.cli("rewrap", encrypted, ctx.work / "x.icr", "--add-kek", new,
                     "--key-store", ctx.only(new))

    assert result.code == 1
    assert_one_error_line(result.err)
    assert not (ctx.work / "x.icr").exists()
    assert ctx.part_files() == []


def test_rewrap_with_neither_option_is_a_usage_error(ctx: Ctx) -> None:
    result = ctx.cli("rewrap", ctx.encrypted, ctx.work / "x.icr")

    assert result.code == 2
    assert_one_error_line(result.err)
    assert not (ctx.work / "x.icr").exists()


def test_rewrap_removing_a_slot_the_file_lacks_is_a_usage_error(ctx: Ctx) -> None:
    encrypted, stranger = ctx.encrypted, ctx.store.create_key()

    result = ctx.cli("rewrap", encrypted, ctx.work / "x.icr", "--remove-kek", stranger)

    assert result.code == 2
    assert_one_error_line(result.err)
    assert stranger in result.err
    assert not (ctx.work / "x.icr").exists()
    assert ctx.part_files() == []


def test_rewrap_removing_the_last_slot_is_a_usage_error(ctx: Ctx) -> None:
    result = ctx.cli("rewrap", ctx.encrypted, ctx.work / "x.icr", "--remove-kek", ctx.key_id)

    assert result.code == 2
    assert_one_error_line(result.err)
    assert not (ctx.work / "x.icr").exists()
    assert ctx.part_files() == []


# --- keys ----------------------------------------------------------------------------------

def test_keys_create_list_and_delete(ctx: Ctx) -> None:
    assert ctx.cli("keys", "list").out == ""

    created = ctx.cli("keys", "create", "--name", "backup")
    assert created.code == 0, created.err
    key = created.out.strip()
    assert re.fullmatch(UUID_RE, key)
    unnamed = ctx.cli("keys", "create").out.strip()

    listing = ctx.cli("keys", "list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{key}  ") and lines[0].endswith("consumers=0  backup")
    assert lines[1].startswith(f"{unnamed}  ") and lines[1].endswith("consumers=0")

    as_json = json.loads(ctx.cli("keys", "list", "--json").out)
    assert [k["key_id"] for k in as_json] == [key, unnamed]
    assert [k["name"] for k in as_json] == ["backup", None]
    assert all(k["consumers"] == 0 and k["created"] for k in as_json)

    deleted = ctx.cli("keys", "delete", key)
    assert deleted.code == 0, deleted.err
    assert deleted.out == f"deleted key {key}\n"
    assert ctx.key_ids() == [unnamed]


def test_keys_list_of_a_missing_store_is_empty(ctx: Ctx) -> None:
    result = ctx.cli("keys", "list", "--json")

    assert result.code == 0
    assert json.loads(result.out) == []
    assert not ctx.store_dir.exists()


def test_keys_options_accept_an_explicit_key_store(ctx: Ctx) -> None:
    other = ctx.tmp / "other-store"

    key = ctx.cli("keys", "create", "--key-store", other).out.strip()

    assert (other / f"{key}.key.json").is_file()
    assert ctx.key_ids() == []
    assert ctx.cli("keys", "list", "--key-store", other).out.startswith(key)


def test_keys_delete_refuses_a_key_with_consumers_unless_forced(ctx: Ctx) -> None:
    key = ctx.key_id
    ctx.store.add_consumer(key, Consumer(service="image", resource_type="image",
                                         resource_id=str(uuid.uuid4())))
    assert "consumers=1" in ctx.cli("keys", "list").out

    refused = ctx.cli("keys", "delete", key)
    assert refused.code == 1
    assert_one_error_line(refused.err)
    assert "consumer" in refused.err
    assert ctx.key_ids() == [key]

    forced = ctx.cli("keys", "delete", key, "--force")
    assert forced.code == 0, forced.err
    assert ctx.key_ids() == []


@pytest.mark.parametrize("key", ["0b6c1e57-8d2a-4a8e-9c1e-2f3a4b5c6d7e", "not-a-uuid",
                                 "../../etc/passwd"])
def test_keys_delete_of_an_unknown_key_fails(ctx: Ctx, key: str) -> None:
    existing = ctx.key_id

    result = ctx.cli("keys", "delete", key)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert "not found" in result.err
    assert ctx.key_ids() == [existing]


# --- outputs -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["encrypt", "decrypt", "rewrap"])
def test_an_existing_output_is_not_touched_without_force(ctx: Ctx, command: str) -> None:
    source, options = ctx.args_for(command)
    keys = ctx.key_ids()
    target = ctx.work / "existing"
    target.write_bytes(b"precious")
    os.utime(target, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = target.stat()

    result = ctx.cli(command, source, target, *options)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert "--force" in result.err
    assert target.read_bytes() == b"precious"
    after = target.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert ctx.part_files() == []
    assert ctx.key_ids() == keys


@pytest.mark.parametrize("command", ["encrypt", "decrypt", "rewrap"])
def test_an_existing_output_is_replaced_with_force(ctx: Ctx, command: str) -> None:
    source, options = ctx.args_for(command)
    target = ctx.work / "existing"
    target.write_bytes(b"precious")

    result = ctx.cli(command, source, target, *options, "--force")

    assert result.code == 0, result.err
    if command != "decrypt":
        assert ctx.cli("decrypt", target, ctx.work / "check").code == 0
        target = ctx.work / "check"
    assert target.read_bytes() == ctx.plaintext
    assert ctx.part_files() == []


def test_a_failed_forced_decrypt_keeps_the_existing_output(ctx: Ctx) -> None:
    tampered = bytearray(ctx.encrypted.read_bytes())
    tampered[-1] ^= 1
    (ctx.work / "bad.icr").write_bytes(tampered)
    target = ctx.work / "existing"
    target.write_bytes(b"precious")

    result = ctx.cli("decrypt", ctx.work / "bad.icr", target, "--force")

    assert result.code == 1
    assert target.read_bytes() == b"precious"
    assert ctx.part_files() == []


def _failing_decrypt(ctx: Ctx, case: str) -> list[str | Path]:
    """INPUT and options of a decrypt that must fail with exit code 1."""
    data = ctx.encrypted.read_bytes()
    bad = ctx.tmp / "bad.icr"
    mid = HEADER_BOUND + PREFIX + CT_CHUNK + 100
    variants = {
        "not an img-crypt file": b"just some bytes, no magic" * 100,
        "empty": b"",
        "tampered last byte": data[:-1] + bytes([data[-1] ^ 0x80]),
        "tampered middle chunk": data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1:],
        "truncated": data[:-100],
        "trailing data": data + b"\0",
    }
    if case in variants:
        bad.write_bytes(variants[case])
        return [bad]
    options: dict[str, list[str | Path]] = {
        "wrong image id": [ctx.encrypted, "--image-id", OTHER_IMAGE],
        "missing input": [ctx.tmp / "no-such-file"],
        "input is a directory": [ctx.tmp],
        "missing output directory": [ctx.encrypted],
    }
    return options[case]


@pytest.mark.parametrize("case", ["not an img-crypt file", "empty", "tampered last byte",
                                  "tampered middle chunk", "truncated", "trailing data",
                                  "wrong image id", "missing input", "input is a directory",
                                  "missing output directory"])
def test_a_failed_decrypt_leaves_nothing_at_output(ctx: Ctx, case: str) -> None:
    source, *options = _failing_decrypt(ctx, case)
    target = ctx.work / "out.raw"
    if case == "missing output directory":
        target = ctx.work / "missing-dir" / "out.raw"
    before = sorted(os.listdir(ctx.work))

    result = ctx.cli("decrypt", source, target, *options)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert not target.exists()
    assert sorted(os.listdir(ctx.work)) == before  # no output, no leftover temporary file


@pytest.mark.parametrize("command", ["encrypt", "decrypt", "rewrap"])
def test_output_in_a_missing_directory_fails_cleanly(ctx: Ctx, command: str) -> None:
    source, options = ctx.args_for(command)
    keys = ctx.key_ids()

    result = ctx.cli(command, source, ctx.work / "missing-dir" / "out", *options)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert not (ctx.work / "missing-dir").exists()
    assert ctx.key_ids() == keys


@pytest.mark.parametrize("case", ["missing output directory", "existing output",
                                  "missing input", "input is a directory"])
def test_encrypt_failure_deletes_the_key_it_created(ctx: Ctx, case: str) -> None:
    source, target = ctx.plain_file, ctx.work / "out.icr"
    if case == "missing output directory":
        target = ctx.work / "missing-dir" / "out.icr"
    elif case == "existing output":
        target.write_bytes(b"precious")
    elif case == "missing input":
        source = ctx.work / "no-such-file"
    else:
        source = ctx.work

    result = ctx.cli("encrypt", source, target)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert "(new)" not in result.out
    assert ctx.cli("keys", "list").out == ""
    assert ctx.key_ids() == []
    assert ctx.part_files() == []


@pytest.mark.parametrize("command", ["encrypt", "decrypt", "rewrap"])
def test_a_directory_as_output_fails_cleanly(ctx: Ctx, command: str) -> None:
    source, options = ctx.args_for(command)
    keys = ctx.key_ids()
    (ctx.work / "dir").mkdir()

    result = ctx.cli(command, source, ctx.work / "dir", *options)

    assert result.code == 1
    assert_one_error_line(result.err)
    assert list((ctx.work / "dir").iterdir()) == []
    assert ctx.key_ids() == keys


def test_encrypt_to_a_directory_deletes_the_key_it_created(ctx: Ctx) -> None:
    (ctx.work / "dir").mkdir()

    result = ctx.cli("encrypt", ctx.plain_file, ctx.work / "dir")

    assert result.code == 1
    assert_one_error_line(result.err)
    assert ctx.key_ids() == []


@pytest.mark.parametrize("command", ["encrypt", "decrypt", "rewrap"])
def test_dev_null_is_written_in_place(ctx: Ctx, command: str) -> None:
    source, options = ctx.args_for(command)

    result = ctx.cli(command, source, os.devnull, *options)

    assert result.code == 0, result.err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def _drain_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    chunks: list[bytes] = []

    def reader() -> None:
        with path.open("rb") as fifo:
            while data := fifo.read(65536):
                chunks.append(data)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, chunks


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_a_fifo_is_written_in_place(ctx: Ctx, command: str) -> None:
    source, options = ctx.args_for(command)
    fifo = ctx.work / "fifo"
    os.mkfifo(fifo)
    thread, chunks = _drain_fifo(fifo)

    result = ctx.cli(command, source, fifo, *options)
    thread.join(timeout=30)

    assert result.code == 0, result.err
    assert not thread.is_alive()
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert ctx.part_files() == []
    data = b"".join(chunks)
    if command == "encrypt":
        (ctx.work / "from-fifo.icr").write_bytes(data)
        assert ctx.cli("decrypt", ctx.work / "from-fifo.icr", ctx.work / "check").code == 0
        data = (ctx.work / "check").read_bytes()
    assert data == ctx.plaintext


# --- stdin and stdout: the real program in a subprocess -------------------------------------

def _run(ctx: Ctx, argv: list[str], *, stdin: Path | None = None,
         stdout: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    with (stdin.open("rb") if stdin else open(os.devnull, "rb")) as fin, \
            (stdout.open("wb") if stdout else open(os.devnull, "wb")) as fout:
        return subprocess.run(argv, stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                              env=ctx.env(), timeout=60, check=False)


def test_encrypt_and_decrypt_through_stdin_and_stdout(ctx: Ctx) -> None:
    icr, back = ctx.work / "s.icr", ctx.work / "back"

    enc = _run(ctx, img_crypt("encrypt", "-", "-", "--kek", ctx.key_id, "--image-id", IMAGE),
               stdin=ctx.plain_file, stdout=icr)

    assert enc.returncode == 0, enc.stderr
    # with the data on stdout, the report goes to stderr
    assert enc.stderr.decode().startswith(f"key: local:{ctx.key_id}\nencrypted - -> -: ")
    assert icr.read_bytes()[:8] == b"\x89ICR\r\n\x1a\n"

    dec = _run(ctx, img_crypt("decrypt", "-", "-", "--image-id", IMAGE), stdin=icr, stdout=back)

    assert dec.returncode == 0, dec.stderr
    assert back.read_bytes() == ctx.plaintext
    assert dec.stderr.decode().startswith("decrypted - -> -: ")


def test_truncated_ciphertext_on_stdin_fails_with_one_error_line(ctx: Ctx) -> None:
    cut, out = ctx.work / "cut.icr", ctx.work / "out"
    cut.write_bytes(ctx.encrypted.read_bytes()[:-300])

    result = _run(ctx, img_crypt("decrypt", "-", "-"), stdin=cut, stdout=out)

    assert result.returncode == 1
    assert result.stderr.decode() == AUTH_MESSAGE
    # a stream releases authenticated chunks only: at most the two full ones
    assert out.read_bytes() == ctx.plaintext[:len(out.read_bytes())]
    assert len(out.read_bytes()) <= 2 * CHUNK


def test_a_closed_stdout_ends_the_program_without_a_traceback(ctx: Ctx) -> None:
    (ctx.work / "big").write_bytes(os.urandom(4 << 20))  # far more than a pipe buffer
    assert ctx.cli("encrypt", ctx.work / "big", ctx.work / "big.icr",
                   "--kek", ctx.key_id).code == 0

    # like `img-crypt decrypt big.icr - | head -c 10`
    proc = subprocess.Popen(img_crypt("decrypt", ctx.work / "big.icr", "-"), env=ctx.env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)

    assert len(head) == 10
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert code == 1
    assert err == "img-crypt: error: the output was closed early\n"


def _run_on_a_terminal(ctx: Ctx, argv: list[str], *, on: str) -> tuple[int, bytes, bytes]:
    """Run with ``on`` ("stderr" or "stdout") a pseudo-terminal; return the exit code, what the
    terminal received and what the other stream (a pipe) received."""
    master, slave = pty.openpty()
    # a terminal of 24 rows and 80 columns (a fresh pty is 0x0: tqdm would draw nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(argv, env=ctx.env(), stdin=subprocess.DEVNULL,
                            stdout=slave if on == "stdout" else subprocess.PIPE,
                            stderr=slave if on == "stderr" else subprocess.PIPE)
    os.close(slave)
    received: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            received.append(data)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    pipe = proc.stdout if on == "stderr" else proc.stderr
    assert pipe is not None
    rest = pipe.read()
    code = proc.wait(timeout=60)
    thread.join(timeout=10)
    os.close(master)
    return code, b"".join(received), rest


def test_a_progress_bar_is_drawn_when_stderr_is_a_terminal(ctx: Ctx) -> None:
    (ctx.work / "medium").write_bytes(os.urandom(2 << 20))

    code, tty, out = _run_on_a_terminal(
        ctx, img_crypt("encrypt", ctx.work / "medium", ctx.work / "m.icr", "--kek", ctx.key_id),
        on="stderr")

    assert code == 0, tty
    assert b"%" in tty or b"B/s" in tty
    assert b"encrypt" in tty
    assert out.decode().startswith(f"key: local:{ctx.key_id}\n")  # the report stays on stdout


@pytest.mark.parametrize("command", ["encrypt", "decrypt", "rewrap"])
def test_no_progress_and_no_stderr_when_stderr_is_not_a_terminal(ctx: Ctx,
                                                                 command: str) -> None:
    source, options = ctx.args_for(command)
    report = ctx.work / "report"

    result = _run(ctx, img_crypt(command, source, ctx.work / "out", *options), stdout=report)

    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert report.read_bytes() != b""


def test_ciphertext_to_a_terminal_is_refused_without_force(ctx: Ctx) -> None:
    code, tty, err = _run_on_a_terminal(
        ctx, img_crypt("encrypt", ctx.plain_file, "-", "--kek", ctx.key_id), on="stdout")

    assert code == 1
    assert err.decode().startswith("img-crypt: error: refusing to write encrypted data to a "
                                   "terminal")
    assert err.count(b"\n") == 1
    assert b"ICR" not in tty


# --- error messages ------------------------------------------------------------------------

def test_authentication_failures_do_not_say_which_check_failed(ctx: Ctx) -> None:
    data = ctx.encrypted.read_bytes()
    chunk0 = HEADER_BOUND + PREFIX

    def flip(at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]

    variants = {
        "header MAC": flip(HEADER_BOUND - 1),
        "wrapped data key": flip(HEADER_BOUND - 32 - 10),
        "slot nonce": flip(HEADER_BOUND - 32 - 48 - 1),
        "image id": flip(13),
        "salt": flip(HEADER_BOUND),
        "commitment": flip(HEADER_BOUND + 24),
        "first chunk": flip(chunk0),
        "middle chunk": flip(chunk0 + CT_CHUNK + 7),
        "last tag": flip(len(data) - 1),
        "truncated mid-chunk": data[:-100],
        "truncated at a chunk boundary": data[:chunk0 + 2 * CT_CHUNK],
        "truncated to the header": data[:HEADER_BOUND],
        "trailing byte": data + b"\0",
        "chunks 0 and 1 swapped": (data[:chunk0] + data[chunk0 + CT_CHUNK:chunk0 + 2 * CT_CHUNK]
                                   + data[chunk0:chunk0 + CT_CHUNK]
                                   + data[chunk0 + 2 * CT_CHUNK:]),
    }
    messages = {}
    for name, variant in variants.items():
        (ctx.work / "bad.icr").write_bytes(variant)
        result = ctx.cli("decrypt", ctx.work / "bad.icr", ctx.work / "out")
        assert result.code == 1, name
        assert not (ctx.work / "out").exists(), name
        messages[name] = result.err

    assert messages == dict.fromkeys(variants, AUTH_MESSAGE)


def test_every_error_is_one_line_without_a_traceback(ctx: Ctx) -> None:
    encrypted, work = ctx.encrypted, ctx.work
    failing: list[list[str | Path]] = [
        ["decrypt", ctx.plain_file, work / "o1"],
        ["decrypt", work / "missing", work / "o2"],
        ["decrypt", encrypted, work / "o3", "--image-id", OTHER_IMAGE],
        ["decrypt", encrypted, work / "o4", "--range", f"0:{PLAIN_SIZE + 1}"],
        ["decrypt", encrypted, work / "o5", "--key-store", ctx.plain_file],
        ["encrypt", ctx.plain_file, work / "nodir" / "o6"],
        ["encrypt", ctx.plain_file, encrypted],
        ["encrypt", ctx.plain_file, work / "o7", "--kek", "not-a-key"],
        ["inspect", ctx.plain_file],
        ["inspect", work / "missing"],
        ["inspect", work],
        ["rewrap", encrypted, work / "o8", "--remove-kek", ctx.key_id],
        ["rewrap", encrypted, work / "o9", "--add-kek", str(uuid.uuid4())],
        ["keys", "delete", str(uuid.uuid4())],
        ["keys", "list", "--key-store", ctx.plain_file],
    ]
    for argv in failing:
        result = ctx.cli(*argv)
        assert result.code in (1, 2), argv
        assert_one_error_line(result.err)


# --- version, help, usage ------------------------------------------------------------------

def test_version(ctx: Ctx) -> None:
    result = ctx.cli("--version")

    assert result.code == 0
    assert result.out == f"img-crypt {__version__}\n"


@pytest.mark.parametrize("argv", [["--help"], ["encrypt", "--help"], ["decrypt", "--help"],
                                  ["inspect", "--help"], ["rewrap", "--help"],
                                  ["keys", "--help"], ["keys", "delete", "--help"]])
def test_help(ctx: Ctx, argv: list[str]) -> None:
    result = ctx.cli(*argv)

    assert result.code == 0
    assert result.out.startswith("usage: img-crypt")


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["keys"], ["keys", "rotate"],
                                  ["encrypt"], ["decrypt", "only-input"],
                                  ["inspect", "x", "--bogus"]])
def test_usage_errors_exit_2(ctx: Ctx, argv: list[str]) -> None:
    result = ctx.cli(*argv)

    assert result.code == 2
    assert "usage: img-crypt" in result.err
    assert "Traceback" not in result.err

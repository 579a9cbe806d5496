"""The committed known-answer vectors (specs/vectors, FORMAT.md section 10).

Checks that the generator reproduces the committed files byte for byte, that every valid vector
decrypts (with each of its KEKs alone) to the stated plaintext, also through pyca/cryptography's
own ``Cobblestone256Decryptor``, and that every invalid vector fails with exactly its error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import tempfile
import uuid
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.cobblestone import Cobblestone256Decryptor

from img_crypt import _payload_parallel, envelope, errors
from img_crypt._io import Source
from img_crypt.envelope import Kek
from img_crypt.format import SUITES, parse
from tests.support.sinks import RecordingSink

VECTORS = Path(__file__).resolve().parents[1] / "specs" / "vectors"
GROUPS = ("valid.json", "invalid.json")
ERRORS = {name: getattr(errors, name) for name in
          ("FormatError", "AuthenticationError", "BindingError", "KeyNotFoundError")}


def _cases(name: str) -> list[dict[str, Any]]:
    return list(json.loads((VECTORS / name).read_text("utf-8"))["cases"])


VALID = _cases("valid.json")
INVALID = _cases("invalid.json")


@cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("img_crypt_vectors_generate",
                                                  VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def _plaintext(case: dict[str, Any]) -> bytes:
    """Decode the plaintext field, independently of the generator."""
    plain = case["plaintext"]
    if isinstance(plain, str):
        return bytes.fromhex(plain)
    assert plain["pattern"] == "mod251"
    return bytes(i % 251 for i in range(plain["length"]))


def _keks(entries: list[dict[str, str]]) -> list[Kek]:
    return [Kek(e["kind"], e["id"], bytes.fromhex(e["key"])) for e in entries]


def _lookup(keks: list[Kek]) -> envelope.KekLookup:
    table = {(k.kind, k.key_id): k.key for k in keks}
    return lambda kind, key_id: table.get((kind, key_id))


def _image(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value is not None else None


# --- the files as a whole ------------------------------------------------------------------

def test_generator_reproduces_the_committed_files() -> None:
    built = _generator().build()
    assert sorted(built) == sorted(GROUPS)
    assert sorted(p.name for p in VECTORS.glob("*.json")) == sorted(GROUPS)
    for name, text in built.items():
        assert text.encode() == (VECTORS / name).read_bytes(), f"{name}: run generate.py"


def test_generator_check_mode_passes() -> None:
    assert _generator().main(["--check"]) == 0


def test_files_are_small_and_ids_unique() -> None:
    assert sum((VECTORS / name).stat().st_size for name in GROUPS) < 300 * 1024
    for cases in (VALID, INVALID):
        ids = [c["id"] for c in cases]
        assert len(ids) == len(set(ids))


def test_groups_cover_the_required_cases() -> None:
    sizes = {c["sizes"]["plaintext"] for c in VALID}
    assert {0, 1, 16383, 16384, 16385, 2 * 16384 + 500} <= sizes
    assert any(c["image_id"] is None for c in VALID)
    assert any(c["image_id"] is not None for c in VALID)
    assert any({k["kind"] for k in c["keks"]} == {"local", "barbican"} for c in VALID)
    assert any(not k["id"].isascii() for c in VALID for k in c["keks"])
    assert {c["error"] for c in INVALID} == set(ERRORS)


# --- valid vectors -------------------------------------------------------------------------

@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_valid_vector_decrypts(case: dict[str, Any]) -> None:
    assert case["result"] == "valid"
    file = bytes.fromhex(case["file"])
    plain = _plaintext(case)
    assert hashlib.sha256(plain).hexdigest() == case["plaintext_sha256"]
    keks = _keks(case["keks"])
    image = _image(case["image_id"])
    sizes = case["sizes"]
    assert sizes["header"] + sizes["payload"] == len(file)
    assert sizes["plaintext"] == len(plain)
    # the inputs seal to exactly this file
    assert envelope._seal_for_vectors(
        plain, keks, image_id=image, dek=bytes.fromhex(case["dek"]),
        nonces=[bytes.fromhex(n) for n in case["nonces"]],
        salt=bytes.fromhex(case["salt"])) == file
    for kek in keks:  # each KEK alone, with and without the image id expected
        for expect in (None, image):
            sink = RecordingSink()
            summary = envelope.decrypt(io.BytesIO(file), sink, _lookup([kek]), image_id=expect)
            assert hashlib.sha256(sink.data).hexdigest() == case["plaintext_sha256"]
            assert (summary.header_size, summary.payload_size, summary.plaintext_size) == (
                sizes["header"], sizes["payload"], sizes["plaintext"])
    # small reads: the stream path chunk by chunk
    sink = RecordingSink()
    envelope.decrypt(io.BytesIO(file), sink, _lookup(keks[-1:]), read_size=1000)
    assert bytes(sink.data) == plain
    info = envelope.inspect(io.BytesIO(file), size=len(file))
    assert (info.header_size, info.payload_size, info.plaintext_size, info.file_size) == (
        sizes["header"], sizes["payload"], sizes["plaintext"], len(file))
    header = info.header
    assert header.image_id == image
    assert [(s.kind, s.key_id, s.nonce.hex()) for s in header.slots] == [
        (k["kind"], k["id"], n) for k, n in zip(case["keks"], case["nonces"], strict=True)]
    assert parse(file[:sizes["header"]]).encode() == file[:sizes["header"]]


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_valid_vector_payload_decrypts_with_the_library(case: dict[str, Any]) -> None:
    """The payload is a plain Cobblestone-256 stream: pyca/cryptography decrypts it alone."""
    file = bytes.fromhex(case["file"])
    hlen = int.from_bytes(file[10:12], "big")
    image_len = file[12]
    binding = file[8:10] + file[12:13 + image_len]  # FORMAT.md section 1, from the raw bytes
    context = b"img-crypt payload v1\x00" + binding
    payload = file[hlen:]
    assert payload[:24] == bytes.fromhex(case["salt"])
    decryptor = Cobblestone256Decryptor(bytes.fromhex(case["dek"]), context)
    plain = decryptor.update(payload) + decryptor.finalize()
    assert hashlib.sha256(plain).hexdigest() == case["plaintext_sha256"]
    assert plain == _plaintext(case)


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
@pytest.mark.parametrize(("threads", "read_size"), [(2, 1000), (3, 40000), (4, 1 << 20)])
def test_valid_vector_through_the_parallel_path(case: dict[str, Any], threads: int,
                                                read_size: int) -> None:
    """Chunk-parallel encryption under the vector's salt gives its payload; decryption its
    plaintext, from memory and from a regular file (read by offset)."""
    file = bytes.fromhex(case["file"])
    plain = _plaintext(case)
    keks = _keks(case["keks"])
    header_size = case["sizes"]["header"]
    header = parse(file[:header_size])
    sink = RecordingSink()
    _payload_parallel.encrypt(SUITES[header.suite], bytes.fromhex(case["dek"]),
                              b"img-crypt payload v1\x00" + header.binding(),
                              Source(plain, read_size), sink, workers=threads,
                              read_size=read_size, salt=bytes.fromhex(case["salt"]))
    assert sink.data == file[header_size:]
    with tempfile.TemporaryFile() as disk:
        disk.write(file)
        disk.seek(0)
        for source in (io.BytesIO(file), disk):
            out = RecordingSink()
            envelope.decrypt(source, out, _lookup(keks), image_id=_image(case["image_id"]),
                             threads=threads, read_size=read_size)
            assert out.data == plain


# --- invalid vectors -----------------------------------------------------------------------

@pytest.mark.parametrize("case", INVALID, ids=[c["id"] for c in INVALID])
@pytest.mark.parametrize(("read_size", "threads"), [(1 << 20, 1), (1000, 1), (1 << 20, 4),
                                                    (1000, 3)])
def test_invalid_vector_fails_as_stated(case: dict[str, Any], read_size: int,
                                        threads: int) -> None:
    assert case["result"] == "invalid"
    assert case["stage"] in ("header", "payload")
    expected = ERRORS[case["error"]]
    file = bytes.fromhex(case["file"])
    keks = _keks(case.get("reader_keks", case["keks"]))
    sink = RecordingSink()
    with pytest.raises(errors.ImgCryptError) as info:
        envelope.decrypt(io.BytesIO(file), sink, _lookup(keks),
                         image_id=_image(case.get("expect_image_id")), read_size=read_size,
                         threads=threads)
    assert type(info.value) is expected, info.value
    message = str(info.value)
    assert message and "\n" not in message
    if case["stage"] == "header" or expected is not errors.AuthenticationError:
        assert sink.data == b""
    else:
        assert _plaintext(case).startswith(bytes(sink.data))


@pytest.mark.parametrize("case", INVALID, ids=[c["id"] for c in INVALID])
def test_invalid_vector_inputs_are_a_valid_file(case: dict[str, Any]) -> None:
    """The inputs of an invalid case seal a file that decrypts: only the mutation is wrong."""
    keks = _keks(case["keks"])
    image = _image(case["image_id"])
    plain = _plaintext(case)
    sealed = envelope._seal_for_vectors(
        plain, keks, image_id=image, dek=bytes.fromhex(case["dek"]),
        nonces=[bytes.fromhex(n) for n in case["nonces"]], salt=bytes.fromhex(case["salt"]))
    sink = RecordingSink()
    envelope.decrypt(io.BytesIO(sealed), sink, _lookup(keks), image_id=image)
    assert bytes(sink.data) == plain
    # only the caller-side cases (wrong expectation, missing key) leave the file as sealed
    unchanged = case["error"] in ("BindingError", "KeyNotFoundError")
    assert (sealed == bytes.fromhex(case["file"])) == unchanged

"""The payload first, the header last: ``envelope.Deferred`` and ``staged.encrypt_file``.

The Glance import encrypts while its key is being made (``specs/THREAT_MODEL.md`` is
unchanged: the DEK never leaves memory before it is wrapped). The file is the one
:func:`envelope.encrypt` writes: it decrypts with the KEK, is bound to its image, and its header
is the size foreseen from the slots' kinds and key ids; a key id of another length is refused
by ``seal`` (nothing written) and ``staged.encrypt_file`` then encrypts again with it. The
staged copy is published whole or not at all, and a failing ``check`` stops it early.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from img_crypt import _cobblestone, envelope
from img_crypt.envelope import Kek, KekLookup
from img_crypt.errors import BindingError, UnavailableError, UsageError
from img_crypt.format import parse
from img_crypt.glance import staged
from tests.support.data import plaintext

CHUNK = _cobblestone.CHUNK
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * (1 << 20) + 7]


def deferred_file(kek: Kek, data: bytes, image: uuid.UUID | None, *, read_size: int = 1 << 20,
                  threads: int | None = None) -> tuple[bytes, envelope.Summary]:
    """Encrypt ``data`` with the header sealed last; return the file and the summary."""
    deferred = envelope.Deferred([(kek.kind, kek.key_id)], image_id=image)
    sink = io.BytesIO()
    deferred.encrypt(io.BytesIO(data), sink, read_size=read_size, threads=threads)
    summary = deferred.seal(sink, [kek])
    assert summary is not None
    return sink.getvalue(), summary


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("threads", [None, 2])
def test_a_deferred_file_decrypts_to_the_input_with_its_kek(
        kek: Kek, lookup: KekLookup, size: int, threads: int | None) -> None:
    data = plaintext(size)
    image = uuid.uuid4()
    file, summary = deferred_file(kek, data, image, read_size=CHUNK + 1, threads=threads)
    out = io.BytesIO()
    opened = envelope.decrypt(io.BytesIO(file), out, lookup, image_id=image)
    assert out.getvalue() == data
    assert (summary.plaintext_size, summary.file_size) == (size, len(file))
    assert opened.header == summary.header == parse(file[:summary.header_size])


def test_a_deferred_file_has_the_layout_encrypt_gives(kek: Kek) -> None:
    data = plaintext(100_000)
    image = uuid.uuid4()
    file, summary = deferred_file(kek, data, image)
    direct = io.BytesIO()
    expected = envelope.encrypt(io.BytesIO(data), direct, [kek], image_id=image)
    assert len(file) == len(direct.getvalue())
    assert (summary.header_size, summary.payload_size) == \
        (expected.header_size, expected.payload_size)
    assert [(s.kind, s.key_id) for s in summary.header.slots] == [(kek.kind, kek.key_id)]


def test_a_deferred_file_is_bound_to_its_image(kek: Kek, lookup: KekLookup) -> None:
    file, _ = deferred_file(kek, b"data", uuid.uuid4())
    with pytest.raises(BindingError):
        envelope.decrypt(io.BytesIO(file), io.BytesIO(), lookup, image_id=uuid.uuid4())


def test_the_header_size_is_known_before_the_key_exists(kek: Kek) -> None:
    placeholder = str(uuid.UUID(int=0))
    deferred = envelope.Deferred([(kek.kind, placeholder)], image_id=uuid.uuid4())
    sink = io.BytesIO()
    deferred.encrypt(io.BytesIO(b"x" * 1000), sink)
    assert sink.getvalue()[:deferred.header_size] == bytes(deferred.header_size)
    summary = deferred.seal(sink, [kek])  # a real id of the placeholder's length
    assert summary is not None and summary.header_size == deferred.header_size


@pytest.mark.parametrize("key_id", ["short", "x" * 37])
def test_a_key_id_of_another_length_is_refused_and_nothing_is_written(
        kek: Kek, key_id: str) -> None:
    deferred = envelope.Deferred([(kek.kind, str(uuid.UUID(int=0)))])
    sink = io.BytesIO()
    deferred.encrypt(io.BytesIO(b"data"), sink)
    before = sink.getvalue()
    assert deferred.seal(sink, [Kek(kek.kind, key_id, kek.key)]) is None
    assert sink.getvalue() == before


def test_seal_before_encrypt_is_a_usage_error(kek: Kek) -> None:
    deferred = envelope.Deferred([(kek.kind, kek.key_id)])
    with pytest.raises(UsageError, match="after encrypt"):
        deferred.seal(io.BytesIO(), [kek])


# --- the staged copy of an import -------------------------------------------------------------

def staged_input(tmp_path: Path, size: int) -> Path:
    src = tmp_path / str(uuid.uuid4())
    src.write_bytes(plaintext(size))
    return src


@pytest.mark.parametrize("key_id_length", [36, 12])
def test_the_staged_copy_decrypts_whatever_the_length_of_the_key_id(
        tmp_path: Path, key_id_length: int) -> None:
    src = staged_input(tmp_path, 3 * (1 << 20) + 5)
    image = uuid.UUID(src.name)
    key = Kek("barbican", "k" * key_id_length, os.urandom(32))
    dest, summary = staged.encrypt_file(src, image, ("barbican", str(uuid.UUID(int=0))),
                                        lambda: key)
    out = io.BytesIO()
    with open(dest, "rb") as file:
        envelope.decrypt(file, out, lambda kind, kid: key.key, image_id=image)
    assert out.getvalue() == src.read_bytes()
    assert summary.file_size == dest.stat().st_size
    assert summary.header.slots[0].key_id == key.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dest.name])


def test_a_failing_check_stops_the_staged_copy_early_and_leaves_no_file(tmp_path: Path) -> None:
    src = staged_input(tmp_path, 8 << 20)
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise UnavailableError("the key manager is down")

    def kek() -> Kek:
        raise AssertionError("the key is not waited for once the check failed")

    with pytest.raises(UnavailableError, match="down"):
        staged.encrypt_file(src, uuid.UUID(src.name), ("local", str(uuid.UUID(int=0))), kek,
                            check=check)
    assert len(calls) == 2  # of 8 reads
    assert [p.name for p in tmp_path.iterdir()] == [src.name]


def test_a_key_that_fails_leaves_no_staged_copy(tmp_path: Path) -> None:
    src = staged_input(tmp_path, 100_000)

    def kek() -> Kek:
        raise UnavailableError("the key order failed")

    with pytest.raises(UnavailableError, match="order failed"):
        staged.encrypt_file(src, uuid.UUID(src.name), ("local", str(uuid.UUID(int=0))), kek)
    assert [p.name for p in tmp_path.iterdir()] == [src.name]


def test_the_staged_copy_is_not_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Glance fsyncs neither its staging area nor the filesystem store: an fsync here only
    doubled the step's time (bench/import_sweep.md)."""
    def fsync(fd: int) -> None:
        raise AssertionError("fsync")

    monkeypatch.setattr(os, "fsync", fsync)
    src = staged_input(tmp_path, 100_000)
    key = Kek("local", str(uuid.uuid4()), os.urandom(32))
    dest, _ = staged.encrypt_file(src, uuid.UUID(src.name), (key.kind, key.key_id), lambda: key)
    assert dest.exists()

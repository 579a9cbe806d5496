"""Read-ahead of regular files (img_crypt._prefetch): same bytes, errors surface, no thread left."""

from __future__ import annotations

import io
import os
import threading
import uuid
from pathlib import Path

import pytest

from img_crypt import envelope
from img_crypt._io import Source
from img_crypt._prefetch import is_regular_file, prefetched
from img_crypt.envelope import Kek, KekLookup
from img_crypt.errors import AuthenticationError

READ = 4096


def read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "img-crypt-read-ahead"]


@pytest.mark.parametrize("size", [0, 1, READ - 1, READ, READ + 1, 3 * READ + 7])
def test_prefetched_yields_the_file_in_order(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    with open(tmp_path / "f", "rb", buffering=0) as f:
        pieces = [bytes(view) for view in prefetched(f, READ)]
    assert b"".join(pieces) == data
    assert all(len(p) <= READ for p in pieces)
    assert read_ahead_threads() == []


class FailingReader:
    """readinto works twice, then raises."""

    def __init__(self) -> None:
        self.calls = 0

    def readinto(self, buf: bytearray) -> int:
        self.calls += 1
        if self.calls > 2:
            raise OSError(5, "Input/output error")
        buf[:3] = b"abc"
        return 3


def test_a_read_error_is_raised_in_the_callers_thread() -> None:
    got = []
    with pytest.raises(OSError, match="Input/output error"):
        for view in prefetched(FailingReader(), READ):
            got.append(bytes(view))
    assert got == [b"abc", b"abc"]
    assert read_ahead_threads() == []


def test_stopping_early_joins_the_reader(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(20 * READ))
    with open(tmp_path / "f", "rb", buffering=0) as f:
        gen = prefetched(f, READ)
        next(gen)
        gen.close()
        assert read_ahead_threads() == []


def test_only_regular_files_are_read_ahead(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    read_end, write_end = os.pipe()
    try:
        with open(tmp_path / "f", "rb") as f, os.fdopen(read_end, "rb", closefd=False) as pipe:
            assert is_regular_file(f)
            assert not is_regular_file(pipe)
            assert not is_regular_file(io.BytesIO(b"x"))
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_source_closed_mid_file_leaves_no_thread(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(10 * READ))
    with open(tmp_path / "f", "rb") as f, Source(f, READ) as src:
        assert len(src.read_exact(10)) == 10
        next(iter(src.views()))
    assert read_ahead_threads() == []


def test_a_failed_decryption_of_a_file_leaves_no_reader_thread(tmp_path: Path, kek: Kek,
                                                               lookup: KekLookup) -> None:
    with open(tmp_path / "c", "wb") as out:
        envelope.encrypt(io.BytesIO(os.urandom(300_000)), out, [kek], image_id=uuid.uuid4())
    raw = bytearray((tmp_path / "c").read_bytes())
    raw[-20_000] ^= 1
    (tmp_path / "c").write_bytes(raw)
    sink = io.BytesIO()
    with open(tmp_path / "c", "rb") as f, pytest.raises(AuthenticationError):
        envelope.decrypt(f, sink, lookup, read_size=READ)
    assert read_ahead_threads() == []

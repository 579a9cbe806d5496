"""Write-behind of regular-file outputs (img_crypt._writebehind): order, errors, no thread left.

Decryption through the thread must still release only authenticated plaintext: the file
written before a tampered chunk is found holds whole authenticated chunks, nothing after.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from cryptography.utils import Buffer

from img_crypt import envelope
from img_crypt._cobblestone import CHUNK as PT_CHUNK
from img_crypt._cobblestone import CT_CHUNK
from img_crypt._writebehind import BehindWriter, writer
from img_crypt.envelope import Kek
from img_crypt.errors import AuthenticationError

KEK = Kek("local", "k", bytes(range(32)))
READ = PT_CHUNK * 4  # four chunks per read: a failure can land mid-read


def behind_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "img-crypt-write-behind"]


class Recorder:
    """A sink that records every write, optionally failing at the ``fail_at``-th one."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.parts: list[bytes] = []
        self.fail_at = fail_at

    def write(self, data: Buffer, /) -> int:
        if self.fail_at is not None and len(self.parts) + 1 == self.fail_at:
            raise OSError(28, "No space left on device")
        self.parts.append(bytes(data))
        return len(self.parts[-1])


def test_writes_arrive_in_order() -> None:
    sink = Recorder()
    behind = BehindWriter(sink, 16)
    for n in range(200):
        buf = behind.buffer()
        buf[:2] = n.to_bytes(2, "big")
        behind.submit(memoryview(buf)[:2], buf)
    behind.submit(b"end")
    behind.close()
    assert sink.parts == [n.to_bytes(2, "big") for n in range(200)] + [b"end"]
    assert behind_threads() == []


def test_a_write_error_is_raised_in_the_callers_thread() -> None:
    behind = BehindWriter(Recorder(fail_at=3), 16)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(100):
            buf = behind.buffer()
            behind.submit(memoryview(buf)[:1], buf)
        behind.close()
    behind.close(abort=True)
    assert behind_threads() == []


def test_a_write_error_in_the_last_buffer_is_raised_by_close() -> None:
    behind = BehindWriter(Recorder(fail_at=1), 16)
    behind.submit(b"only")
    with pytest.raises(OSError, match="No space left"):
        behind.close()
    assert behind_threads() == []


def test_abort_drops_queued_writes_and_joins() -> None:
    gate = threading.Event()

    class Slow(Recorder):
        def write(self, data: Buffer, /) -> int:
            gate.wait(5)
            return super().write(data)

    sink = Slow()
    behind = BehindWriter(sink, 16)
    for _ in range(3):
        buf = behind.buffer()
        behind.submit(memoryview(buf)[:1], buf)
    gate.set()
    behind.close(abort=True)
    assert len(sink.parts) <= 1  # at most the write already under way
    assert behind_threads() == []


def test_only_regular_files_get_a_thread(tmp_path: Path) -> None:
    with writer(io.BytesIO(), 8) as direct:
        assert not isinstance(direct, BehindWriter)
    with open(os.devnull, "wb") as null, writer(null, 8) as direct:
        assert not isinstance(direct, BehindWriter)
    with open(tmp_path / "f", "wb", buffering=0) as f, writer(f, 8) as behind:
        assert isinstance(behind, BehindWriter)
    assert behind_threads() == []


@pytest.mark.parametrize("size", [0, 1, PT_CHUNK - 1, PT_CHUNK, PT_CHUNK + 1,
                                  READ - 1, READ, READ + 1, 3 * READ + 17])
def test_file_round_trip_through_the_thread(tmp_path: Path, size: int) -> None:
    plain = os.urandom(size)
    with open(tmp_path / "c", "wb", buffering=0) as out:
        envelope.encrypt(io.BytesIO(plain), out, [KEK], read_size=READ)
    with open(tmp_path / "c", "rb") as src, open(tmp_path / "p", "wb", buffering=0) as out:
        envelope.decrypt(src, out, lambda kind, key_id: KEK.key, read_size=READ)
    assert (tmp_path / "p").read_bytes() == plain
    assert behind_threads() == []


@pytest.mark.parametrize("bad_chunk", [0, 1, 5, 9])
def test_tampered_file_leaves_only_authenticated_chunks(tmp_path: Path, bad_chunk: int) -> None:
    plain = os.urandom(10 * PT_CHUNK + 5)
    cipher = io.BytesIO()
    summary = envelope.encrypt(io.BytesIO(plain), cipher, [KEK], read_size=READ)
    data = bytearray(cipher.getvalue())
    data[summary.header_size + bad_chunk * CT_CHUNK + CT_CHUNK // 2] ^= 1
    (tmp_path / "c").write_bytes(data)
    with open(tmp_path / "c", "rb") as src, open(tmp_path / "p", "wb", buffering=0) as out, \
            pytest.raises(AuthenticationError):
        envelope.decrypt(src, out, lambda kind, key_id: KEK.key, read_size=READ)
    released = (tmp_path / "p").read_bytes()
    assert len(released) % PT_CHUNK == 0 and len(released) <= bad_chunk * PT_CHUNK
    assert released == plain[:len(released)]
    assert behind_threads() == []

"""``envelope.decrypt_range``: the seeking reader of FORMAT.md section 6.

A range is the same bytes as the same slice of a full decryption; nothing unauthenticated is
ever written; only the chunks that hold the range (and the final chunk) are read.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from img_crypt import _cobblestone, envelope
from img_crypt.envelope import Kek, KekLookup
from img_crypt.errors import AuthenticationError, BindingError, UsageError
from img_crypt.format import MAX_HEADER
from tests.support.data import plaintext
from tests.support.sinks import RecordingSink

MiB = 1 << 20
CHUNK = _cobblestone.CHUNK
CT_CHUNK = _cobblestone.CT_CHUNK
PREFIX = _cobblestone.PREFIX
SIZES = [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 9]
TAMPER_SIZE = 3 * CHUNK + 9  # chunks 0..2 full, chunk 3 (final) holds 9 bytes

Encrypted = Callable[[int], tuple[bytes, bytes]]
OnDisk = Callable[[int], Path]
Span = tuple[int, int | None]


def range_cases() -> Iterator[Any]:
    for size in SIZES:
        points = sorted({p for p in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK,
                                     size - 1, size) if 0 <= p <= size})
        for start in points:
            for end in [*(p for p in points if p >= start), None]:
                label = "" if end is None else end
                yield pytest.param((size, start, end), id=f"size{size}[{start}:{label}]")


@pytest.fixture(scope="module")
def encrypted(kek: Kek, lookup: KekLookup) -> Encrypted:
    """``encrypted(size)``: (file bytes, full decryption) of ``plaintext(size)``, cached."""
    cache: dict[int, tuple[bytes, bytes]] = {}

    def get(size: int) -> tuple[bytes, bytes]:
        if size not in cache:
            out, back = io.BytesIO(), io.BytesIO()
            envelope.encrypt(plaintext(size), out, [kek])
            envelope.decrypt(io.BytesIO(out.getvalue()), back, lookup)
            assert back.getvalue() == plaintext(size)
            cache[size] = out.getvalue(), back.getvalue()
        return cache[size]

    return get


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory: pytest.TempPathFactory, encrypted: Encrypted) -> OnDisk:
    """``on_disk(size)``: the path of that file, written once."""
    folder = tmp_path_factory.mktemp("range")

    def get(size: int) -> Path:
        path = folder / f"{size}.icr"
        if not path.exists():
            path.write_bytes(encrypted(size)[0])
        return path

    return get


def header_size(file: bytes) -> int:
    return int.from_bytes(file[10:12], "big")


# --- a range is a slice of the full decryption -----------------------------------------------

@pytest.mark.parametrize("case", list(range_cases()))
def test_range_equals_slice_of_full_decryption(case: tuple[int, int, int | None],
                                               on_disk: OnDisk, encrypted: Encrypted,
                                               lookup: KekLookup,
                                               recording_sink: RecordingSink) -> None:
    size, start, end = case
    full = encrypted(size)[1]
    with open(on_disk(size), "rb") as f:
        summary = envelope.decrypt_range(f, recording_sink, lookup, start, end)
    assert recording_sink.data == full[start:end]
    assert summary.plaintext_size == len(full[start:end])
    assert summary.payload_size == os.path.getsize(on_disk(size)) - summary.header_size


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 100 * 1024), data=st.data())
def test_any_range_equals_slice_of_full_decryption(kek: Kek, lookup: KekLookup, size: int,
                                                   data: st.DataObject) -> None:
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.none() | st.integers(start, size), label="end")
    file, back = io.BytesIO(), io.BytesIO()
    envelope.encrypt(plaintext(size), file, [kek])
    envelope.decrypt(io.BytesIO(file.getvalue()), back, lookup)
    file.seek(0)
    out = io.BytesIO()

    envelope.decrypt_range(file, out, lookup, start, end)

    assert out.getvalue() == back.getvalue()[start:end]
    assert back.getvalue() == plaintext(size)


def test_range_starts_where_the_file_position_is(encrypted: Encrypted,
                                                 lookup: KekLookup) -> None:
    """The file may sit inside a larger stream: the header starts at the current position."""
    junk = b"\xff" * 1000
    f = io.BytesIO(junk + encrypted(TAMPER_SIZE)[0])
    f.seek(len(junk))
    out = io.BytesIO()
    envelope.decrypt_range(f, out, lookup, CHUNK - 5, 2 * CHUNK + 5)
    assert out.getvalue() == plaintext(TAMPER_SIZE)[CHUNK - 5:2 * CHUNK + 5]


@pytest.mark.parametrize(("start", "end"), [
    (-1, None), (-1, 10), (0, CHUNK + 2), (CHUNK + 2, None), (CHUNK + 2, CHUNK + 2),
    (10, 5), (1, 0),
])
def test_out_of_range_requests_are_usage_errors(start: int, end: int | None, on_disk: OnDisk,
                                                lookup: KekLookup,
                                                recording_sink: RecordingSink) -> None:
    with open(on_disk(CHUNK + 1), "rb") as f, pytest.raises(UsageError):
        envelope.decrypt_range(f, recording_sink, lookup, start, end)
    assert recording_sink.writes == []


# --- damaged files fail before anything is written -------------------------------------------

def truncate_at_last_chunk_boundary(file: bytes) -> bytes:
    return file[:header_size(file) + PREFIX + 3 * CT_CHUNK]


def truncate_mid_chunk(file: bytes) -> bytes:
    return file[:header_size(file) + PREFIX + CT_CHUNK + 5000]


def truncate_mid_final_chunk(file: bytes) -> bytes:
    return file[:-5]


def truncate_to_payload_prefix(file: bytes) -> bytes:
    return file[:header_size(file) + PREFIX]


def flip(file: bytes, offset: int) -> bytes:
    damaged = bytearray(file)
    damaged[offset] ^= 0x01
    return bytes(damaged)


def flip_in_final_chunk(file: bytes) -> bytes:
    return flip(file, header_size(file) + PREFIX + 3 * CT_CHUNK + 3)


def flip_final_tag(file: bytes) -> bytes:
    return flip(file, len(file) - 1)


def flip_in_salt(file: bytes) -> bytes:
    return flip(file, header_size(file) + 2)


def flip_in_commitment(file: bytes) -> bytes:
    return flip(file, header_size(file) + _cobblestone.SALT + 2)


def flip_in_header_mac(file: bytes) -> bytes:
    return flip(file, header_size(file) - 1)


DAMAGE = [
    *(pytest.param(fn, id=fn.__name__) for fn in (
        truncate_at_last_chunk_boundary, truncate_mid_chunk, truncate_mid_final_chunk,
        truncate_to_payload_prefix, flip_in_final_chunk, flip_final_tag, flip_in_salt,
        flip_in_commitment, flip_in_header_mac)),
    *(pytest.param(lambda f, n=n: f + bytes(n), id=f"trailing_{n}_bytes")
      for n in (1, 15, 16, 17, CT_CHUNK)),
    pytest.param(lambda f: f + f[-CT_CHUNK - 25:-25], id="trailing_copy_of_chunk_2"),
]
RANGES = [(0, 10), (CHUNK + 7, 2 * CHUNK + 7), (3 * CHUNK, None), (0, None)]


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("span", RANGES, ids=str)
def test_damaged_file_fails_before_any_write(damage: Callable[[bytes], bytes], span: Span,
                                             encrypted: Encrypted, lookup: KekLookup,
                                             recording_sink: RecordingSink) -> None:
    start, end = span
    damaged = damage(encrypted(TAMPER_SIZE)[0])
    with pytest.raises(AuthenticationError):
        envelope.decrypt_range(io.BytesIO(damaged), recording_sink, lookup, start, end)
    assert recording_sink.writes == []


@pytest.mark.parametrize(("start", "end"), [
    (CHUNK, CHUNK + 1), (CHUNK + 50, 40_000), (20_000, None), (2 * CHUNK - 1, 2 * CHUNK),
])
def test_flip_in_the_first_chunk_of_the_range_fails_before_any_write(
        start: int, end: int | None, encrypted: Encrypted, lookup: KekLookup,
        recording_sink: RecordingSink) -> None:
    file = encrypted(TAMPER_SIZE)[0]
    damaged = flip(file, header_size(file) + PREFIX + CT_CHUNK + 100)  # in chunk 1
    with pytest.raises(AuthenticationError):
        envelope.decrypt_range(io.BytesIO(damaged), recording_sink, lookup, start, end)
    assert recording_sink.writes == []


def test_flip_in_a_later_chunk_of_the_range_writes_only_authenticated_chunks(
        encrypted: Encrypted, lookup: KekLookup, recording_sink: RecordingSink) -> None:
    """Like the streaming reader, a range releases each chunk once its tag verified: a bad
    chunk 1 inside [0:end] fails, and what was written is at most chunk 0, exactly."""
    file = encrypted(TAMPER_SIZE)[0]
    damaged = flip(file, header_size(file) + PREFIX + CT_CHUNK + 100)
    with pytest.raises(AuthenticationError):
        envelope.decrypt_range(io.BytesIO(damaged), recording_sink, lookup, 10, None)
    written = recording_sink.data
    assert len(written) <= CHUNK - 10
    assert written == plaintext(TAMPER_SIZE)[10:10 + len(written)]


def test_a_range_authenticates_what_it_reads_not_the_whole_file(encrypted: Encrypted,
                                                                 lookup: KekLookup) -> None:
    """A flipped byte in chunk 2 does not concern a range inside chunk 0."""
    file = encrypted(TAMPER_SIZE)[0]
    damaged = flip(file, header_size(file) + PREFIX + 2 * CT_CHUNK + 100)
    out = io.BytesIO()
    envelope.decrypt_range(io.BytesIO(damaged), out, lookup, 5, 500)
    assert out.getvalue() == plaintext(TAMPER_SIZE)[5:500]


# --- only the needed chunks are read ---------------------------------------------------------

class CountingFile:
    """A seekable file that counts the bytes ``read`` returns."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._f.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


BIG_MIB = 40


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory, kek: Kek) -> Path:
    """A ~40 MiB file whose plaintext MiB ``i`` is the byte ``i`` repeated."""
    path = tmp_path_factory.mktemp("big") / "big.icr"
    with open(path, "wb") as f:
        envelope.encrypt((bytes([i]) * MiB for i in range(BIG_MIB)), f, [kek])
    return path


@pytest.mark.parametrize(("start", "end"), [
    ((BIG_MIB - 1) * MiB, None), (0, MiB), (17 * MiB + 12345, 18 * MiB + 12345),
])
def test_range_reads_only_its_chunks(big_file: Path, lookup: KekLookup, start: int,
                                     end: int | None) -> None:
    expected = b"".join(bytes([i]) * MiB for i in range(BIG_MIB))[start:end]
    out = io.BytesIO()
    with open(big_file, "rb") as raw:
        counting = CountingFile(raw)
        envelope.decrypt_range(cast(BinaryIO, counting), out, lookup, start, end)  # duck-typed
    assert out.getvalue() == expected
    # 1 MiB of plaintext is 64 or 65 chunks (1.05 MiB); add the final chunk and at most one
    # header (the header reader may read up to MAX_HEADER bytes).
    assert counting.bytes_read < 1.2 * MiB + MAX_HEADER
    assert os.path.getsize(big_file) > BIG_MIB * MiB


# --- binding --------------------------------------------------------------------------------

def test_range_checks_the_image_binding(kek: Kek, lookup: KekLookup,
                                        recording_sink: RecordingSink) -> None:
    image = uuid.uuid4()
    bound, unbound = io.BytesIO(), io.BytesIO()
    envelope.encrypt(plaintext(CHUNK + 1), bound, [kek], image_id=image)
    envelope.encrypt(plaintext(CHUNK + 1), unbound, [kek])

    out = io.BytesIO()
    bound.seek(0)
    envelope.decrypt_range(bound, out, lookup, 3, 30, image_id=image)
    assert out.getvalue() == plaintext(CHUNK + 1)[3:30]

    for f in (bound, unbound):
        f.seek(0)
        with pytest.raises(BindingError):
            envelope.decrypt_range(f, recording_sink, lookup, 3, 30, image_id=uuid.uuid4())
    unbound.seek(0)
    with pytest.raises(BindingError):
        envelope.decrypt_range(unbound, recording_sink, lookup, 3, 30, image_id=image)
    assert recording_sink.writes == []

"""Round trips through ``envelope.encrypt`` / ``envelope.decrypt``: every byte comes back.

The inputs are the kinds the engine accepts (``img_crypt._io.Source``): real files, OS pipes,
iterators of bytes-like pieces and streams that only have ``read`` and return short reads. A
"read size" is both the engine's ``read_size`` argument and the size of the pieces the input
delivers, with one exception to keep the run short (see :func:`plan`).
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from img_crypt import _cobblestone, envelope
from img_crypt._io import Input
from img_crypt._payload import decrypt_buffer_size, encrypt_buffer_size
from img_crypt.envelope import Kek, KekLookup
from img_crypt.errors import BindingError
from img_crypt.format import parse
from tests.support.data import plaintext, seeded_bytes
from tests.support.sinks import RecordingSink, ShortWriteSink

MiB = 1 << 20
CHUNK = _cobblestone.CHUNK
SMALL_LIMIT = 2 * CHUNK + 500
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, SMALL_LIMIT, 5 * MiB + 7]
READ_SIZES = [1, 512, CHUNK - 1, CHUNK, CHUNK + 1, MiB]
INPUTS = ["file", "pipe", "iterator", "short_reads"]
MakeInput = Callable[[str, bytes, int], Input]
Ciphertext = Callable[[int], bytes]
CASES = [pytest.param((size, read), id=f"size{size}-read{read}")
         for size in SIZES for read in READ_SIZES]


def plan(size: int, read_size: int) -> tuple[int, int]:
    """Return (engine read_size, input piece size) for one case.

    The rule: a read size is used for both, except read size 1 on plaintexts larger than
    ``SMALL_LIMIT`` (2 * 16384 + 500 bytes): 5 MiB + 7 one byte at a time means ten million
    calls (about a minute), so there the engine reads 16384 bytes and the input delivers
    16384-byte pieces. Byte-sized reads are covered on every size up to ``SMALL_LIMIT``, where
    the engine crosses chunk boundaries in every state it can be in; read size 512 is cheap
    enough to run on every size.
    """
    if read_size == 1 and size > SMALL_LIMIT:
        return CHUNK, CHUNK
    return read_size, read_size


class ShortReads:
    """A stream with only ``read``: at most ``piece`` bytes per call, sometimes fewer."""

    def __init__(self, data: bytes, piece: int) -> None:
        self._data = memoryview(data)
        self._piece = piece
        self._rng = random.Random(len(data) * 7919 + piece)
        self.requests: list[int] = []

    def read(self, size: int = -1, /) -> bytes:
        self.requests.append(size)
        n = min(size if size >= 0 else len(self._data), self._piece, len(self._data))
        if n > 1 and self._rng.random() < 0.4:
            n = self._rng.randint(1, n - 1)
        out, self._data = bytes(self._data[:n]), self._data[n:]
        return out


def pieces(data: bytes, piece: int) -> Iterator[bytes | bytearray | memoryview]:
    """Yield ``data`` in ``piece``-byte items of every bytes-like type in turn."""
    kinds = (bytes, bytearray, memoryview)
    for number, start in enumerate(range(0, len(data), piece)):
        yield kinds[number % 3](data[start:start + piece])


@pytest.fixture
def make_input(tmp_path: Path,
               pipe_feeder: Callable[[bytes, int], BinaryIO]) -> Iterator[MakeInput]:
    """``make(kind, data, piece)``: ``data`` as an input of the given kind."""
    opened: list[BinaryIO] = []

    def make(kind: str, data: bytes, piece: int) -> Input:
        if kind == "file":
            path = tmp_path / f"input-{len(opened)}"
            path.write_bytes(data)
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed at teardown
            opened.append(f)
            return f
        if kind == "pipe":
            return pipe_feeder(data, piece)
        if kind == "iterator":
            return pieces(data, piece)
        if kind == "short_reads":
            return ShortReads(data, piece)
        raise AssertionError(kind)

    yield make
    for f in opened:
        f.close()


@pytest.fixture(scope="module")
def ciphertext(kek: Kek) -> Ciphertext:
    """``ciphertext(size)``: one encryption of ``plaintext(size)``, shared by the module."""
    cache: dict[int, bytes] = {}

    def get(size: int) -> bytes:
        if size not in cache:
            out = io.BytesIO()
            envelope.encrypt(plaintext(size), out, [kek])
            cache[size] = out.getvalue()
        return cache[size]

    return get


def check_summary(summary: envelope.Summary, size: int, file_size: int) -> None:
    assert summary.plaintext_size == size
    assert summary.payload_size == file_size - summary.header_size
    assert summary.payload_size == _cobblestone.payload_size(size)
    assert summary.file_size == file_size


# --- encrypt from every kind of input --------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", INPUTS)
def test_encrypt_from_input_round_trips(kind: str, case: tuple[int, int], make_input: MakeInput,
                                        kek: Kek, lookup: KekLookup) -> None:
    size, read_size = case
    engine, piece = plan(size, read_size)
    source = make_input(kind, plaintext(size), piece)
    out = io.BytesIO()

    summary = envelope.encrypt(source, out, [kek], read_size=engine)

    data = out.getvalue()
    check_summary(summary, size, len(data))
    if isinstance(source, ShortReads):
        assert max(source.requests) <= engine, "the engine asked for more than read_size"
    back = io.BytesIO()
    check_summary(envelope.decrypt(io.BytesIO(data), back, lookup, read_size=engine),
                  size, len(data))
    assert back.getvalue() == plaintext(size)


# --- decrypt from every kind of input --------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", INPUTS)
def test_decrypt_from_input_round_trips(kind: str, case: tuple[int, int], make_input: MakeInput,
                                        ciphertext: Ciphertext, lookup: KekLookup) -> None:
    size, read_size = case
    data = ciphertext(size)
    engine, piece = plan(size, read_size)
    source = make_input(kind, data, piece)
    out = io.BytesIO()

    summary = envelope.decrypt(source, out, lookup, read_size=engine)

    assert out.getvalue() == plaintext(size)
    check_summary(summary, size, len(data))
    if isinstance(source, ShortReads):
        assert max(source.requests) <= engine, "the engine asked for more than read_size"


# --- sinks: every write is right when it is made, short writes are retried --------------------

@pytest.mark.parametrize("case", CASES)
def test_recording_sink_sees_the_exact_bytes_of_each_write(
        case: tuple[int, int], recording_sink: RecordingSink, kek: Kek, lookup: KekLookup,
        ciphertext: Ciphertext) -> None:
    size, read_size = case
    engine, piece = plan(size, read_size)
    summary = envelope.encrypt(pieces(plaintext(size), piece), recording_sink, [kek],
                               read_size=engine)
    encrypted = recording_sink.data
    check_summary(summary, size, len(encrypted))
    # constant memory: no single write is larger than one output buffer
    assert max(map(len, recording_sink.writes)) <= max(encrypt_buffer_size(engine),
                                                       summary.header_size)

    recording_sink.writes.clear()
    summary = envelope.decrypt(pieces(ciphertext(size), piece), recording_sink, lookup,
                               read_size=engine)
    assert recording_sink.data == plaintext(size)
    check_summary(summary, size, len(ciphertext(size)))
    assert all(len(w) <= decrypt_buffer_size(engine) for w in recording_sink.writes)


@pytest.mark.parametrize("case", CASES)
def test_short_writes_are_retried_until_everything_is_written(
        case: tuple[int, int], short_write_sink: ShortWriteSink, kek: Kek, lookup: KekLookup,
        ciphertext: Ciphertext) -> None:
    size, read_size = case
    engine, piece = plan(size, read_size)
    summary = envelope.encrypt(pieces(plaintext(size), piece), short_write_sink, [kek],
                               read_size=engine)
    encrypted = short_write_sink.data
    check_summary(summary, size, len(encrypted))
    assert all(len(w) <= 1000 for w in short_write_sink.writes)
    assert short_write_sink.calls >= -(-len(encrypted) // 1000)
    back = io.BytesIO()
    envelope.decrypt(io.BytesIO(encrypted), back, lookup, read_size=engine)
    assert back.getvalue() == plaintext(size)

    short_write_sink.writes.clear()
    summary = envelope.decrypt(pieces(ciphertext(size), piece), short_write_sink, lookup,
                               read_size=engine)
    assert short_write_sink.data == plaintext(size)
    check_summary(summary, size, len(ciphertext(size)))


# --- freshness, binding -----------------------------------------------------------------------

def unwrap_dek(file: bytes, kek: envelope.Kek) -> bytes:
    """The DEK of a file, unwrapped as FORMAT.md section 3 says (independent of the engine)."""
    header = parse(file[:int.from_bytes(file[10:12], "big")])
    slot = header.slots[0]
    aad = b"img-crypt slot v1\x00" + header.binding() + slot.label()
    return AESGCM(kek.key).decrypt(slot.nonce, slot.wrapped_dek, aad)


def test_encrypting_twice_gives_unrelated_ciphertexts(kek: Kek, lookup: KekLookup) -> None:
    data = plaintext(CHUNK + 1)
    first, second = io.BytesIO(), io.BytesIO()
    s1 = envelope.encrypt(data, first, [kek])
    s2 = envelope.encrypt(data, second, [kek])
    a, b = first.getvalue(), second.getvalue()

    assert len(a) == len(b)
    assert a != b
    salt_a = a[s1.header_size:s1.header_size + _cobblestone.SALT]
    salt_b = b[s2.header_size:s2.header_size + _cobblestone.SALT]
    assert salt_a != salt_b, "the payload salt must be fresh"
    assert s1.header.slots[0].nonce != s2.header.slots[0].nonce, "the wrap nonce must be fresh"
    assert unwrap_dek(a, kek) != unwrap_dek(b, kek), "every file must get a fresh DEK"
    for ct in (a, b):
        out = io.BytesIO()
        envelope.decrypt(io.BytesIO(ct), out, lookup)
        assert out.getvalue() == data


def test_image_id_round_trips_and_binds(kek: Kek, lookup: KekLookup) -> None:
    image = uuid.uuid4()
    out = io.BytesIO()
    summary = envelope.encrypt(plaintext(CHUNK + 1), out, [kek], image_id=image)
    assert summary.header.image_id == image

    back = io.BytesIO()
    envelope.decrypt(io.BytesIO(out.getvalue()), back, lookup, image_id=image)
    assert back.getvalue() == plaintext(CHUNK + 1)

    wrong = io.BytesIO()
    with pytest.raises(BindingError):
        envelope.decrypt(io.BytesIO(out.getvalue()), wrong, lookup, image_id=uuid.uuid4())
    assert wrong.getvalue() == b""


# --- any bytes, any read size ----------------------------------------------------------------

BOUNDARY_SIZES = sorted({k * CHUNK + d for k in range(5) for d in (-1, 0, 1)} - {-1})
plaintexts = st.one_of(
    st.binary(max_size=2048),
    st.builds(seeded_bytes,
              st.one_of(st.integers(0, 70 * 1024), st.sampled_from(BOUNDARY_SIZES)),
              st.integers(0, 2**32)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=plaintexts, read_size=st.integers(1, 70_000), image_id=st.none() | st.uuids())
def test_any_bytes_round_trip_at_any_read_size(kek: Kek, lookup: KekLookup, data: bytes,
                                               read_size: int,
                                               image_id: uuid.UUID | None) -> None:
    out = io.BytesIO()
    summary = envelope.encrypt(pieces(data, read_size), out, [kek], image_id=image_id,
                               read_size=read_size)
    encrypted = out.getvalue()
    check_summary(summary, len(data), len(encrypted))
    assert summary.header.image_id == image_id

    back = io.BytesIO()
    summary = envelope.decrypt(pieces(encrypted, read_size), back, lookup, image_id=image_id,
                               read_size=read_size)
    assert back.getvalue() == data
    check_summary(summary, len(data), len(encrypted))

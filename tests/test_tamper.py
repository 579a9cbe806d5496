"""Tampering with whole files, in process (FORMAT.md sections 5 to 7).

One fixed file: 2*16384+500 bytes of plaintext (two full chunks and a 500-byte final chunk),
bound to an image id, with a ``local`` and a ``barbican`` slot. Every modification must make
``envelope.decrypt`` fail with FormatError, AuthenticationError or BindingError, and the sink
may only have received a prefix of the true plaintext made of chunks that precede the modified
byte (nothing at all for a header modification).

Bit flips: flipping all ~270k bits one at a time is too slow, so the test flips
- every bit of the header (twice: with and without the image id expected);
- every bit of the first 64 payload bytes (salt, commitment, start of chunk 0);
- every bit of the first 16 and last 16 bytes of every chunk (nonce-adjacent data and tags);
- one bit, chosen by a seeded RNG, in every other 64-byte block of the payload.
"""

from __future__ import annotations

import io
import random
import uuid
from typing import Any

import pytest

from img_crypt import envelope
from img_crypt.envelope import Kek
from img_crypt.errors import (
    AuthenticationError,
    BindingError,
    FormatError,
    KeyNotFoundError,
    UsageError,
)
from tests.support.data import labelled_bytes, seeded_bytes
from tests.support.sinks import RecordingSink

CHUNK, CT_CHUNK, PREFIX = 16384, 16400, 56
REJECT = (FormatError, AuthenticationError, BindingError)
READ_SIZES = (1000, 4096, CT_CHUNK, 1 << 20)


def _bytes(label: str, size: int) -> bytes:
    return labelled_bytes("test_tamper", label, size)


LOCAL = Kek("local", "6f1c2b7e-3a51-4c0e-9d7b-2f4e8a1c5d90", _bytes("kek-local", 32))
BARBICAN = Kek("barbican", "0b8e5f3c-7d21-4a9e-b6c4-1e3f5a7b9c2d", _bytes("kek-barbican", 32))
THIRD = Kek("local", "c4d2e1f0-5b6a-4978-8a9b-0c1d2e3f4a5b", _bytes("kek-third", 32))
IMAGE = uuid.UUID("5e0c7f8a-2b4d-4c6e-8f1a-3b5d7f9e1c2a")
OTHER_IMAGE = uuid.UUID("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
PLAIN = seeded_bytes(2 * CHUNK + 500, 20240501)


def seal(label: str, keks: tuple[Kek, ...] = (LOCAL, BARBICAN), image: uuid.UUID | None = IMAGE,
         plain: bytes = PLAIN, dek: bytes | None = None) -> bytes:
    return envelope._seal_for_vectors(
        plain, keks, image_id=image, dek=dek or _bytes(f"{label}/dek", 32),
        nonces=[_bytes(f"{label}/nonce/{n}", 12) for n in range(len(keks))],
        salt=_bytes(f"{label}/salt", 24))


FILE = seal("main")
HLEN = int.from_bytes(FILE[10:12], "big")
PAYLOAD = FILE[HLEN:]
CHUNKS = [PAYLOAD[PREFIX + i * CT_CHUNK:PREFIX + (i + 1) * CT_CHUNK] for i in range(3)]
assert len(CHUNKS[2]) == 500 + 16


def lookup_of(*keks: Kek) -> envelope.KekLookup:
    table = {(k.kind, k.key_id): k.key for k in keks}
    return lambda kind, key_id: table.get((kind, key_id))


BOTH = lookup_of(LOCAL, BARBICAN)


def decrypt(data: bytes, *, lookup: envelope.KekLookup = BOTH,
            image_id: uuid.UUID | None = IMAGE, read_size: int = 4096) -> bytes:
    sink = RecordingSink()
    envelope.decrypt(io.BytesIO(data), sink, lookup, image_id=image_id, read_size=read_size)
    return bytes(sink.data)


def rejected(data: bytes, *, lookup: envelope.KekLookup = BOTH,
             image_id: uuid.UUID | None = IMAGE, read_size: int = 4096,
             plain: bytes = PLAIN) -> tuple[Exception, bytes]:
    """Decrypt ``data`` expecting a rejection; return the error and what the sink received."""
    sink = RecordingSink()
    try:
        envelope.decrypt(io.BytesIO(data), sink, lookup, image_id=image_id,
                         read_size=read_size)
    except REJECT as e:
        received = bytes(sink.data)
        assert plain.startswith(received), "the sink got bytes that are not the plaintext"
        assert received != plain
        return e, received
    raise AssertionError("a modified file decrypted")


def flip(data: bytes, offset: int, bit: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def test_the_file_decrypts() -> None:
    assert decrypt(FILE) == PLAIN
    assert decrypt(FILE, lookup=lookup_of(LOCAL), image_id=None) == PLAIN
    assert decrypt(FILE, lookup=lookup_of(BARBICAN), read_size=1) == PLAIN
    assert len(FILE) == HLEN + PREFIX + 2 * CT_CHUNK + 516


# --- single-bit flips ----------------------------------------------------------------------

@pytest.mark.parametrize("expect", [IMAGE, None], ids=["expect-image", "no-expectation"])
def test_every_header_bit_flip_is_rejected_before_any_output(expect: uuid.UUID | None) -> None:
    kinds: set[type] = set()
    for offset in range(HLEN):
        for bit in range(8):
            error, received = rejected(flip(FILE, offset, bit), image_id=expect,
                                       read_size=READ_SIZES[(offset + bit) % 4])
            assert received == b"", f"header byte {offset} bit {bit}: plaintext released"
            if 13 <= offset < 29 and expect is not None:
                assert type(error) is BindingError
            kinds.add(type(error))
    assert kinds == ({FormatError, AuthenticationError, BindingError} if expect
                     else {FormatError, AuthenticationError})


def _region(offset: int) -> str:
    return "prefix" if offset < PREFIX else f"chunk{(offset - PREFIX) // CT_CHUNK}"


def _payload_flips() -> dict[str, list[tuple[int, int]]]:
    """(payload offset, bit) pairs, grouped by region (salt+commitment or chunk index)."""
    every = set(range(64))
    for index, chunk in enumerate(CHUNKS):
        start = PREFIX + index * CT_CHUNK
        end = start + len(chunk)
        every |= {*range(start, start + 16), *range(end - 16, end)}
    flips = {(offset, bit) for offset in every for bit in range(8)}
    rng = random.Random(20240502)
    for block in range(0, len(PAYLOAD), 64):
        flips.add((rng.randrange(block, min(block + 64, len(PAYLOAD))), rng.randrange(8)))
    regions: dict[str, list[tuple[int, int]]] = {}
    for offset, bit in sorted(flips):
        regions.setdefault(_region(offset), []).append((offset, bit))
    return regions


FLIPS = _payload_flips()


@pytest.mark.parametrize("region", ["prefix", "chunk0", "chunk1", "chunk2"])
def test_payload_bit_flips_release_only_earlier_chunks(region: str) -> None:
    count = 0
    for n, (offset, bit) in enumerate(FLIPS[region]):
        error, received = rejected(flip(FILE, HLEN + offset, bit),
                                   read_size=READ_SIZES[n % 4])
        assert type(error) is AuthenticationError
        if offset < PREFIX:
            assert received == b"", f"payload byte {offset}: plaintext before the commitment"
        else:
            chunk = (offset - PREFIX) // CT_CHUNK
            assert len(received) <= chunk * CHUNK, (
                f"payload byte {offset} (chunk {chunk}) bit {bit}: {len(received)} bytes out")
        count += 1
    assert count >= 100


def test_payload_flip_sampling_covers_the_payload() -> None:
    assert sorted(FLIPS) == ["chunk0", "chunk1", "chunk2", "prefix"]
    offsets = {o for flips in FLIPS.values() for o, _ in flips}
    blocks = {o // 64 for o in offsets}
    assert blocks == set(range((len(PAYLOAD) + 63) // 64))
    assert {len(PAYLOAD) - 1, 0, PREFIX, PREFIX + CT_CHUNK - 1, PREFIX + CT_CHUNK} <= offsets


# --- truncation and extension --------------------------------------------------------------

def _boundaries() -> list[int]:
    cuts = {HLEN, HLEN + 24, HLEN + PREFIX, len(FILE) - 1, len(FILE) - 16, len(FILE) - 17}
    for k in range(4):
        at = HLEN + PREFIX + k * CT_CHUNK
        cuts |= {at - 1, at, at + 1}
    return sorted(c for c in cuts if HLEN <= c < len(FILE))


@pytest.mark.parametrize("cut", _boundaries())
def test_truncation_in_the_payload_is_rejected(cut: int) -> None:
    for read_size in READ_SIZES:
        error, received = rejected(FILE[:cut], read_size=read_size)
        assert type(error) is AuthenticationError
        assert len(received) <= max(0, cut - HLEN - PREFIX) // CT_CHUNK * CHUNK


def test_truncation_inside_the_header_is_a_format_error() -> None:
    for cut in range(HLEN):
        error, received = rejected(FILE[:cut])
        assert type(error) is FormatError
        assert received == b""


@pytest.mark.parametrize("extra", [b"\x00", CHUNKS[0], CHUNKS[2], bytes(CT_CHUNK), b"\x00" * 16],
                         ids=["1-byte", "copy-of-chunk0", "copy-of-final", "zero-chunk",
                              "16-bytes"])
def test_appended_data_is_rejected(extra: bytes) -> None:
    for read_size in READ_SIZES:
        error, _ = rejected(FILE + extra, read_size=read_size)
        assert type(error) is AuthenticationError


def _payload(*chunks: bytes) -> bytes:
    return FILE[:HLEN + PREFIX] + b"".join(chunks)


C0, C1, C2 = CHUNKS


@pytest.mark.parametrize("data", [
    _payload(C1, C0, C2),
    _payload(C0, C0, C1, C2),
    _payload(C0, C1, C1, C2),
    _payload(C0, C2),
    _payload(C1, C2),
    _payload(C0, C1),
    _payload(C2, C0, C1),
    _payload(C0, C1, C2, C2),
], ids=["swap-0-1", "duplicate-0", "duplicate-1", "drop-1", "drop-0", "drop-final",
        "final-first", "duplicate-final"])
def test_reordered_chunks_are_rejected(data: bytes) -> None:
    assert _payload(C0, C1, C2) == FILE
    for read_size in READ_SIZES:
        error, received = rejected(data, read_size=read_size)
        assert type(error) is AuthenticationError
        assert len(received) <= 2 * CHUNK


# --- binding and splicing ------------------------------------------------------------------

def test_wrong_image_id_is_a_binding_error_before_any_output() -> None:
    error, received = rejected(FILE, image_id=OTHER_IMAGE)
    assert type(error) is BindingError and received == b""
    unbound = seal("unbound", image=None)
    assert decrypt(unbound, image_id=None) == PLAIN
    error, received = rejected(unbound, image_id=IMAGE)
    assert type(error) is BindingError and received == b""


def test_payload_spliced_under_another_header_is_rejected() -> None:
    other = seal("other")  # other DEK and salt
    error, received = rejected(FILE[:HLEN] + other[HLEN:])
    assert type(error) is AuthenticationError and received == b""
    # same DEK and salt, other image id: the payload context binds the image id
    dek = _bytes("main/dek", 32)
    moved = seal("main", image=OTHER_IMAGE, dek=dek)
    assert decrypt(moved, image_id=OTHER_IMAGE) == PLAIN
    assert moved[HLEN:] != FILE[HLEN:]
    error, received = rejected(FILE[:HLEN] + moved[HLEN:])
    assert type(error) is AuthenticationError and received == b""
    error, received = rejected(moved[:HLEN] + FILE[HLEN:], image_id=OTHER_IMAGE)
    assert type(error) is AuthenticationError and received == b""
    # same DEK and salt, unbound: the header is shorter, the payload context differs
    unbound = seal("main", image=None, dek=dek)
    ulen = int.from_bytes(unbound[10:12], "big")
    error, received = rejected(unbound[:ulen] + FILE[HLEN:], image_id=None)
    assert type(error) is AuthenticationError and received == b""


def _slot_span(data: bytes, index: int) -> tuple[int, int]:
    pos = 13 + data[12] + 1
    for n in range(data[13 + data[12]]):
        start = pos
        pos += 1 + data[pos]
        pos += 1 + data[pos] + 12 + 48
        if n == index:
            return start, pos
    raise IndexError(index)


@pytest.mark.parametrize("slot", [0, 1])
@pytest.mark.parametrize("reader", ["local", "barbican", "both"])
def test_key_slot_swapped_in_from_another_file_is_rejected(slot: int, reader: str) -> None:
    other = seal("other")  # same KEKs and image id, other DEK
    start, end = _slot_span(FILE, slot)
    assert _slot_span(other, slot) == (start, end)
    data = FILE[:start] + other[start:end] + FILE[end:]
    lookup = {"local": lookup_of(LOCAL), "barbican": lookup_of(BARBICAN), "both": BOTH}[reader]
    error, received = rejected(data, lookup=lookup)
    assert type(error) is AuthenticationError and received == b""


def test_header_from_another_file_is_rejected() -> None:
    other = seal("other")
    error, received = rejected(other[:HLEN] + FILE[HLEN:])
    assert type(error) is AuthenticationError and received == b""


# --- rewrap --------------------------------------------------------------------------------

def _rewrap(data: bytes, lookup: envelope.KekLookup, **kwargs: Any) -> bytes:
    sink = RecordingSink()
    envelope.rewrap(io.BytesIO(data), sink, lookup, **kwargs)
    return bytes(sink.data)


def _split(data: bytes) -> tuple[bytes, bytes]:
    length = int.from_bytes(data[10:12], "big")
    return data[:length], data[length:]


def test_rewrap_add_then_remove() -> None:
    original = seal("rewrap", keks=(LOCAL,))
    added = _rewrap(original, lookup_of(LOCAL), add=[THIRD])
    assert _split(added)[1] == _split(original)[1]  # payload byte for byte
    assert _split(added)[0] != _split(original)[0]
    info = envelope.inspect(io.BytesIO(added))
    assert [(s.kind, s.key_id) for s in info.header.slots] == [
        (LOCAL.kind, LOCAL.key_id), (THIRD.kind, THIRD.key_id)]
    assert info.header.image_id == IMAGE
    assert decrypt(added, lookup=lookup_of(THIRD)) == PLAIN
    assert decrypt(added, lookup=lookup_of(LOCAL)) == PLAIN
    # the rewrapped header fronts the old payload; the old header still works (same payload)
    assert decrypt(_split(added)[0] + _split(original)[1], lookup=lookup_of(THIRD)) == PLAIN

    removed = _rewrap(added, lookup_of(THIRD), remove=[(LOCAL.kind, LOCAL.key_id)])
    assert _split(removed)[1] == _split(original)[1]
    assert [s.key_id for s in envelope.inspect(io.BytesIO(removed)).header.slots] == [
        THIRD.key_id]
    assert decrypt(removed, lookup=lookup_of(THIRD)) == PLAIN
    sink = RecordingSink()
    with pytest.raises(KeyNotFoundError):
        envelope.decrypt(io.BytesIO(removed), sink, lookup_of(LOCAL))
    assert sink.data == b""

    with pytest.raises(UsageError):  # the last slot
        _rewrap(removed, lookup_of(THIRD), remove=[(THIRD.kind, THIRD.key_id)])
    with pytest.raises(UsageError):  # a slot that is not there
        _rewrap(removed, lookup_of(THIRD), remove=[(LOCAL.kind, LOCAL.key_id)])
    with pytest.raises(UsageError):
        _rewrap(removed, lookup_of(THIRD), remove=[("barbican", THIRD.key_id)])


def test_rewrap_edge_cases() -> None:
    # adding a KEK that already has a slot keeps one slot for it
    same = _rewrap(FILE, BOTH, add=[LOCAL])
    assert [s.key_id for s in envelope.inspect(io.BytesIO(same)).header.slots] == [
        LOCAL.key_id, BARBICAN.key_id]
    assert _split(same)[1] == PAYLOAD
    # remove and add in one step
    swapped = _rewrap(FILE, lookup_of(BARBICAN), add=[THIRD],
                      remove=[(LOCAL.kind, LOCAL.key_id), (BARBICAN.kind, BARBICAN.key_id)])
    assert decrypt(swapped, lookup=lookup_of(THIRD)) == PLAIN
    with pytest.raises(KeyNotFoundError):
        decrypt(swapped, lookup=BOTH)
    # no usable KEK: nothing written
    sink = RecordingSink()
    with pytest.raises(KeyNotFoundError):
        envelope.rewrap(io.BytesIO(FILE), sink, lookup_of(THIRD), add=[THIRD])
    assert sink.data == b""
    # a tampered header is refused (the MAC is checked before rewriting)
    start, _ = _slot_span(FILE, 1)
    sink = RecordingSink()
    with pytest.raises(AuthenticationError):
        envelope.rewrap(io.BytesIO(flip(FILE, start + 60, 0)), sink, lookup_of(LOCAL),
                        add=[THIRD])
    assert sink.data == b""

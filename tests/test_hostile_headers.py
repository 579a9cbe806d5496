"""Hostile headers on a stream: rejected fast, in bounded memory, reading at most the header.

Why a length of 2^32 (or 2^64 - 1) cannot be declared in this format: the only length that
sizes a read is ``header_length``, a u16, so the largest declarable header is 65535 bytes, and
a reader rejects anything outside 110..8192 from the 12-byte prefix before reading further.
Every other length (image_id_length, slot_count, kind_length, key_id_length) is a u8 inside
those at most 8192 bytes and is checked against the bytes left before the MAC. So the worst a
hostile header can do is make the reader read and parse 8192 bytes; there is no allocation or
read sized by the input beyond that. Writing the big-endian bytes of 2^32 (``01 00 00 00 00``)
or 2^64 - 1 (``ff`` * 8) over a field therefore sets the field to its top byte(s) (1 or 256,
255 or 65535) and overwrites the fields after it: these cases check that a reader that reads the
field at its true width rejects what follows, and does not read on.

The base file is sealed deterministically (``envelope._seal_for_vectors``): bound to an image
id, two ``local`` slots with UUID key ids, 1000 plaintext bytes; header_length 268, slots at
30:133 and 133:236. An unbound variant (header_length 252) supplies the unbound positions.

Cases (565):

- ``length`` (27): at each of 9 length-like positions (header_length at 10, image_id_length at
  12, slot_count at 29, kind_length and key_id_length of slot 0 at 30 and 36 and of slot 1 at
  133 and 139; in the unbound file image_id_length at 12 and slot_count at 13), three values:
  the 5 big-endian bytes of 2^32 and the 8 of 2^64 - 1 written from the field on, and the
  field's own maximum (0xffff or 0xff);
- ``zero-slots`` (3): slot_count 0 over an intact header; no slots at all with a consistent
  header_length (62, under the 110 minimum); no slots, zero-padded to the 110 minimum;
- ``million-slots`` (4): a valid prefix with header_length 8192, the image id and a slot count
  of 16, 17 or 255, then a stream of 10^6 slot-shaped 103-byte records (103 MB, generated
  lazily); and the same with header_length 65535;
- ``version`` (255) and ``suite`` (255): every value 0..255 but 1 in the version byte and in
  the suite byte of the intact file;
- ``key-id`` (21): ten invalid UTF-8 sequences (lone continuation, 0xfe, 0xff, truncated 2-
  and 3-byte forms, overlong 2- and 3-byte forms, a surrogate, a code point over U+10FFFF, a
  5-byte form) written at the start of slot 0's and of slot 1's key id (same length), and a
  truncated 3-byte form as the last bytes of slot 0's key id.

Each case is run through ``envelope.inspect`` and ``envelope.decrypt`` (with both KEKs
available) on three streams: an ``io.BytesIO`` (read_size 4096); an endless generator that
yields the bytes in 64-byte items and then zeros (or the slot records) forever (default read
size); and an endless ``read()``-only stream (read_size 512). Each of the six runs must raise
FormatError, take under 0.5 s, allocate under 1 MiB at peak above its baseline (tracemalloc;
the BytesIO read buffer is 4 KiB, nothing sized by the header), and consume at most the
declared header, rounded up to the stream's piece size: at most one piece when the 12-byte
prefix is already invalid, else at most 8192 bytes (MAX_HEADER), however long the stream.
"""

from __future__ import annotations

import io
import itertools
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from img_crypt import envelope
from img_crypt._io import DEFAULT_READ_SIZE
from img_crypt.envelope import Kek
from img_crypt.errors import FormatError
from img_crypt.format import MAGIC, MAX_HEADER, MIN_HEADER
from tests.support.data import labelled_bytes

PIECE = 64  # generator item size; divides MAX_HEADER
READER_READ = 512  # read() size of the read-only stream; divides MAX_HEADER
BYTESIO_READ = 4096  # divides MAX_HEADER
MEMORY_BOUND = 1 << 20
TIME_BOUND = 0.5


def _bytes(label: str, size: int) -> bytes:
    return labelled_bytes("test_hostile_headers", label, size)


KEK_A = Kek("local", "5c0e1d2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f", _bytes("kek-a", 32))
KEK_B = Kek("local", "9e8d7c6b-5a49-4837-a261-504f3e2d1c0b", _bytes("kek-b", 32))
IMAGE = uuid.UUID("3c1d5e7f-9a0b-4c2d-8e4f-6a8b0c2d4e6f")
TABLE = {(k.kind, k.key_id): k.key for k in (KEK_A, KEK_B)}


def lookup(kind: str, key_id: str) -> bytes | None:
    return TABLE.get((kind, key_id))


def seal(image: uuid.UUID | None) -> bytes:
    return envelope._seal_for_vectors(
        _bytes("plain", 1000), (KEK_A, KEK_B), image_id=image, dek=_bytes("dek", 32),
        nonces=[_bytes("nonce-a", 12), _bytes("nonce-b", 12)], salt=_bytes("salt", 24))


FILE = seal(IMAGE)
UNBOUND = seal(None)
SLOT_RECORD = (bytes([5]) + b"local" + bytes([36]) + KEK_A.key_id.encode() + bytes(12)
               + bytes(48))


def put(data: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with ``value`` written over it from ``offset`` (same length)."""
    return data[:offset] + value + data[offset + len(value):]


# --- the cases ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A hostile stream: ``head``, then ``tail`` repeated until ``total`` bytes (None: never)."""

    head: bytes
    tail: bytes = bytes(PIECE)
    total: int | None = None


LENGTH_FIELDS = {  # name: (file, offset, width in bytes)
    "header_length": (FILE, 10, 2),
    "image_id_length": (FILE, 12, 1),
    "slot_count": (FILE, 29, 1),
    "slot0.kind_length": (FILE, 30, 1),
    "slot0.key_id_length": (FILE, 36, 1),
    "slot1.kind_length": (FILE, 133, 1),
    "slot1.key_id_length": (FILE, 139, 1),
    "unbound.image_id_length": (UNBOUND, 12, 1),
    "unbound.slot_count": (UNBOUND, 13, 1),
}
VALUES: dict[str, Callable[[int], bytes]] = {"2^32": lambda width: (2**32).to_bytes(5, "big"),
          "2^64-1": lambda width: (2**64 - 1).to_bytes(8, "big"),
          "max": lambda width: b"\xff" * width}


def _length_cases() -> dict[str, Case]:
    return {f"length-{field}-{value}": Case(put(data, offset, make(width)))
            for field, (data, offset, width) in LENGTH_FIELDS.items()
            for value, make in VALUES.items()}


def _prefix(length: int, count: int) -> bytes:
    return MAGIC + bytes([1, 1]) + length.to_bytes(2, "big") + bytes([16]) + IMAGE.bytes \
        + bytes([count])


def _slot_count_cases() -> dict[str, Case]:
    no_slots = FILE[:12] + bytes([16]) + IMAGE.bytes + bytes([0])
    cases = {
        "zero-slots-count-0-over-slots": Case(put(FILE, 29, b"\x00")),
        "zero-slots-none-at-all": Case(put(no_slots, 10, (len(no_slots) + 32).to_bytes(2, "big"))
                                       + bytes(32)),
        "zero-slots-padded-to-minimum": Case(put(no_slots, 10, MIN_HEADER.to_bytes(2, "big"))
                                             + bytes(MIN_HEADER - len(no_slots))),
    }
    records = 10**6 * len(SLOT_RECORD)
    for length, count in ((MAX_HEADER, 16), (MAX_HEADER, 17), (MAX_HEADER, 255), (65535, 16)):
        head = _prefix(length, count)
        cases[f"million-slots-length-{length}-count-{count}"] = Case(
            head, SLOT_RECORD, len(head) + records)
    return cases


def _version_suite_cases() -> dict[str, Case]:
    return {f"{name}-{value}": Case(put(FILE, offset, bytes([value])))
            for name, offset in (("version", 8), ("suite", 9))
            for value in range(256) if value != 1}


BAD_UTF8 = {
    "lone-continuation": b"\x80", "fe": b"\xfe", "ff": b"\xff", "truncated-2": b"\xc3a",
    "truncated-3": b"\xe2\x82a", "overlong-2": b"\xc0\xaf", "overlong-3": b"\xe0\x80\xaf",
    "surrogate": b"\xed\xa0\x80", "over-10ffff": b"\xf4\x90\x80\x80",
    "5-byte-form": b"\xf8\x88\x80\x80\x80",
}


def _key_id_cases() -> dict[str, Case]:
    cases = {f"key-id-slot{slot}-{name}": Case(put(FILE, start, sequence))
             for slot, start in ((0, 37), (1, 140)) for name, sequence in BAD_UTF8.items()}
    cases["key-id-slot0-truncated-3-at-end"] = Case(put(FILE, 37 + 36 - 2, b"\xe2\x82"))
    return cases


CASES: dict[str, Case] = {**_length_cases(), **_slot_count_cases(), **_version_suite_cases(),
                          **_key_id_cases()}


# --- streams --------------------------------------------------------------------------------

class Endless:
    """``case.head`` then ``case.tail`` repeated; counts every byte it hands out."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.count = 0

    def take(self, size: int) -> bytes:
        head, tail, total = self.case.head, self.case.tail, self.case.total
        out = bytearray()
        while len(out) < size and (total is None or self.count < total):
            want = size - len(out) if total is None else min(size - len(out), total - self.count)
            if self.count < len(head):
                part = head[self.count:self.count + want]
            else:
                at = (self.count - len(head)) % len(tail)
                part = tail[at:at + want]
            out += part
            self.count += len(part)
        return bytes(out)

    def __iter__(self) -> Iterator[bytes]:
        while piece := self.take(PIECE):
            yield piece


class EndlessReader:
    """A ``read()``-only view of an :class:`Endless` stream (no ``readinto``)."""

    def __init__(self, stream: Endless) -> None:
        self.stream = stream

    def read(self, size: int = -1, /) -> bytes:
        assert size >= 0, "read() of an endless stream would never return"
        return self.stream.take(size)


class Counted(io.BytesIO):
    """A BytesIO of the head and 16 KiB of the tail; ``count`` is its read position."""

    def __init__(self, case: Case) -> None:
        super().__init__(Endless(case).take(len(case.head) + 16384))

    @property
    def count(self) -> int:
        return self.tell()


SOURCES: dict[str, tuple[Callable[[Case], Counted | Endless | EndlessReader], int, int]] = {
    # name: (make the stream, read_size, granularity of what the reader pulls)
    "bytesio": (Counted, BYTESIO_READ, BYTESIO_READ),
    "generator": (Endless, DEFAULT_READ_SIZE, PIECE),
    "reader": (lambda case: EndlessReader(Endless(case)), READER_READ, READER_READ),
}


def consumed(source: Counted | Endless | EndlessReader) -> int:
    return source.stream.count if isinstance(source, EndlessReader) else source.count


def declared_header(head: bytes) -> int | None:
    """FORMAT.md section 2 on the 12-byte prefix: the length to read next, or None (reject)."""
    length = int.from_bytes(head[10:12], "big")
    if head[:8] != MAGIC or head[8] != 1 or head[9] != 1 or not 110 <= length <= MAX_HEADER:
        return None
    return length


def read_bound(head: bytes, granularity: int) -> int:
    """What a reader may pull: the declared header, else the prefix, in whole pieces."""
    want = declared_header(head) or 12
    return min(-(-want // granularity) * granularity, MAX_HEADER)


def _inspect(source: object, read_size: int) -> None:
    envelope.inspect(source, read_size=read_size)  # type: ignore[arg-type]


def _decrypt(source: object, read_size: int) -> None:
    sink = io.BytesIO()
    try:
        envelope.decrypt(source, sink, lookup, read_size=read_size)  # type: ignore[arg-type]
    finally:
        assert sink.getvalue() == b"", "plaintext released from a hostile header"


OPS: dict[str, Callable[[object, int], None]] = {"inspect": _inspect, "decrypt": _decrypt}


def measure(op: Callable[[object, int], None], source: object,
            read_size: int) -> tuple[BaseException | None, int, float]:
    """Run ``op``; return what it raised, its peak allocation above baseline, and its time."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            op(source, read_size)
        except Exception as e:  # the caller checks the class
            error = e
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    return error, peak, elapsed


# --- controls -------------------------------------------------------------------------------

def test_the_base_files_have_the_documented_layout() -> None:
    assert int.from_bytes(FILE[10:12], "big") == 268 and FILE[12] == 16 and FILE[29] == 2
    assert (FILE[30], FILE[36], FILE[133], FILE[139]) == (5, 36, 5, 36)
    assert FILE[37:73] == KEK_A.key_id.encode() and FILE[140:176] == KEK_B.key_id.encode()
    assert int.from_bytes(UNBOUND[10:12], "big") == 252 and UNBOUND[12:14] == b"\x00\x02"
    assert FILE[30:73] == SLOT_RECORD[:43] and len(SLOT_RECORD) == 133 - 30  # a slot's shape
    for data in (FILE, UNBOUND):
        for name, (make, read_size, _) in SOURCES.items():
            sink = io.BytesIO()
            envelope.decrypt(make(Case(data, b"", len(data))), sink, lookup,
                             read_size=read_size)
            assert sink.getvalue() == _bytes("plain", 1000), name


def test_the_case_counts_are_the_documented_ones() -> None:
    prefixes = ("length", "zero-slots", "million-slots", "version", "suite", "key-id")
    counts = {p: sum(name.startswith(f"{p}-") for name in CASES) for p in prefixes}
    assert counts == {"length": 27, "zero-slots": 3, "million-slots": 4, "version": 255,
                      "suite": 255, "key-id": 21}
    assert len(CASES) == 565


def test_the_endless_streams_are_endless() -> None:
    """Control: read to the end, these streams would not stop (or only after 10^6 records)."""
    stream = Endless(CASES["version-0"])
    assert len(list(itertools.islice(stream, 10_000))) == 10_000
    assert stream.count == 10_000 * PIECE
    million = Endless(CASES["million-slots-length-8192-count-16"])
    assert million.case.total == len(million.case.head) + 103 * 10**6
    assert million.take(len(million.case.head) + 2 * 103)[-103:] == SLOT_RECORD


def test_measure_sees_a_big_allocation_and_an_over_read() -> None:
    """Controls for the harness: the bounds can fail."""
    def allocate(source: object, size: int) -> None:
        bytearray(size)

    error, peak, _ = measure(allocate, None, 2 << 20)
    assert error is None and peak >= 2 << 20
    def careless(stream: object, size: int) -> None:
        assert isinstance(stream, Endless)
        b"".join(itertools.islice(stream, size))

    source = Endless(CASES["version-0"])
    measure(careless, source, 200)
    assert consumed(source) == 200 * PIECE > read_bound(source.case.head, PIECE)


# --- every case, every stream, both operations ----------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_hostile_header_is_rejected_fast_in_bounded_memory(name: str) -> None:
    case = CASES[name]
    for source_name, (make, read_size, granularity) in SOURCES.items():
        for op_name, op in OPS.items():
            where = f"{op_name} on {source_name}"
            source = make(case)
            error, peak, elapsed = measure(op, source, read_size)
            assert type(error) is FormatError, f"{where}: {error!r}"
            assert "\n" not in str(error)
            assert peak < MEMORY_BOUND, f"{where}: {peak} bytes allocated at peak"
            assert elapsed < TIME_BOUND, f"{where}: took {elapsed:.3f} s"
            assert consumed(source) <= read_bound(case.head, granularity), (
                f"{where}: read {consumed(source)} bytes")
            if name.startswith(("version-", "suite-")):
                assert f" {name.split('-')[1]} " in f"{error} ", f"{where}: {error}"

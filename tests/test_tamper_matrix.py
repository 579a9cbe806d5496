"""One explicit tamper matrix over a multi-chunk file (FORMAT.md sections 2 to 7).

The file: 5 full chunks and a 777-byte final chunk (5 * 16384 + 777 plaintext bytes), bound to
an image id, with two ``local`` key slots (A and B, UUID key ids), so its 268-byte header is

    magic 0:8 | version 8 | suite 9 | header_length 10:12 | image_id_length 12 | image_id 13:29
    | slot_count 29 | slot0 30:133 | slot1 133:236 | header_mac 236:268

and its payload is salt (24) | commitment (32) | chunks 0..4 (16400 bytes each) | chunk 5 (793).
It is sealed deterministically through ``envelope._seal_for_vectors`` (the seam of
``envelope.encrypt`` whose bytes ``tests/test_vectors.py`` pins), so a failing case replays
bit for bit. A second file (same KEKs, same image id, other DEK and plaintext) is the source of
spliced payloads and key slots.

Cases (each one parametrize id; 2426 in all):

- ``header``  (284): every header byte xor 0xff, each named by its field (magic, version, suite,
  header_length, image_id_length, image_id, slot_count, and for both slots kind_length, kind,
  key_id_length, key_id, nonce, wrapped_dek, then header_mac): 268; plus the 16 image id
  bytes again with no image id expected (then the slot AAD and MAC must catch them): 16.
  With the image id expected, an image id flip is a BindingError before any key is used.
- ``prefix``  (56): every byte of the salt (24) and of the commitment (32), xor 0xff.
- ``chunk``   (2025): chunks 0 (first), 2 (middle) and 5 (last), xor 0xff. Every byte of each
  tag (3 * 16 = 48), and of each body a stride of 17 bytes (0, 17, 34, ...; 17 is prime to
  16, so the flipped byte walks through every position of the 16-byte AES blocks) plus its
  last byte: 965 + 965 + 47. Not every body byte: with five decrypts each, the 33,600 inputs
  of the three whole chunks take over a minute here.
- ``truncate`` (25): at 0, 12, one byte before the header end, at the header end and +1, after
  the salt, at every chunk start (0..5, so chunk5_start drops the final chunk) and one byte
  either side, and one byte before the end.
- ``append``   (6): 1 zero byte; 16 bytes; a copy of chunk 0, of chunk 4 and of the final
  chunk (the final chunk duplicated); 16400 random bytes.
- ``reorder``  (13): swaps (0-1, 2-3, 3-4), duplicates (0, 2, 4), drops (0, 2, 4), the final
  chunk moved first, into the middle and before chunk 4, and chunk 0 replayed in place of
  chunk 2. (Dropping and duplicating the final chunk are ``truncate-at-chunk5_start`` and
  ``append-copy-of-final-chunk``: the same bytes, so not repeated here.)
- ``splice``   (5): the other file's header over this payload, this header over the other's
  payload (whole, from chunk 0, from chunk 3), and this header over the payload of a file with
  the same DEK and salt but another image id (the payload context binds the image id).
- ``slots``    (10): slot 0, slot 1 or both taken from the other file (reader holding A and B,
  A only, B only), the two slots exchanged, slot 0 copied over slot 1 (a duplicate: a format
  error), a slot of the other file added as a third slot (under an unknown key id), slot 1
  removed (header_length and slot_count fixed up wherever the slot list changes length).
- ``binding``  (2): the intact file read with another expected image id; an unbound file
  (same KEKs) read with an expected image id.

In process, every case runs through eight legs of ``envelope.decrypt`` (``LEGS``): on one thread
(the streaming path) from a BytesIO into a recording sink with read sizes 1000, 40000 (between 2
and 3 chunks) and 1 MiB (the whole file at once), and into a regular file (a ``TemporaryFile``,
so ``_pump`` writes it from the write-behind thread) with read sizes 1000 and 1 MiB, the file
read back afterwards; and on the chunk-parallel path (:mod:`img_crypt._parallel`) from a BytesIO
with 3 workers and one chunk per job, with 2 workers and two chunks per job, and from a regular
file (read by offset from the workers) with 4 workers and one chunk per job. Each must raise the
case's exact error class (BindingError only in ``binding`` and the image id flips; FormatError
for structural damage; AuthenticationError otherwise), and what reached the sink must be whole
chunks of the true plaintext, ``PLAIN[:16384 * k]``, where every one of those k chunks lies
entirely before the first byte at which the input differs from the original file (nothing at
all for a header, format or binding failure).

Through the CLI (``main(["decrypt", ...])``), 84 of the cases, against a local key store that
holds the case's reader keys: in ``header``, the first byte of every field, the last byte of
the MAC and the first image id byte with no image id expected (22); in ``prefix``, the first
and last salt and commitment bytes (4); in ``chunk``, the first and a middle body byte and the
first and last tag byte of each of the three chunks (12); in ``truncate``, 0, 12, the header
end, every chunk start and one byte before the end (10); every ``append``, ``reorder``,
``splice``, ``slots`` and ``binding`` case (36), with ``--threads 2`` (the parallel path, the
input read by offset). Each must exit 1 with exactly one stderr line
starting ``img-crypt: error:``, print nothing on stdout, and leave the output directory empty
(no OUTPUT, no ``.part`` file).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from img_crypt import _parallel, _writebehind, envelope
from img_crypt.envelope import Kek
from img_crypt.errors import AuthenticationError, BindingError, FormatError
from img_crypt.keys.local import KeyRecord
from tests.support.cli import cli
from tests.support.data import first_difference, labelled_bytes, seeded_bytes
from tests.support.sinks import RecordingSink

CHUNK, TAG, CT_CHUNK, PREFIX, MAC = 16384, 16, 16400, 56, 32
FULL_CHUNKS, FINAL_PLAIN = 5, 777
STRIDE = 17



@dataclass(frozen=True)
class Leg:
    """One way of decrypting: the input and sink kinds, the read size and the threads."""

    source: str  # "memory" (a BytesIO) or "file" (a regular file, read by offset if parallel)
    sink: str  # "recording" (a RecordingSink) or "file" (a TemporaryFile, read back)
    read_size: int
    threads: int

    @property
    def name(self) -> str:
        return (f"{self.source} -> {self.sink} sink, read_size {self.read_size}, "
                f"threads {self.threads}")


LEGS = (
    Leg("memory", "recording", 1000, 1), Leg("memory", "recording", 40000, 1),
    Leg("memory", "recording", 1 << 20, 1), Leg("memory", "file", 1000, 1),
    Leg("memory", "file", 1 << 20, 1),
    Leg("memory", "recording", 1000, 3), Leg("memory", "recording", 40000, 2),
    Leg("file", "recording", 1000, 4),
)


def _bytes(label: str, size: int) -> bytes:
    return labelled_bytes("test_tamper_matrix", label, size)


KEK_A = Kek("local", "2d9a4b6c-8e1f-4a3b-9c5d-7e0f1a2b3c4d", _bytes("kek-a", 32))
KEK_B = Kek("local", "7b3e5f10-2c4d-4e6f-8a9b-0c1d2e3f4a5b", _bytes("kek-b", 32))
KEKS = {"ab": (KEK_A, KEK_B), "a": (KEK_A,), "b": (KEK_B,)}
IMAGE = uuid.UUID("0a1b2c3d-4e5f-4607-8819-2a3b4c5d6e7f")
OTHER_IMAGE = uuid.UUID("f0e1d2c3-b4a5-4697-8879-6a5b4c3d2e1f")
PLAIN = seeded_bytes(FULL_CHUNKS * CHUNK + FINAL_PLAIN, 20240601)
OTHER_PLAIN = seeded_bytes(len(PLAIN), 20240602)


def seal(label: str, plain: bytes = PLAIN, image: uuid.UUID | None = IMAGE,
         dek_label: str | None = None) -> bytes:
    keks = KEKS["ab"]
    return envelope._seal_for_vectors(
        plain, keks, image_id=image, dek=_bytes(f"{dek_label or label}/dek", 32),
        nonces=[_bytes(f"{label}/nonce/{n}", 12) for n in range(len(keks))],
        salt=_bytes(f"{dek_label or label}/salt", 24))


FILE = seal("main")
OTHER = seal("other", OTHER_PLAIN)
MOVED = seal("moved", image=OTHER_IMAGE, dek_label="main")  # same DEK and salt as FILE
UNBOUND = seal("unbound", image=None)
HLEN = int.from_bytes(FILE[10:12], "big")
PAYLOAD = HLEN + PREFIX  # file offset of chunk 0
END = len(FILE)


def chunk_span(data: bytes, index: int) -> tuple[int, int]:
    """File offsets of chunk ``index`` (of a file with this file's header length)."""
    start = PAYLOAD + index * CT_CHUNK
    return start, min(start + CT_CHUNK, len(data))


def chunks(data: bytes) -> list[bytes]:
    return [data[slice(*chunk_span(data, i))] for i in range(FULL_CHUNKS + 1)]


C = chunks(FILE)
OC = chunks(OTHER)
C0, C1, C2, C3, C4, FINAL = C


def header_fields(data: bytes) -> list[tuple[str, int, int]]:
    """(field name, start, end) of every header field, in order (FORMAT.md sections 2, 3)."""
    fields = [("magic", 0, 8), ("version", 8, 9), ("suite", 9, 10), ("header_length", 10, 12),
              ("image_id_length", 12, 13)]
    pos = 13
    if data[12]:
        fields.append(("image_id", 13, 13 + data[12]))
        pos += data[12]
    fields.append(("slot_count", pos, pos + 1))
    pos += 1
    for n in range(data[pos - 1]):
        for name, fixed in (("kind_length", 1), ("kind", 0), ("key_id_length", 1),
                            ("key_id", 0), ("nonce", 12), ("wrapped_dek", 48)):
            size = fixed or data[pos - 1]
            fields.append((f"slot{n}.{name}", pos, pos + size))
            pos += size
    hlen = int.from_bytes(data[10:12], "big")
    fields.append(("header_mac", hlen - MAC, hlen))
    return fields


FIELDS = header_fields(FILE)


def slot_span(data: bytes, index: int) -> tuple[int, int]:
    fields = dict((name, (start, end)) for name, start, end in header_fields(data))
    return fields[f"slot{index}.kind_length"][0], fields[f"slot{index}.wrapped_dek"][1]


# --- the oracle -----------------------------------------------------------------------------

def releasable(data: bytes, expect: type[Exception]) -> int:
    """The most plaintext bytes a correct reader may release before failing on ``data``.

    Whole chunks that lie entirely before the first changed byte; none if the failure is a
    format or binding error, or if the change is in the header, salt or commitment.
    """
    if expect is not AuthenticationError:
        return 0
    offset = first_difference(data, FILE) - PAYLOAD
    return 0 if offset < 0 else min(offset // CT_CHUNK, FULL_CHUNKS) * CHUNK


def check_released(received: bytes, bound: int, where: str) -> None:
    assert len(received) % CHUNK == 0, f"{where}: {len(received)} bytes: not whole chunks"
    assert len(received) <= bound, f"{where}: {len(received)} bytes released, at most {bound}"
    assert received == PLAIN[:len(received)], f"{where}: released bytes are not the plaintext"


# --- the cases ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One tampered input and what decrypting it must do."""

    category: str
    build: Callable[[], bytes]
    expect: type[Exception]
    image_id: uuid.UUID | None = IMAGE
    keys: str = "ab"
    cli: bool = False


def xor_at(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


def const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _header_error(field: str) -> type[Exception]:
    if field == "image_id":
        return BindingError
    if field.endswith(("nonce", "wrapped_dek")) or field == "header_mac":
        return AuthenticationError
    return FormatError


def _header_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for field, start, end in FIELDS:
        for offset in range(start, end):
            cli_run = offset == start or (field == "header_mac" and offset == end - 1)
            cases[f"header-{field}-{offset - start}"] = Case(
                "header", functools.partial(xor_at, FILE, offset), _header_error(field),
                cli=cli_run)
    image = next((s, e) for f, s, e in FIELDS if f == "image_id")
    for offset in range(*image):
        cases[f"header-image_id-{offset - image[0]}-unchecked"] = Case(
            "header", functools.partial(xor_at, FILE, offset), AuthenticationError,
            image_id=None, cli=offset == image[0])
    return cases


def _prefix_cases() -> dict[str, Case]:
    cases = {}
    for name, start, end in (("salt", HLEN, HLEN + 24), ("commitment", HLEN + 24, PAYLOAD)):
        for offset in range(start, end):
            cases[f"prefix-{name}-{offset - start}"] = Case(
                "prefix", functools.partial(xor_at, FILE, offset), AuthenticationError,
                cli=offset in (start, end - 1))
    return cases


def _chunk_cases() -> dict[str, Case]:
    cases = {}
    for index in (0, 2, FULL_CHUNKS):
        start, end = chunk_span(FILE, index)
        body = end - TAG - start
        offsets = sorted({*range(0, body, STRIDE), body - 1})
        middle = offsets[len(offsets) // 2]
        for offset in offsets:
            cases[f"chunk{index}-body-{offset}"] = Case(
                "chunk", functools.partial(xor_at, FILE, start + offset), AuthenticationError,
                cli=offset in (0, middle))
        for offset in range(TAG):
            cases[f"chunk{index}-tag-{offset}"] = Case(
                "chunk", functools.partial(xor_at, FILE, end - TAG + offset),
                AuthenticationError, cli=offset in (0, TAG - 1))
    return cases


def _truncate_cases() -> dict[str, Case]:
    cuts = {"0": 0, "12": 12, "header_end-1": HLEN - 1, "header_end": HLEN,
            "header_end+1": HLEN + 1, "after_salt": HLEN + 24, "end-1": END - 1}
    for index in range(FULL_CHUNKS + 1):
        at = PAYLOAD + index * CT_CHUNK
        cuts |= {f"chunk{index}_start-1": at - 1, f"chunk{index}_start": at,
                 f"chunk{index}_start+1": at + 1}
    cli_cuts = {"0", "12", "header_end", "end-1"} | {f"chunk{i}_start"
                                                      for i in range(FULL_CHUNKS + 1)}
    return {f"truncate-at-{name}": Case(
        "truncate", const(FILE[:cut]), FormatError if cut < HLEN else AuthenticationError,
        cli=name in cli_cuts) for name, cut in sorted(cuts.items(), key=lambda kv: kv[1])}


def _append_cases() -> dict[str, Case]:
    extra = {"1-zero-byte": b"\x00", "16-bytes": bytes(16), "copy-of-chunk0": C0,
             "copy-of-chunk4": C4, "copy-of-final-chunk": FINAL,
             "random-chunk": seeded_bytes(CT_CHUNK, 20240603)}
    return {f"append-{name}": Case("append", const(FILE + data), AuthenticationError, cli=True)
            for name, data in extra.items()}


def _payload(*parts: bytes) -> bytes:
    return FILE[:PAYLOAD] + b"".join(parts)


def _reorder_cases() -> dict[str, Case]:
    layouts = {
        "swap-0-1": (C1, C0, C2, C3, C4, FINAL),
        "swap-2-3": (C0, C1, C3, C2, C4, FINAL),
        "swap-3-4": (C0, C1, C2, C4, C3, FINAL),
        "duplicate-0": (C0, C0, C1, C2, C3, C4, FINAL),
        "duplicate-2": (C0, C1, C2, C2, C3, C4, FINAL),
        "duplicate-4": (C0, C1, C2, C3, C4, C4, FINAL),
        "drop-0": (C1, C2, C3, C4, FINAL),
        "drop-2": (C0, C1, C3, C4, FINAL),
        "drop-4": (C0, C1, C2, C3, FINAL),
        "final-moved-first": (FINAL, C0, C1, C2, C3, C4),
        "final-moved-to-2": (C0, C1, FINAL, C2, C3, C4),
        "final-moved-before-4": (C0, C1, C2, C3, FINAL, C4),
        "chunk0-replayed-as-2": (C0, C1, C0, C3, C4, FINAL),
    }
    return {f"reorder-{name}": Case("reorder", functools.partial(_payload, *parts),
                                    AuthenticationError, cli=True)
            for name, parts in layouts.items()}


def _splice_cases() -> dict[str, Case]:
    spliced = {
        "other-header-this-payload": lambda: OTHER[:HLEN] + FILE[HLEN:],
        "this-header-other-payload": lambda: FILE[:HLEN] + OTHER[HLEN:],
        "other-chunks-from-0": lambda: FILE[:PAYLOAD] + OTHER[PAYLOAD:],
        "other-chunks-from-3": lambda: _payload(C0, C1, C2, *OC[3:]),
        "payload-of-same-dek-other-image": lambda: FILE[:HLEN] + MOVED[HLEN:],
    }
    return {f"splice-{name}": Case("splice", build, AuthenticationError, cli=True)
            for name, build in spliced.items()}


def _with_slots(data: bytes, *slots: bytes) -> bytes:
    """``data`` with its key slots replaced by ``slots`` (count and header_length fixed up)."""
    first, _ = slot_span(data, 0)
    _, last = slot_span(data, data[first - 1] - 1)
    body = data[12:first - 1] + bytes([len(slots)]) + b"".join(slots)
    hlen = 12 + len(body) + MAC
    return data[:10] + hlen.to_bytes(2, "big") + body + data[last:]


def _slot(data: bytes, index: int) -> bytes:
    return data[slice(*slot_span(data, index))]


def _slot_cases() -> dict[str, Case]:
    s0, s1, o0, o1 = _slot(FILE, 0), _slot(FILE, 1), _slot(OTHER, 0), _slot(OTHER, 1)
    swapped: dict[str, tuple[Callable[[], bytes], str, type[Exception]]] = {
        "slot0-from-other": (lambda: _with_slots(FILE, o0, s1), "ab", AuthenticationError),
        "slot0-from-other-reader-a": (lambda: _with_slots(FILE, o0, s1), "a",
                                      AuthenticationError),
        "slot1-from-other": (lambda: _with_slots(FILE, s0, o1), "ab", AuthenticationError),
        "slot1-from-other-reader-b": (lambda: _with_slots(FILE, s0, o1), "b",
                                      AuthenticationError),
        "both-from-other": (lambda: _with_slots(FILE, o0, o1), "ab", AuthenticationError),
        "both-from-other-reader-b": (lambda: _with_slots(FILE, o0, o1), "b",
                                     AuthenticationError),
        "exchanged": (lambda: _with_slots(FILE, s1, s0), "ab", AuthenticationError),
        "slot0-copied-over-slot1": (lambda: _with_slots(FILE, s0, s0), "ab", FormatError),
        "third-slot-from-other": (lambda: _with_slots(FILE, s0, s1, o0.replace(
            KEK_A.key_id.encode(), b"0" * len(KEK_A.key_id))), "ab", AuthenticationError),
        "slot1-removed": (lambda: _with_slots(FILE, s0), "a", AuthenticationError),
    }
    return {f"slots-{name}": Case("slots", build, expect, keys=keys, cli=True)
            for name, (build, keys, expect) in swapped.items()}


def _binding_cases() -> dict[str, Case]:
    return {
        "binding-other-image-expected": Case("binding", const(FILE), BindingError,
                                             image_id=OTHER_IMAGE, cli=True),
        "binding-unbound-file-image-expected": Case("binding", const(UNBOUND), BindingError,
                                                    cli=True),
    }


CASES: dict[str, Case] = {
    **_header_cases(), **_prefix_cases(), **_chunk_cases(), **_truncate_cases(),
    **_append_cases(), **_reorder_cases(), **_splice_cases(), **_slot_cases(),
    **_binding_cases(),
}
COUNTS = {"header": 284, "prefix": 56, "chunk": 2025, "truncate": 25, "append": 6,
          "reorder": 13, "splice": 5, "slots": 10, "binding": 2}
CLI_COUNTS = {"header": 22, "prefix": 4, "chunk": 12, "truncate": 10, "append": 6,
              "reorder": 13, "splice": 5, "slots": 10, "binding": 2}


# --- harness --------------------------------------------------------------------------------

def lookup_of(keys: str) -> envelope.KekLookup:
    table = {(k.kind, k.key_id): k.key for k in KEKS[keys]}
    return lambda kind, key_id: table.get((kind, key_id))


def _decrypt(case: Case, data: bytes, leg: Leg) -> tuple[Exception | None, bytes]:
    """Decrypt ``data`` as ``leg`` says; return (the error or None, what the sink received)."""
    with contextlib.ExitStack() as stack:
        source: io.BytesIO | BinaryIO = io.BytesIO(data)
        if leg.source == "file":
            source = stack.enter_context(tempfile.TemporaryFile(buffering=0))
            source.write(data)
            source.seek(0)
        recording = RecordingSink()
        file = stack.enter_context(tempfile.TemporaryFile(buffering=0))
        error: Exception | None = None
        try:
            envelope.decrypt(source, recording if leg.sink == "recording" else file,
                             lookup_of(case.keys), image_id=case.image_id,
                             read_size=leg.read_size, threads=leg.threads)
        except Exception as e:  # the case decides which class is right
            error = e
        file.seek(0)
        return error, recording.data if leg.sink == "recording" else file.read()


def _legs(case: Case, data: bytes) -> list[tuple[str, Exception, bytes]]:
    """(leg name, the error raised, what the sink received) for every in-process leg."""
    results = []
    for leg in LEGS:
        error, received = _decrypt(case, data, leg)
        if error is None:
            raise AssertionError(f"{leg.name}: the tampered input decrypted")
        results.append((leg.name, error, received))
    return results


# --- controls -------------------------------------------------------------------------------

def test_the_file_has_the_documented_shape() -> None:
    assert HLEN == 268
    assert [(f, s, e) for f, s, e in FIELDS if not f.startswith("slot0.")][:7] == [
        ("magic", 0, 8), ("version", 8, 9), ("suite", 9, 10), ("header_length", 10, 12),
        ("image_id_length", 12, 13), ("image_id", 13, 29), ("slot_count", 29, 30)]
    assert slot_span(FILE, 0) == (30, 133) and slot_span(FILE, 1) == (133, 236)
    assert [i for _, s, e in FIELDS for i in range(s, e)] == list(range(HLEN))
    assert [len(c) for c in C] == [CT_CHUNK] * FULL_CHUNKS + [FINAL_PLAIN + TAG]
    assert b"".join(C) == FILE[PAYLOAD:] and len(OTHER) == END
    assert _with_slots(FILE, _slot(FILE, 0), _slot(FILE, 1)) == FILE


def test_the_case_counts_are_the_documented_ones() -> None:
    counts: dict[str, int] = {}
    cli_counts: dict[str, int] = {}
    for case in CASES.values():
        counts[case.category] = counts.get(case.category, 0) + 1
        cli_counts[case.category] = cli_counts.get(case.category, 0) + case.cli
    assert counts == COUNTS and sum(counts.values()) == len(CASES) == 2426
    assert cli_counts == CLI_COUNTS and sum(cli_counts.values()) == 84


@pytest.mark.parametrize("keys", list(KEKS))
def test_the_original_decrypts_in_every_leg(keys: str) -> None:
    case = Case("control", const(FILE), AuthenticationError, IMAGE, keys)
    for leg in LEGS:
        assert _decrypt(case, FILE, leg) == (None, PLAIN), leg.name


def test_the_source_files_decrypt() -> None:
    for data, plain, image in ((OTHER, OTHER_PLAIN, IMAGE), (MOVED, PLAIN, OTHER_IMAGE),
                               (UNBOUND, PLAIN, None)):
        sink = RecordingSink()
        envelope.decrypt(io.BytesIO(data), sink, lookup_of("ab"), image_id=image)
        assert sink.data == plain


def test_the_regular_file_leg_goes_through_the_write_behind_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []

    class Counting(_writebehind.BehindWriter):
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_writebehind, "BehindWriter", Counting)
    case = CASES["chunk2-tag-15"]
    legs = _legs(case, case.build())
    assert len(made) == sum(leg.sink == "file" and leg.threads == 1 for leg in LEGS) == 2
    assert [type(e) for _, e, _ in legs] == [AuthenticationError] * len(legs)


def test_the_parallel_legs_go_through_the_worker_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    readers: list[str] = []
    original = _parallel.run

    def counting(chunks: _parallel.Chunks, reader: _parallel.Reader, *args: Any,
                 **kwargs: Any) -> tuple[int, int]:
        readers.append(type(reader).__name__)
        return original(chunks, reader, *args, **kwargs)

    monkeypatch.setattr(_parallel, "run", counting)
    case = CASES["chunk2-tag-15"]
    legs = _legs(case, case.build())
    assert readers == ["StreamReader", "StreamReader", "FileReader"]
    assert [type(e) for _, e, _ in legs] == [AuthenticationError] * len(legs)


def test_the_oracle_rejects_leaks() -> None:
    check_released(PLAIN[:2 * CHUNK], 2 * CHUNK, "ok")
    for received, bound in ((PLAIN[:CHUNK], 0), (PLAIN[:CHUNK + 1], 2 * CHUNK),
                            (OTHER_PLAIN[:CHUNK], CHUNK), (PLAIN, len(PLAIN))):
        with pytest.raises(AssertionError):
            check_released(received, bound, "leak")
    assert releasable(xor_at(FILE, PAYLOAD + 2 * CT_CHUNK), AuthenticationError) == 2 * CHUNK
    assert releasable(FILE[:PAYLOAD + 2 * CT_CHUNK], AuthenticationError) == 2 * CHUNK
    assert releasable(FILE + b"\x00", AuthenticationError) == FULL_CHUNKS * CHUNK
    assert releasable(xor_at(FILE, HLEN), AuthenticationError) == 0
    assert releasable(xor_at(FILE, PAYLOAD + 2 * CT_CHUNK), FormatError) == 0


# --- in process: every case -----------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_in_process(name: str) -> None:
    case = CASES[name]
    data = case.build()
    assert data != FILE or case.expect is BindingError
    bound = releasable(data, case.expect)
    for leg, error, received in _legs(case, data):
        assert type(error) is case.expect, f"{leg}: {type(error).__name__}: {error}"
        assert "\n" not in str(error)
        check_released(received, bound, leg)


# --- through the CLI: the representative subset ---------------------------------------------

@pytest.fixture(scope="module")
def key_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A local key store per reader (A and B, A only, B only) holding this file's KEKs."""
    root = tmp_path_factory.mktemp("matrix-keys")
    stores = {}
    for name, keks in KEKS.items():
        store = root / name
        os.mkdir(store, 0o700)
        for kek in keks:
            record = KeyRecord(id=kek.key_id, created=datetime(2024, 6, 1, tzinfo=UTC),
                               key=base64.b64encode(kek.key).decode())
            path = store / f"{kek.key_id}.key.json"
            path.write_bytes(record.to_json())
            path.chmod(0o600)
        stores[name] = store
    return stores


def _cli_decrypt(data: bytes, store: Path, image_id: uuid.UUID | None,
                 tmp_path: Path) -> tuple[int, str, str, list[str]]:
    source, out = tmp_path / "in.icr", tmp_path / "out"
    source.write_bytes(data)
    out.mkdir()
    options = ["--image-id", str(image_id)] if image_id else []
    run = cli("decrypt", str(source), str(out / "plain.raw"), "--key-store", str(store),
              "--threads", "2", *options)
    return run.code, run.out, run.err, sorted(os.listdir(out))


@pytest.mark.parametrize("keys", list(KEKS))
def test_the_cli_decrypts_the_original(key_stores: dict[str, Path], keys: str,
                                       tmp_path: Path) -> None:
    code, _, err, left = _cli_decrypt(FILE, key_stores[keys], IMAGE, tmp_path)
    assert (code, err, left) == (0, "", ["plain.raw"])
    assert (tmp_path / "out" / "plain.raw").read_bytes() == PLAIN


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.cli])
def test_cli(name: str, key_stores: dict[str, Path], tmp_path: Path) -> None:
    case = CASES[name]
    code, out, err, left = _cli_decrypt(case.build(), key_stores[case.keys], case.image_id,
                                        tmp_path)
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("img-crypt: error: "), err
    assert "Traceback" not in err and out == ""
    assert left == [], f"left in the output directory: {left}"

"""Deterministic generator of the img-crypt v1 test vectors (FORMAT.md section 10).

Usage, from the repository root::

    python specs/vectors/generate.py           # (re)write specs/vectors/*.json
    python specs/vectors/generate.py --check   # exit 1 if the committed files differ

Every "random" value (KEKs, DEKs, wrap nonces, salts, image ids, key ids) is
``SHA-256("img-crypt vectors v1/" || label || "/" || counter)``, truncated, so regenerating
always gives the same bytes. Files are sealed through the private seam
``img_crypt.envelope._seal_for_vectors``; invalid cases are byte-level mutations of such a
file (described in each case's ``mutation``).

Case fields:

- ``id``, ``comment``;
- inputs: ``keks`` (``kind``, ``id``, ``key`` hex; in this order they get the ``nonces``),
  ``dek`` hex, ``nonces`` (hex, one per KEK), ``salt`` hex, ``image_id`` (UUID string or null),
  ``plaintext`` (hex, or ``{"length": n, "pattern": name}``, see ``patterns``);
- ``file``: hex of the whole file (header and payload);
- ``result``: ``valid``, with ``plaintext_sha256`` and ``sizes`` (``header``, ``payload``,
  ``plaintext``, as ``envelope.inspect`` reports them), or ``invalid``, with ``error`` (the
  exact error class), ``stage`` (``header``: raised before any plaintext can be released;
  ``payload``: a prefix of authenticated chunks may have been released), optionally
  ``reader_keks`` (the KEKs the reader holds when they differ from ``keks``) and
  ``expect_image_id`` (the image id the reader expects). The ``comment`` of an invalid case
  says how ``file`` was derived from the file its inputs seal.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import struct
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

from img_crypt import envelope  # noqa: E402
from img_crypt.envelope import Kek  # noqa: E402

CHUNK = 16384
CT_CHUNK = CHUNK + 16
PAYLOAD_PREFIX = 56
MAC_SIZE = 32
PATTERNS = {"mod251": "byte i of the plaintext is i mod 251 (i counts from 0)"}
HEX_LIMIT = 256
"""Plaintexts up to this many bytes are written as hex, longer ones as a pattern."""
FORMAT = "img-crypt file format v1 (specs/FORMAT.md)"


def rnd(label: str, size: int) -> bytes:
    """``size`` deterministic pseudo-random bytes named by ``label``."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"img-crypt vectors v1/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def rnd_uuid(label: str) -> uuid.UUID:
    return uuid.UUID(bytes=rnd(label, 16), version=4)


def pattern(length: int, name: str = "mod251") -> bytes:
    if name != "mod251":
        raise ValueError(name)
    return bytes(i % 251 for i in range(length))


def kek(kind: str, label: str, key_id: str | None = None) -> Kek:
    return Kek(kind, key_id or str(rnd_uuid(f"kek/{label}/id")), rnd(f"kek/{label}/key", 32))


LOCAL = kek("local", "local-1")
BARBICAN = kek("barbican", "barbican-1")
LOCAL_2 = kek("local", "local-2")
NON_ASCII = kek("barbican", "non-ascii", "clé/ключ/鍵/🔑")
IMAGE = rnd_uuid("image-1")
OTHER_IMAGE = rnd_uuid("image-2")
SMALL = b"img-crypt v1 test vector plaintext.\n"
TINY = b"tamper me\n"


@dataclass(frozen=True)
class Inputs:
    """Everything a file is sealed from; the random values derive from ``label``."""

    label: str
    keks: tuple[Kek, ...]
    image_id: uuid.UUID | None
    plaintext: bytes
    dek: bytes = field(init=False)
    nonces: tuple[bytes, ...] = field(init=False)
    salt: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dek", rnd(f"{self.label}/dek", 32))
        object.__setattr__(self, "nonces", tuple(
            rnd(f"{self.label}/nonce/{n}", 12) for n in range(len(self.keks))))
        object.__setattr__(self, "salt", rnd(f"{self.label}/salt", 24))

    def seal(self) -> bytes:
        return envelope._seal_for_vectors(
            self.plaintext, self.keks, image_id=self.image_id, dek=self.dek,
            nonces=self.nonces, salt=self.salt)

    def json(self) -> dict[str, Any]:
        if len(self.plaintext) <= HEX_LIMIT:
            plain: Any = self.plaintext.hex()
        else:
            plain = {"length": len(self.plaintext), "pattern": "mod251"}
            if pattern(len(self.plaintext)) != self.plaintext:
                raise ValueError("large plaintexts must follow the mod251 pattern")
        return {
            "keks": keks_json(self.keks),
            "dek": self.dek.hex(),
            "nonces": [n.hex() for n in self.nonces],
            "salt": self.salt.hex(),
            "image_id": str(self.image_id) if self.image_id else None,
            "plaintext": plain,
        }


def keks_json(keks: tuple[Kek, ...] | list[Kek]) -> list[dict[str, str]]:
    return [{"kind": k.kind, "id": k.key_id, "key": k.key.hex()} for k in keks]


# --- header surgery (independent of img_crypt.format, so the vectors check the parser) ------

def header_length(file: bytes) -> int:
    return int(struct.unpack_from(">H", file, 10)[0])


@dataclass(frozen=True)
class SlotAt:
    """Offsets of one key slot's fields in a file."""

    start: int
    kind: int
    key_id: int
    nonce: int
    wrapped: int
    end: int


def slots_at(file: bytes) -> list[SlotAt]:
    pos = 13 + file[12]
    count = file[pos]
    pos += 1
    out = []
    for _ in range(count):
        start = pos
        kind = pos + 1
        key_id = kind + file[pos] + 1
        nonce = key_id + file[key_id - 1]
        wrapped = nonce + 12
        pos = wrapped + 48
        out.append(SlotAt(start, kind, key_id, nonce, wrapped, pos))
    return out


def header_mac(dek: bytes, signed: bytes) -> bytes:
    key = HKDF(hashes.SHA256(), 32, salt=None, info=b"img-crypt header-mac v1").derive(dek)
    return hmac.digest(key, signed, "sha256")


def reseal(file: bytes, body: bytes, dek: bytes) -> bytes:
    """Replace the header of ``file`` by ``prefix || body || MAC`` with a correct length and MAC.

    ``body`` is everything between the 12-byte prefix and the MAC; the result's only defect is
    in ``body``.
    """
    length = 12 + len(body) + MAC_SIZE
    signed = file[:10] + struct.pack(">H", length) + body
    return signed + header_mac(dek, signed) + file[header_length(file):]


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def put(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


# --- cases ----------------------------------------------------------------------------------

def valid_case(case_id: str, comment: str, inputs: Inputs) -> dict[str, Any]:
    file = inputs.seal()
    hlen = header_length(file)
    return {
        "id": case_id,
        "comment": comment,
        **inputs.json(),
        "file": file.hex(),
        "result": "valid",
        "plaintext_sha256": hashlib.sha256(inputs.plaintext).hexdigest(),
        "sizes": {"header": hlen, "payload": len(file) - hlen,
                  "plaintext": len(inputs.plaintext)},
    }


def invalid_case(case_id: str, comment: str, inputs: Inputs, mutate: Callable[[bytes], bytes],
                 error: str, *, stage: str, changes: bool = True,
                 reader_keks: list[Kek] | None = None,
                 expect_image_id: uuid.UUID | None = None) -> dict[str, Any]:
    original = inputs.seal()
    file = mutate(original)
    if (file != original) != changes:
        raise ValueError(f"{case_id}: the mutation does not do what it says")
    case: dict[str, Any] = {
        "id": case_id,
        "comment": comment,
        **inputs.json(),
        "file": file.hex(),
        "result": "invalid",
        "error": error,
        "stage": stage,
    }
    if reader_keks is not None:
        case["reader_keks"] = keks_json(reader_keks)
    if expect_image_id is not None:
        case["expect_image_id"] = str(expect_image_id)
    return case


CHUNK_EXACT = Inputs("chunk-exact", (LOCAL,), IMAGE, pattern(CHUNK))
THREE_CHUNKS = Inputs("three-chunks", (LOCAL,), IMAGE, pattern(2 * CHUNK + 500))
TWO_FULL_CHUNKS = Inputs("two-full-chunks", (LOCAL,), IMAGE, pattern(2 * CHUNK))


def valid_cases() -> list[dict[str, Any]]:
    return [
        valid_case("empty", "empty plaintext: one final chunk holding only a tag",
                   Inputs("empty", (LOCAL,), IMAGE, b"")),
        valid_case("one_byte", "one byte of plaintext",
                   Inputs("one-byte", (LOCAL,), IMAGE, b"\x2a")),
        valid_case("chunk_minus_1", "16383 bytes: the largest single-chunk payload",
                   Inputs("chunk-minus-1", (LOCAL,), IMAGE, pattern(CHUNK - 1))),
        valid_case("chunk_exact", "16384 bytes: one full chunk and an empty final chunk",
                   CHUNK_EXACT),
        valid_case("chunk_plus_1", "16385 bytes: one full chunk and a 1-byte final chunk",
                   Inputs("chunk-plus-1", (LOCAL,), IMAGE, pattern(CHUNK + 1))),
        valid_case("three_chunks", "2*16384+500 bytes: two full chunks and a 500-byte final",
                   THREE_CHUNKS),
        valid_case("unbound", "no image id (image_id_length 0); the others are bound",
                   Inputs("unbound", (LOCAL,), None, SMALL)),
        valid_case("two_slots", "a local and a barbican slot: either KEK alone decrypts",
                   Inputs("two-slots", (LOCAL, BARBICAN), IMAGE, SMALL)),
        valid_case("non_ascii_key_id", "a key id with non-ASCII UTF-8 (2, 3 and 4-byte "
                   "sequences)", Inputs("non-ascii", (NON_ASCII,), IMAGE, SMALL)),
    ]


def invalid_cases() -> list[dict[str, Any]]:
    """Mutations of small files; the prefix, header and payload rules of FORMAT.md in order.

    The multi-chunk files cost 33 and 66 KB of hex, so the table keeps to the essential
    cases (the files stay under 300 KiB); tests/test_format.py and tests/test_tamper.py cover
    many more in process (slots and payloads spliced between files among them).
    """
    base = Inputs("invalid-base", (LOCAL,), IMAGE, TINY)
    f = base.seal()
    hlen = header_length(f)
    slot = slots_at(f)[0]
    count_at = 13 + 16
    two = Inputs("invalid-two-slots", (LOCAL, BARBICAN), IMAGE, TINY)
    relabelled = Kek(LOCAL.kind, flip(LOCAL.key_id.encode(), 0).decode(), LOCAL.key)
    c0 = header_length(TWO_FULL_CHUNKS.seal()) + PAYLOAD_PREFIX
    fmt, auth = "FormatError", "AuthenticationError"
    cases: list[dict[str, Any]] = []

    def add(case_id: str, comment: str, mutate: Callable[[bytes], bytes], error: str,
            stage: str = "header", **extra: Any) -> None:
        inputs = extra.pop("inputs", base)
        cases.append(invalid_case(case_id, comment, inputs, mutate, error, stage=stage,
                                  **extra))

    add("bad_magic", "magic byte 0 flipped to 0x88", lambda b: flip(b, 0), fmt)
    add("version_2", "version byte := 2", lambda b: put(b, 8, b"\x02"), fmt)
    add("suite_2", "suite byte := 2", lambda b: put(b, 9, b"\x02"), fmt)
    add("header_length_109", "header_length := 109, below the minimum",
        lambda b: put(b, 10, struct.pack(">H", 109)), fmt)
    add("header_length_8193", "header_length := 8193, above the maximum",
        lambda b: put(b, 10, struct.pack(">H", 8193)), fmt)
    add("header_length_plus_1", "header_length + 1: the slots end before the MAC",
        lambda b: put(b, 10, struct.pack(">H", hlen + 1)), fmt)
    add("header_length_minus_1", "header_length - 1: the slot runs into the MAC",
        lambda b: put(b, 10, struct.pack(">H", hlen - 1)), fmt)
    add("image_id_length_5", "image_id_length := 5", lambda b: put(b, 12, b"\x05"), fmt)
    add("slot_count_0", "slot_count := 0", lambda b: put(b, count_at, b"\x00"), fmt)
    add("slot_count_17", "slot_count := 17", lambda b: put(b, count_at, b"\x11"), fmt)
    add("duplicate_slot", "slot 0 twice, slot_count 2; header_length and MAC recomputed",
        lambda b: reseal(b, b[12:count_at] + b"\x02" + b[slot.start:slot.end] * 2, base.dek),
        fmt)
    add("flip_wrapped_dek", "wrapped_dek byte 0 bit 0 flipped: unwrap fails",
        lambda b: flip(b, slot.wrapped), auth)
    add("flip_slot_nonce", "slot nonce byte 0 bit 0 flipped: unwrap fails",
        lambda b: flip(b, slot.nonce), auth)
    add("flip_key_id", "key id byte 0 bit 0 flipped, the reader holds the KEK under that id "
        "too: the slot AAD binds the key id", lambda b: flip(b, slot.key_id), auth,
        reader_keks=[relabelled])
    add("flip_image_id", "image id byte 0 bit 0 flipped, no image id expected: the slot AAD "
        "binds it", lambda b: flip(b, 13), auth)
    add("flip_mac", "header MAC last byte bit 0 flipped", lambda b: flip(b, hlen - 1), auth)
    add("flip_second_slot", "slot 1 wrapped_dek bit flipped, the reader uses slot 0: the MAC "
        "covers every slot", lambda b: flip(b, slots_at(b)[1].wrapped), auth, inputs=two,
        reader_keks=[LOCAL])
    add("flip_salt", "payload byte 0 (salt) bit 0 flipped", lambda b: flip(b, hlen), auth,
        "payload")
    add("flip_commitment", "payload byte 24 (commitment) bit 0 flipped",
        lambda b: flip(b, hlen + 24), auth, "payload")
    add("flip_chunk", "payload byte 57 (chunk 0 ciphertext) bit 0 flipped",
        lambda b: flip(b, hlen + 57), auth, "payload")
    add("flip_final_tag", "last byte (final tag) bit 0 flipped",
        lambda b: flip(b, len(b) - 1), auth, "payload")
    add("truncated_at_chunk_boundary", "chunk_exact's file without its empty final chunk: "
        "ends with a full chunk, never final", lambda b: b[:-16], auth, "payload",
        inputs=CHUNK_EXACT)
    add("trailing_byte", "0x00 appended", lambda b: b + b"\x00", auth, "payload")
    add("swapped_chunks", "payload chunks 0 and 1 exchanged",
        lambda b: b[:c0] + b[c0 + CT_CHUNK:c0 + 2 * CT_CHUNK] + b[c0:c0 + CT_CHUNK]
        + b[c0 + 2 * CT_CHUNK:], auth, "payload", inputs=TWO_FULL_CHUNKS)
    add("wrong_image_id", "the reader expects another image id", lambda b: b,
        "BindingError", changes=False, expect_image_id=OTHER_IMAGE)
    add("unbound_but_expected", "unbound file, the reader expects an image id", lambda b: b,
        "BindingError", changes=False, expect_image_id=IMAGE,
        inputs=Inputs("invalid-unbound", (LOCAL,), None, TINY))
    add("no_matching_kek", "the reader holds no KEK for the only slot", lambda b: b,
        "KeyNotFoundError", changes=False, reader_keks=[LOCAL_2])
    return cases


def _document(group: str, description: str, cases: list[dict[str, Any]]) -> str:
    """JSON text: the file's fields one per line, then each case on one line (size matters)."""
    ids = [c["id"] for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate case ids in {group}")
    head = {"format": FORMAT, "group": group, "description": description,
            "generator": "specs/vectors/generate.py", "patterns": PATTERNS}
    lines = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    body = ",\n".join(f"  {json.dumps(c, ensure_ascii=False)}" for c in cases)
    return "{\n" + "\n".join(lines) + '\n "cases": [\n' + body + "\n ]\n}\n"


def build() -> dict[str, str]:
    """File name -> JSON text of every vector file."""
    return {
        "valid.json": _document(
            "valid", "Files that decrypt: the plaintext's SHA-256 and the sizes are given.",
            valid_cases()),
        "invalid.json": _document(
            "invalid", "Mutations of valid files and wrong reader expectations: each fails "
            "with exactly the given error class.", invalid_cases()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing them")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (HERE / name).is_file() or (HERE / name).read_bytes() != text.encode()]
        extra = sorted({p.name for p in HERE.glob("*.json")} - files.keys())
        for name in stale:
            print(f"{name} differs from the generator's output", file=sys.stderr)
        for name in extra:
            print(f"{name} is not produced by the generator", file=sys.stderr)
        return 1 if stale or extra else 0
    for name, text in files.items():
        (HERE / name).write_bytes(text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

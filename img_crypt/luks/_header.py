"""The LUKS1 partition header (phdr): 592 big-endian bytes, packed and parsed with checks.

Parsing is bounded and safe on hostile input: every field is checked before it is used, and
anything we do not support is a one-line :class:`~img_crypt.errors.FormatError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from img_crypt._sniff import LUKS_MAGIC
from img_crypt.errors import FormatError

MAGIC = LUKS_MAGIC
PHDR_SIZE = 592
SECTOR = 512
CIPHER, MODE, HASH = "aes", "xts-plain64", "sha256"
KEY_BYTES = 64
STRIPES = 4000
SLOT_ACTIVE, SLOT_DISABLED = 0x00AC71F3, 0x0000DEAD
NUM_SLOTS = 8
DIGEST_SIZE = 20
MAX_ITERATIONS = 1 << 24  # hostile-input bound on PBKDF2 work; cryptsetup's are far lower

_FIXED = struct.Struct(">6sH32s32s32sII20s32sI40s")
_SLOT = struct.Struct(">II32sII")


@dataclass(frozen=True)
class KeySlot:
    """One of the eight key slots."""

    active: bool
    iterations: int
    salt: bytes
    offset: int  # key material offset, in 512-byte sectors
    stripes: int


@dataclass(frozen=True)
class Header:
    """The fields of a LUKS1 phdr that we write and read."""

    payload_offset: int  # in sectors
    mk_digest: bytes
    mk_digest_salt: bytes
    mk_digest_iterations: int
    uuid: str
    slots: tuple[KeySlot, ...]
    cipher: str = CIPHER
    mode: str = MODE
    hash: str = HASH
    key_bytes: int = KEY_BYTES

    def pack(self) -> bytes:
        """The 592 bytes of this header."""
        fixed = _FIXED.pack(
            MAGIC, 1, self.cipher.encode(), self.mode.encode(), self.hash.encode(),
            self.payload_offset, self.key_bytes, self.mk_digest, self.mk_digest_salt,
            self.mk_digest_iterations, self.uuid.encode())
        return fixed + b"".join(
            _SLOT.pack(SLOT_ACTIVE if s.active else SLOT_DISABLED, s.iterations, s.salt,
                       s.offset, s.stripes) for s in self.slots)

    @property
    def material_size(self) -> int:
        """Bytes of AF-split key material per slot."""
        return self.key_bytes * STRIPES


def _text(raw: bytes, field: str) -> str:
    try:
        return raw.split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"LUKS header field {field} is not ASCII") from None


def parse(data: bytes) -> Header:
    """Parse and validate a phdr; raise FormatError for anything we do not accept."""
    if len(data) < PHDR_SIZE:
        raise FormatError("not a LUKS image: the input ends inside the 592-byte header")
    (magic, version, cipher, mode, hash_, payload, key_bytes, digest, dsalt, diter,
     uuid) = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("not a LUKS image: bad magic")
    if version == 2:
        raise FormatError("LUKS2 is not supported: only LUKS version 1 is")
    if version != 1:
        raise FormatError(f"unknown LUKS version {version}")
    got = (_text(cipher, "cipher-name"), _text(mode, "cipher-mode"), _text(hash_, "hash-spec"))
    if got != (CIPHER, MODE, HASH):
        raise FormatError("unsupported LUKS1 cipher {}-{} or hash {}: only aes-xts-plain64 "
                          "with sha256 is supported".format(*got))
    if key_bytes != KEY_BYTES:
        raise FormatError(f"unsupported LUKS1 key size {key_bytes * 8} bits: only 512 is")
    if not 1 <= diter <= MAX_ITERATIONS:
        raise FormatError(f"LUKS1 mk-digest iterations {diter} out of range")
    slots = tuple(_parse_slot(data, i, payload, key_bytes) for i in range(NUM_SLOTS))
    if not any(s.active for s in slots):
        raise FormatError("LUKS1 image has no active key slot")
    header_sectors = -(-PHDR_SIZE // SECTOR)
    if payload < header_sectors:
        raise FormatError(f"LUKS1 payload offset {payload} is inside the header")
    return Header(payload, digest, dsalt, diter, _text(uuid, "uuid"), slots)


def _parse_slot(data: bytes, index: int, payload: int, key_bytes: int) -> KeySlot:
    state, iterations, salt, offset, stripes = _SLOT.unpack_from(data, _FIXED.size + index * 48)
    if state not in (SLOT_ACTIVE, SLOT_DISABLED):
        raise FormatError(f"LUKS1 key slot {index} has an invalid state")
    slot = KeySlot(state == SLOT_ACTIVE, iterations, salt, offset, stripes)
    if not slot.active:
        return slot
    if stripes != STRIPES:
        raise FormatError(f"LUKS1 key slot {index} has {stripes} stripes, not {STRIPES}")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise FormatError(f"LUKS1 key slot {index} iterations {iterations} out of range")
    end = offset * SECTOR + key_bytes * stripes
    if offset * SECTOR < PHDR_SIZE or end > payload * SECTOR:
        raise FormatError(f"LUKS1 key slot {index} key material is out of range")
    return slot

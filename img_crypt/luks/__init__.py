"""Raw LUKS1 images (aes-xts-plain64, sha256): a streaming writer and reader of our own.

Keys and bytes only: no CLI, Barbican or Glance here. The passphrase is bytes chosen by the
caller (the Glance side passes the lowercase hex of the KEK, Cinder's convention). What we
write and what we accept: ``specs/LUKS1.md``.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from img_crypt._io import Input, Source
from img_crypt._sniff import is_luks
from img_crypt._text import printable
from img_crypt.errors import ImgCryptError
from img_crypt.keys.base import KEK_BYTES
from img_crypt.luks._header import MAGIC, SECTOR, parse
from img_crypt.luks._stream import (
    DIGEST_ITERATIONS,
    PAYLOAD_OFFSET,
    SLOT_ITERATIONS,
    decrypt,
    encrypt,
    encrypted_chunks,
    image_size,
)

__all__ = ["DIGEST_ITERATIONS", "MAGIC", "PAYLOAD_OFFSET", "SLOT_ITERATIONS", "LuksInfo",
           "decrypt", "encrypt", "encrypted_chunks", "image_size",
           "inspect", "is_luks", "passphrase"]


@dataclass(frozen=True)
class LuksInfo:
    """What a LUKS1 header says, read without a key."""

    version: int
    cipher: str
    mode: str
    hash: str
    key_bits: int
    active_slots: tuple[int, ...]
    payload_offset: int  # bytes
    uuid: str


def passphrase(kek: bytes, key_id: str) -> bytes:
    """The LUKS1 passphrase of KEK ``key_id``: the lowercase hex of its 32 bytes.

    Cinder's and Nova's convention for symmetric secrets (they clone the key and hex it); a
    KEK of any other length is refused.
    """
    if len(kek) != KEK_BYTES:
        raise ImgCryptError(f"key {printable(key_id)} is not a 256-bit key: a LUKS1 image needs "
                            f"a 256-bit symmetric KEK (Cinder clones it and hexes it into the "
                            f"passphrase), not a {len(kek) * 8}-bit one")
    return binascii.hexlify(kek)


def inspect(src: Input) -> LuksInfo:
    """Parse and validate the header of ``src`` (FormatError if we could not open it)."""
    with Source(src, 4096) as source:
        header = parse(source.read_exact(592))
    return LuksInfo(1, header.cipher, header.mode, header.hash, header.key_bytes * 8,
                    tuple(i for i, s in enumerate(header.slots) if s.active),
                    header.payload_offset * SECTOR, header.uuid)

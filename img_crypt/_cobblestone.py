"""Cobblestone as the C2SP spec writes it: geometry, key derivation and chunk access.

The streaming path uses pyca/cryptography's ``Cobblestone*Encryptor/Decryptor`` (the reference,
see :mod:`img_crypt._payload`). This module covers what that API does not: random access to a
chunk (FORMAT.md section 6, "seeking reader") and, for the known-answer vector generator only,
encryption under an injected salt. Tests prove both produce the library's bytes.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.cobblestone import (
    Cobblestone128Decryptor,
    Cobblestone128Encryptor,
    Cobblestone256Decryptor,
    Cobblestone256Encryptor,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from img_crypt.errors import AuthenticationError

CHUNK = 16384
"""Plaintext bytes in every chunk but the last."""
TAG = 16
CT_CHUNK = CHUNK + TAG
SALT = 24
COMMITMENT = 32
PREFIX = SALT + COMMITMENT
NONCE = 12
MAX_CHUNKS = 2**38
_LABEL = b"c2sp.org/chunked-encryption@v1+"

Encryptor: TypeAlias = Cobblestone256Encryptor | Cobblestone128Encryptor
Decryptor: TypeAlias = Cobblestone256Decryptor | Cobblestone128Decryptor
ReadAt: TypeAlias = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Suite:
    """One Cobblestone instantiation: its AEAD name, key size and library classes."""

    aead_name: str
    key_size: int
    encryptor: type[Encryptor]
    decryptor: type[Decryptor]


COBBLESTONE_256 = Suite("AEAD_AES_256_GCM", 32, Cobblestone256Encryptor, Cobblestone256Decryptor)
COBBLESTONE_128 = Suite("AEAD_AES_128_GCM", 16, Cobblestone128Encryptor, Cobblestone128Decryptor)


@dataclass(frozen=True, repr=False)
class Derived:
    """The per-message AEAD key, base nonce and commitment (secret: no repr)."""

    aead_key: bytes
    base_nonce: bytes
    commitment: bytes


def derive(suite: Suite, key: bytes, salt: bytes, context: bytes) -> Derived:
    """HKDF-Expand-SHA-512 derivation of FORMAT.md section 6."""
    if len(key) != suite.key_size or len(salt) != SALT:
        raise AuthenticationError()
    info = _LABEL + suite.aead_name.encode() + b"\x00" + salt + context
    okm = HKDFExpand(hashes.SHA512(), suite.key_size + NONCE + COMMITMENT, info).derive(key)
    k, n = suite.key_size, suite.key_size + NONCE
    return Derived(okm[:k], okm[k:n], okm[n:])


def chunk_nonce(base_nonce: bytes, index: int) -> bytes:
    """Return ``base_nonce XOR uint96be(index)``."""
    return (int.from_bytes(base_nonce, "big") ^ index).to_bytes(NONCE, "big")


def payload_size(plaintext_size: int) -> int:
    """Size of the Cobblestone ciphertext of ``plaintext_size`` bytes."""
    chunks = plaintext_size // CHUNK + 1
    return PREFIX + plaintext_size + TAG * chunks


def plaintext_size(payload_len: int) -> int | None:
    """Plaintext size for a payload of ``payload_len`` bytes, or None if no plaintext fits."""
    body = payload_len - PREFIX
    if body < TAG or body % CT_CHUNK < TAG:
        return None
    return body - TAG * (body // CT_CHUNK + 1)


class ChunkReader:
    """Random access to the chunks of one payload (the seeking reader of FORMAT.md section 6).

    ``read_at(offset, size)`` must return exactly ``size`` payload bytes at ``offset`` (or fewer
    at the end of the data). The constructor checks the commitment and authenticates the
    plaintext length by decrypting the final chunk, so every later read is of a payload that is
    neither truncated nor extended.
    """

    def __init__(self, suite: Suite, key: bytes, context: bytes, payload_len: int,
                 read_at: ReadAt) -> None:
        self._read_at = read_at
        size = plaintext_size(payload_len)
        head = read_at(0, PREFIX)
        if size is None or len(head) != PREFIX:
            raise AuthenticationError()
        derived = derive(suite, key, head[:SALT], context)
        if not hmac.compare_digest(derived.commitment, head[SALT:]):
            raise AuthenticationError()
        self._aead = AESGCM(derived.aead_key)
        self._base_nonce = derived.base_nonce
        self.plaintext_size = size
        self.last_index = size // CHUNK
        self.chunk(self.last_index)

    def chunk(self, index: int) -> bytes:
        """Decrypt and return chunk ``index`` (authenticated)."""
        if not 0 <= index <= self.last_index:
            raise IndexError(index)
        want = CT_CHUNK if index < self.last_index else self.plaintext_size % CHUNK + TAG
        data = self._read_at(PREFIX + index * CT_CHUNK, want)
        if len(data) != want:
            raise AuthenticationError()
        try:
            return self._aead.decrypt(chunk_nonce(self._base_nonce, index), data, None)
        except InvalidTag:
            raise AuthenticationError() from None

    def plaintext_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the plaintext bytes ``[start:end]``, one authenticated chunk at a time."""
        if not 0 <= start <= end <= self.plaintext_size:
            raise ValueError(f"range {start}:{end} is outside 0:{self.plaintext_size}")
        index = start // CHUNK
        while index * CHUNK < end:
            base = index * CHUNK
            plain = self.chunk(index)
            yield plain[max(start - base, 0): end - base]
            index += 1


def encrypt_with_salt(suite: Suite, key: bytes, context: bytes, salt: bytes,
                      plaintext: bytes) -> bytes:
    """Encrypt in memory under an injected salt: the vector generator's seam, never production.

    Production code lets the library draw the salt; tests show this gives the library's bytes
    for the library's salt.
    """
    derived = derive(suite, key, salt, context)
    aead = AESGCM(derived.aead_key)
    out = [salt, derived.commitment]
    for index in range(len(plaintext) // CHUNK + 1):
        piece = plaintext[index * CHUNK:(index + 1) * CHUNK]
        out.append(aead.encrypt(chunk_nonce(derived.base_nonce, index), piece, None))
    return b"".join(out)

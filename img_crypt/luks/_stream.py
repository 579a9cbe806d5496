"""Streaming LUKS1 encryption and decryption in constant memory (pipes welcome).

The payload size is not recorded in a LUKS1 header, so the writer needs no size up front:
it writes the header and key material first, then encrypts sector by sector as input arrives.
"""

from __future__ import annotations

import hmac
import os
import uuid
from collections.abc import Iterator

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from img_crypt._io import DEFAULT_READ_SIZE, Input, Source, Writable, write_all
from img_crypt.errors import AuthenticationError, FormatError
from img_crypt.luks import _af, _header
from img_crypt.luks._header import SECTOR, Header, KeySlot
from img_crypt.luks._sectors import SectorCipher

SLOT_ITERATIONS = 1000
DIGEST_ITERATIONS = 1000
PAYLOAD_OFFSET = 4096  # sectors (2 MiB), cryptsetup's LUKS1 layout for a 512-bit key
_SLOT_START, _SLOT_STRIDE = 8, 504  # sectors: key material aligned to 4 KiB, as cryptsetup


def _pbkdf2(secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    kdf = PBKDF2HMAC(hashes.SHA256(), length, salt, iterations)
    return kdf.derive(secret)


def _material(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    out = bytearray(len(data))
    SectorCipher(key, decrypt=decrypt).run(data, 0, out)
    return bytes(out)


def build_header(passphrase: bytes) -> tuple[bytes, bytes]:
    """Return (the bytes before the payload, the master key) for a fresh LUKS1 image."""
    master = os.urandom(_header.KEY_BYTES)
    slot_salt, digest_salt = os.urandom(32), os.urandom(32)
    slot_key = _pbkdf2(passphrase, slot_salt, SLOT_ITERATIONS, _header.KEY_BYTES)
    material = _material(slot_key, _af.split(master, _header.STRIPES), decrypt=False)
    slots = tuple(
        KeySlot(i == 0, SLOT_ITERATIONS if i == 0 else 0, slot_salt if i == 0 else bytes(32),
                _SLOT_START + i * _SLOT_STRIDE, _header.STRIPES)
        for i in range(_header.NUM_SLOTS))
    header = Header(PAYLOAD_OFFSET,
                    _pbkdf2(master, digest_salt, DIGEST_ITERATIONS, _header.DIGEST_SIZE),
                    digest_salt, DIGEST_ITERATIONS, str(uuid.uuid4()), slots)
    prefix = bytearray(PAYLOAD_OFFSET * SECTOR)
    prefix[:_header.PHDR_SIZE] = header.pack()
    start = _SLOT_START * SECTOR
    prefix[start:start + len(material)] = material
    return bytes(prefix), master


def _sectors(source: Source) -> Iterator[tuple[memoryview, bool]]:
    """Yield (whole sectors, is_padded_tail) from ``source``; a short tail is zero-padded."""
    carry = bytearray()
    for piece in source.views():
        view = piece
        if carry:
            take = min(SECTOR - len(carry), len(view))
            carry += view[:take]
            view = view[take:]
            if len(carry) < SECTOR:
                continue
            yield memoryview(carry), False
            carry = bytearray()
        whole = len(view) - len(view) % SECTOR
        if whole:
            yield view[:whole], False
        carry += view[whole:]
    if carry:
        yield memoryview(bytes(carry.ljust(SECTOR, b"\0"))), True


def encrypt(src: Input, dst: Writable, passphrase: bytes, *,
            read_size: int = DEFAULT_READ_SIZE) -> int:
    """Write ``src`` as a raw LUKS1 image to ``dst``; return the plaintext size in bytes.

    The last sector is zero-padded: record the returned size (``os_decrypt_size``) to get the
    exact plaintext back from :func:`decrypt`.
    """
    prefix, master = build_header(passphrase)
    write_all(dst, prefix)
    with Source(src, read_size) as source:
        for piece in _encrypted_sectors(source, master, read_size):
            write_all(dst, piece)
        return source.consumed


def _encrypted_sectors(source: Source, master: bytes, read_size: int) -> Iterator[memoryview]:
    """The encrypted payload of ``source``, in views of one buffer (each valid until the next)."""
    cipher = SectorCipher(master, decrypt=False)
    out = bytearray(read_size + SECTOR)
    sector = 0
    for chunk, _padded in _sectors(source):
        n = len(chunk)
        cipher.run(chunk, sector, out)
        yield memoryview(out)[:n]
        sector += n // SECTOR


def image_size(plaintext_size: int) -> int:
    """The size of the raw LUKS1 image :func:`encrypt` writes for ``plaintext_size`` bytes."""
    return PAYLOAD_OFFSET * SECTOR + -(-plaintext_size // SECTOR) * SECTOR


def encrypted_chunks(src: Input, passphrase: bytes, *,
                     read_size: int = DEFAULT_READ_SIZE) -> Iterator[bytes]:
    """The raw LUKS1 image of ``src``, pulled (an HTTP body): the header, then the sectors.

    The same image :func:`encrypt` writes, in pieces of at most ``read_size`` + 512 bytes
    after the 2 MiB header; the plaintext size is not counted here (the caller knows it).
    """
    prefix, master = build_header(passphrase)
    yield prefix
    with Source(src, read_size) as source:
        for piece in _encrypted_sectors(source, master, read_size):
            yield bytes(piece)


def _skip(source: Source, count: int) -> None:
    while count:
        got = len(source.read_exact(min(count, DEFAULT_READ_SIZE)))
        if not got:
            raise FormatError("truncated LUKS1 image: the input ends before the payload")
        count -= got


def read_header(source: Source) -> tuple[Header, dict[int, bytes]]:
    """Parse the phdr and read each active slot's key material; stop at the payload start."""
    header = _header.parse(source.read_exact(_header.PHDR_SIZE))
    pos = _header.PHDR_SIZE
    materials: dict[int, bytes] = {}
    active = sorted((s.offset, i) for i, s in enumerate(header.slots) if s.active)
    for offset, index in active:
        if offset * SECTOR < pos:
            raise FormatError(f"LUKS1 key slot {index} overlaps another")
        _skip(source, offset * SECTOR - pos)
        material = source.read_exact(header.material_size)
        if len(material) < header.material_size:
            raise FormatError("truncated LUKS1 image: the input ends inside key material")
        materials[index] = material
        pos = offset * SECTOR + len(material)
    _skip(source, header.payload_offset * SECTOR - pos)
    return header, materials


def unlock(header: Header, materials: dict[int, bytes], passphrase: bytes) -> bytes:
    """Return the master key from the first active slot the passphrase opens."""
    for index, material in materials.items():
        slot = header.slots[index]
        slot_key = _pbkdf2(passphrase, slot.salt, slot.iterations, header.key_bytes)
        master = _af.merge(_material(slot_key, material, decrypt=True), header.key_bytes,
                           slot.stripes)
        digest = _pbkdf2(master, header.mk_digest_salt, header.mk_digest_iterations,
                         _header.DIGEST_SIZE)
        if hmac.compare_digest(digest, header.mk_digest):
            return master
    raise AuthenticationError()


def decrypt(src: Input, dst: Writable, passphrase: bytes, *, size: int | None = None,
            read_size: int = DEFAULT_READ_SIZE) -> int:
    """Write the payload of the LUKS1 image ``src`` to ``dst``; return the bytes written.

    Without ``size`` the whole (sector-padded) payload is written. With ``size`` (the
    plaintext size, ``os_decrypt_size``) exactly that many bytes are, and a payload that is
    shorter, or longer than ``size`` rounded up to a sector, is a FormatError.
    """
    if size is not None and size < 0:
        raise FormatError(f"invalid plaintext size {size}")
    with Source(src, read_size) as source:
        header, materials = read_header(source)
        cipher = SectorCipher(unlock(header, materials, passphrase), decrypt=True)
        out = bytearray(read_size + SECTOR)
        sector = written = 0
        limit = size if size is not None else -1
        for chunk, padded in _sectors(source):
            if padded:
                raise FormatError("truncated LUKS1 payload: not a whole number of sectors")
            n = len(chunk)
            cipher.run(chunk, sector, out)
            sector += n // SECTOR
            keep = n if limit < 0 else min(n, limit - written)
            if limit >= 0 and sector * SECTOR - limit >= SECTOR:
                raise FormatError("LUKS1 payload is longer than the given plaintext size")
            write_all(dst, memoryview(out)[:keep])
            written += keep
        if limit >= 0 and written < limit:
            raise FormatError("LUKS1 payload is shorter than the given plaintext size")
        return written

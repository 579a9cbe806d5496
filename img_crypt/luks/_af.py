"""LUKS1 anti-forensic splitter (AF split and merge) with SHA-256 diffusion.

The master key is spread over ``stripes`` blocks so that erasing any part of a key slot's
key material makes the key unrecoverable (LUKS1 on-disk format, section 2.4).
"""

from __future__ import annotations

import hashlib
import os

_DIGEST = 32  # SHA-256


def _diffuse(block: bytes) -> bytes:
    """H(be32(i) || block[i*32:(i+1)*32]) for every 32-byte piece, the last one truncated."""
    out = bytearray()
    for i, start in enumerate(range(0, len(block), _DIGEST)):
        piece = block[start:start + _DIGEST]
        out += hashlib.sha256(i.to_bytes(4, "big") + piece).digest()[:len(piece)]
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def split(key: bytes, stripes: int) -> bytes:
    """Return ``stripes * len(key)`` bytes from which :func:`merge` recovers ``key``."""
    acc = bytes(len(key))
    parts = []
    for _ in range(stripes - 1):
        rand = os.urandom(len(key))
        parts.append(rand)
        acc = _diffuse(_xor(acc, rand))
    parts.append(_xor(acc, key))
    return b"".join(parts)


def merge(material: bytes, key_bytes: int, stripes: int) -> bytes:
    """Recover the ``key_bytes``-long key from AF-split ``material``."""
    acc = bytes(key_bytes)
    for i in range(stripes - 1):
        acc = _diffuse(_xor(acc, material[i * key_bytes:(i + 1) * key_bytes]))
    return _xor(acc, material[(stripes - 1) * key_bytes:stripes * key_bytes])

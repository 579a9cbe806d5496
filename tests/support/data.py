"""Deterministic bytes for tests: the same input always gives the same data, on every run."""

from __future__ import annotations

import functools
import hashlib
import random


def seeded_bytes(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes from ``random.Random(seed)``."""
    return random.Random(seed).randbytes(size)


@functools.cache
def plaintext(size: int) -> bytes:
    """The plaintext of ``size`` bytes (seeded by its size), computed once per size."""
    return seeded_bytes(size, size)


def labelled_bytes(namespace: str, label: str, size: int) -> bytes:
    """``size`` bytes of SHA-256 counter blocks over ``namespace/label/counter``: a fixed
    key or nonce that a test can name (and a spec can reproduce)."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{namespace}/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def first_difference(data: bytes, original: bytes) -> int:
    """The offset of the first byte where ``data`` and ``original`` differ (or the shorter
    length, when one is a prefix of the other); a binary search over memoryview slices."""
    a, b = memoryview(data), memoryview(original)
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo

"""Which format a file is in, from its first bytes, without importing that format's module.

``decrypt`` and ``inspect`` sniff their input with this; an img-crypt file never pays for
importing :mod:`img_crypt.luks` (its header parser and XTS stream).
"""

from __future__ import annotations

LUKS_MAGIC = b"LUKS\xba\xbe"
"""The first 6 bytes of a LUKS header, any version."""


def is_luks(prefix: bytes) -> bool:
    """True when ``prefix`` starts with the LUKS magic (any version)."""
    return prefix[:len(LUKS_MAGIC)] == LUKS_MAGIC

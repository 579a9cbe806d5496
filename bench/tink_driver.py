"""Tink's streaming AEAD (AES256_GCM_HKDF_1MB) as a command, the Tink peer of bench/run.py.

Usage::

    python bench/tink_driver.py keygen KEYSET
    python bench/tink_driver.py encrypt KEYSET IN OUT
    python bench/tink_driver.py decrypt KEYSET IN OUT

``keygen`` writes a new keyset as cleartext JSON: for the benchmark only (a real deployment
would wrap it under a KMS key). ``encrypt``/``decrypt`` stream IN to OUT (``/dev/null`` is fine)
through one reused 1 MiB buffer, with empty associated data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tink
from tink import cleartext_keyset_handle, streaming_aead

BLOCK = 1 << 20
ASSOCIATED_DATA = b""


def _primitive(keyset: Path) -> streaming_aead.StreamingAead:
    reader = tink.JsonKeysetReader(keyset.read_text())
    handle = cleartext_keyset_handle.read(reader)
    return handle.primitive(streaming_aead.StreamingAead)


def keygen(keyset: Path) -> None:
    """Write a new AES256_GCM_HKDF_1MB keyset to ``keyset`` (cleartext JSON)."""
    template = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
    handle = tink.new_keyset_handle(template)
    with keyset.open("w") as f:
        cleartext_keyset_handle.write(tink.JsonKeysetWriter(f), handle)


def encrypt(keyset: Path, src: Path, dst: Path) -> None:
    """Encrypt ``src`` into ``dst``."""
    aead = _primitive(keyset)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with src.open("rb", buffering=0) as fin, dst.open("wb", buffering=0) as fout, \
            aead.new_encrypting_stream(fout, ASSOCIATED_DATA) as enc:
        while n := fin.readinto(buf):
            enc.write(view[:n])


def decrypt(keyset: Path, src: Path, dst: Path) -> None:
    """Decrypt ``src`` into ``dst``; Tink raises on any authentication failure."""
    aead = _primitive(keyset)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with src.open("rb", buffering=0) as fin, dst.open("wb", buffering=0) as fout, \
            aead.new_decrypting_stream(fin, ASSOCIATED_DATA) as dec:
        while n := dec.readinto(buf):
            fout.write(view[:n])


def main(argv: list[str]) -> int:
    """Dispatch ``keygen``, ``encrypt`` or ``decrypt``; 2 on a usage error."""
    streaming_aead.register()
    if len(argv) == 2 and argv[0] == "keygen":
        keygen(Path(argv[1]))
        return 0
    if len(argv) == 4 and argv[0] in ("encrypt", "decrypt"):
        op = encrypt if argv[0] == "encrypt" else decrypt
        op(Path(argv[1]), Path(argv[2]), Path(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

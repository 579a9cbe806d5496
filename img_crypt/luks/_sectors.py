"""AES-XTS-plain64 over 512-byte sectors: the tweak is the sector number, 64-bit little-endian."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SECTOR = 512


class SectorCipher:
    """Encrypts or decrypts whole sectors numbered from ``first_sector`` on."""

    def __init__(self, key: bytes, *, decrypt: bool) -> None:
        self._algorithm = algorithms.AES(key)
        self._decrypt = decrypt

    def run(self, data: memoryview | bytes, first_sector: int, out: bytearray) -> None:
        """Write the transform of ``data`` (a multiple of 512 bytes) into ``out``."""
        view = memoryview(data)
        for index, start in enumerate(range(0, len(view), SECTOR)):
            tweak = (first_sector + index).to_bytes(16, "little")
            cipher = Cipher(self._algorithm, modes.XTS(tweak))
            ctx = cipher.decryptor() if self._decrypt else cipher.encryptor()
            out[start:start + SECTOR] = ctx.update(view[start:start + SECTOR]) + ctx.finalize()

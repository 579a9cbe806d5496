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
        """Write the transform of ``data`` (a multiple of 512 bytes) into ``out``.

        One XTS context per sector (cryptography has no multi-data-unit call); each writes
        its sector straight into ``out`` (``update_into``: no intermediate bytes, about 1.5x
        the throughput of ``update`` + ``finalize``). XTS ciphers a whole data unit in
        ``update``: ``finalize`` would add nothing.
        """
        view, dest = memoryview(data), memoryview(out)
        algorithm, xts = self._algorithm, modes.XTS
        for start in range(0, len(view), SECTOR):
            cipher = Cipher(algorithm, xts((first_sector + start // SECTOR).to_bytes(16, "little")))
            ctx = cipher.decryptor() if self._decrypt else cipher.encryptor()
            ctx.update_into(view[start:start + SECTOR], dest[start:start + SECTOR])

"""Streaming Cobblestone payloads over pyca/cryptography, with buffers reused across calls.

FORMAT.md section 6. The library enforces chunk order, truncation and trailing-data checks; this
wrapper adds what img-crypt promises on top: one error type, a failed decryptor keeps failing,
and output buffers sized once so the hot loop allocates nothing.
"""

from __future__ import annotations

from cryptography.exceptions import AlreadyFinalized, InvalidTag

from img_crypt._cobblestone import CT_CHUNK, Suite
from img_crypt.errors import AuthenticationError


def encrypt_buffer_size(read_size: int) -> int:
    """Output buffer that always fits one ``update_into`` of ``read_size`` plaintext bytes."""
    return read_size + read_size // 1024 + 16456


def decrypt_buffer_size(read_size: int) -> int:
    """Output buffer that always fits one ``update_into`` of ``read_size`` ciphertext bytes."""
    return read_size + CT_CHUNK


class PayloadEncryptor:
    """Encrypt one payload: ``update_into`` any number of times, then ``finalize`` once."""

    def __init__(self, suite: Suite, key: bytes, context: bytes) -> None:
        self._cipher = suite.encryptor(key, context)

    def update_into(self, data: memoryview, out: bytearray) -> int:
        """Encrypt ``data`` into ``out``; return the number of bytes written."""
        return self._cipher.update_into(data, out)

    def finalize(self) -> bytes:
        """Return the final chunk."""
        return self._cipher.finalize()


class PayloadDecryptor:
    """Decrypt one payload; what ``update_into`` writes has already been authenticated.

    Any failure raises :class:`AuthenticationError`, and so does every call after it.
    """

    def __init__(self, suite: Suite, key: bytes, context: bytes) -> None:
        try:
            self._cipher = suite.decryptor(key, context)
        except ValueError:
            raise AuthenticationError() from None
        self._failed = False

    def update_into(self, data: memoryview, out: bytearray) -> int:
        """Decrypt ``data`` into ``out``; return how many authenticated bytes were written.

        On failure ``out`` may hold unauthenticated bytes: callers must discard it.
        """
        if self._failed:
            raise AuthenticationError()
        try:
            return self._cipher.update_into(data, out)
        except (InvalidTag, AlreadyFinalized):
            self._failed = True
            raise AuthenticationError() from None

    def finalize(self) -> bytes:
        """Authenticate the final chunk (this proves no truncation) and return its plaintext."""
        if self._failed:
            raise AuthenticationError()
        self._failed = True  # finalize is once only: a second call must fail too
        try:
            return self._cipher.finalize()
        except (InvalidTag, AlreadyFinalized):
            raise AuthenticationError() from None

"""The one exception tree of img-crypt.

Every failure a user can cause or meet is one of these; third-party exceptions are
translated at the boundary with ``raise ... from``. Messages are one line, meant for a
human, and never contain key material.
"""

from __future__ import annotations


class ImgCryptError(Exception):
    """Base of every error img-crypt raises on purpose."""


class FormatError(ImgCryptError):
    """The input is not a well-formed img-crypt file (or uses a version/suite we do not know)."""


class AuthenticationError(ImgCryptError):
    """The data failed authentication: corrupt, truncated, reordered or keyed differently.

    Deliberately opaque: the message never says which check failed.
    """

    def __init__(self, message: str = "authentication failed: the file is corrupt, "
                 "truncated, or not encrypted under this key") -> None:
        super().__init__(message)


class BindingError(ImgCryptError):
    """The file is bound to another image id than the one the caller expected."""


class KeyManagerError(ImgCryptError):
    """A key manager (local store or Barbican) failed or refused."""


class KeyNotFoundError(KeyManagerError):
    """The key id is unknown to the key manager."""


class KeyHasConsumersError(KeyManagerError):
    """A key cannot be deleted because consumers still use it (delete with force)."""


class ConsumerNotFoundError(KeyManagerError):
    """The consumer record to remove does not exist."""


class CredentialsError(KeyManagerError):
    """Authentication with the key manager failed (the message says nothing more)."""

    def __init__(self, message: str = "authentication with the key manager failed") -> None:
        super().__init__(message)


class ForbiddenError(KeyManagerError):
    """The key manager refused the operation for these credentials (HTTP 403)."""


class UnavailableError(KeyManagerError):
    """The key manager could not be reached or kept failing (connection errors, 5xx, timeouts)."""


class ConsumersUnsupportedError(KeyManagerError):
    """The key manager has no secret-consumer API (Barbican Train and older)."""


class UsageError(ImgCryptError):
    """The caller asked for something that cannot be done as asked (exit code 2 in the CLI)."""


class InvalidValueError(UsageError, ValueError):
    """A value object was given a value outside its rules (a consumer field too long, ...).

    Also a ``ValueError``, so code that validates values the standard way keeps working.
    """


class UnsafeImageError(ImgCryptError):
    """Image data Glance's format rules refuse: not its disk_format, or failing a safety check."""

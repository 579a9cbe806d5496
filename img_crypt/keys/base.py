"""The key-manager interface shared by the local key store and the Barbican adapter."""

from __future__ import annotations

import abc
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

KEK_BYTES = 32
"""Every KEK is a 256-bit AES key."""


class Consumer(BaseModel):
    """A record saying that a resource (an image) needs a key; Barbican's consumer shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(min_length=1, max_length=255)
    resource_type: str = Field(min_length=1, max_length=255)
    resource_id: str = Field(min_length=1, max_length=36)


class KeyInfo(BaseModel):
    """What a key manager can say about a key without handing out its bytes."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    name: str | None = None
    created: datetime | None = None
    consumers: int = 0


class KeyManager(abc.ABC):
    """Create, fetch and delete KEKs, and keep the consumer records of each key.

    Implementations raise only :mod:`img_crypt.errors` exceptions:
    ``KeyNotFoundError`` for an unknown id, ``KeyHasConsumersError`` when a delete without
    ``force`` meets consumers, ``ConsumerNotFoundError`` when removing an unknown consumer,
    and ``KeyManagerError`` for anything else.
    """

    kind: ClassVar[str]
    """Short name written into key slots (``local``, ``barbican``)."""

    @abc.abstractmethod
    def create_key(self, name: str | None = None) -> str:
        """Create a new random 256-bit KEK and return its id."""

    @abc.abstractmethod
    def get_key(self, key_id: str) -> bytes:
        """Return the 32 bytes of the KEK ``key_id``."""

    @abc.abstractmethod
    def delete_key(self, key_id: str, *, force: bool = False) -> None:
        """Delete a KEK; without ``force`` refuse while it has consumers."""

    @abc.abstractmethod
    def list_keys(self) -> list[KeyInfo]:
        """List the keys this manager holds (for the local store) or can see."""

    @abc.abstractmethod
    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        """Register ``consumer`` on ``key_id``; registering twice is not an error."""

    @abc.abstractmethod
    def remove_consumer(self, key_id: str, consumer: Consumer) -> None:
        """Remove ``consumer`` from ``key_id``; an unknown consumer is ``ConsumerNotFoundError``."""

    @abc.abstractmethod
    def list_consumers(self, key_id: str) -> list[Consumer]:
        """Return every consumer of ``key_id``."""

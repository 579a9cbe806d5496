"""The key-manager interface shared by the local key store and the Barbican adapter."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from img_crypt.errors import InvalidValueError, KeyNotFoundError

KEK_BYTES = 32
"""Every KEK is a 256-bit AES key."""


_CONSUMER_LIMITS = {"service": 255, "resource_type": 255, "resource_id": 36}


@dataclass(frozen=True)
class Consumer:
    """A record saying that a resource (an image) needs a key; Barbican's consumer shape.

    Each field is a non-empty string within Barbican's column sizes (255, 255, 36);
    anything else is an :class:`InvalidValueError` (a usage error) at construction.
    """

    service: str
    resource_type: str
    resource_id: str
    created: datetime | None = field(default=None, compare=False)
    """When the record was registered (None: the key manager did not say); not part of its
    identity: two records of the same resource are the same consumer."""

    def __post_init__(self) -> None:
        for name, limit in _CONSUMER_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not 1 <= len(value) <= limit:
                raise InvalidValueError(f"consumer {name} must be a string of 1 to {limit} "
                                        "characters")

    def to_dict(self) -> dict[str, str]:
        """The three identifying fields, as Barbican's consumer API spells them."""
        return {"service": self.service, "resource_type": self.resource_type,
                "resource_id": self.resource_id}


@dataclass(frozen=True)
class UnreadableConsumer:
    """A consumer record a key manager returned that is not a :class:`Consumer` we can use.

    (A ``resource_id`` over 36 characters, a missing or empty field, ...) It still counts as
    a consumer of its key: the key must not be deleted while it is there.
    """

    record: dict[str, Any]
    reason: str


class ConsumerList(list[Consumer]):
    """What ``list_consumers`` may return: the consumers, and the records it had to skip."""

    def __init__(self, consumers: Iterable[Consumer] = (),
                 unreadable: list[UnreadableConsumer] | None = None) -> None:
        super().__init__(consumers)
        self.unreadable: list[UnreadableConsumer] = list(unreadable or [])


def unreadable_consumers(consumers: list[Consumer]) -> list[UnreadableConsumer]:
    """The records ``list_consumers`` skipped (none unless it returned a ConsumerList)."""
    return consumers.unreadable if isinstance(consumers, ConsumerList) else []


@dataclass(frozen=True)
class KeyInfo:
    """What a key manager can say about a key without handing out its bytes."""

    key_id: str
    name: str | None = None
    created: datetime | None = None
    consumers: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``created`` as ISO 8601 text."""
        return asdict(self) | {"created": self.created and self.created.isoformat()}


class KeyManager(abc.ABC):
    """Create, fetch and delete KEKs, and keep the consumer records of each key.

    Implementations raise only :mod:`img_crypt.errors` exceptions:
    ``KeyNotFoundError`` for an unknown id, ``KeyHasConsumersError`` when a delete without
    ``force`` meets consumers, ``ConsumerNotFoundError`` when removing an unknown consumer,
    and ``KeyManagerError`` for anything else.
    """

    kind: ClassVar[str]
    """Short name written into key slots (``local``, ``barbican``)."""

    @property
    def delete_is_atomic(self) -> bool:
        """True when ``delete_key(force=False)`` cannot lose a concurrent ``add_consumer``.

        That is, the store itself refuses the delete while consumers exist, in one step.
        False (the safe default) means the check and the delete are two steps another
        client's registration can come between: the key then goes with a consumer on it.
        """
        return False

    def key_info(self, key_id: str) -> KeyInfo:
        """What the manager knows about one key (never its bytes); KeyNotFoundError if none."""
        for info in self.list_keys():
            if info.key_id == key_id:
                return info
        raise KeyNotFoundError(f"key {key_id} not found")

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
        """Return every consumer of ``key_id``.

        Records that are not a valid :class:`Consumer` are not raised about: they are left in
        the ``unreadable`` list of a :class:`ConsumerList`.
        """

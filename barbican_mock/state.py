"""The in-memory store of the mock: secrets, their consumers, orders; thread-safe."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def now() -> str:
    """Barbican's timestamp form: naive UTC ISO 8601 with microseconds."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


@dataclass
class Consumer:
    """One consumer of a secret (soft-deleted like Barbican's rows)."""

    service: str
    resource_type: str
    resource_id: str
    created: str
    updated: str
    deleted: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """The unique triple (service, resource_type, resource_id)."""
        return (self.service, self.resource_type, self.resource_id)


@dataclass
class Secret:
    """A stored secret with its metadata, payload and consumers."""

    id: str
    project: str
    name: str | None
    secret_type: str
    algorithm: str | None
    bit_length: int | None
    mode: str | None
    expiration: str | None
    creator_id: str | None
    payload: bytes | None
    content_type: str | None
    created: str
    updated: str
    consumers: list[Consumer] = field(default_factory=list)

    def live_consumers(self) -> list[Consumer]:
        """Consumers that are not deleted, oldest first."""
        return [c for c in self.consumers if not c.deleted]

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy for tests."""
        return {
            "id": self.id, "project": self.project, "name": self.name,
            "secret_type": self.secret_type, "algorithm": self.algorithm,
            "bit_length": self.bit_length, "mode": self.mode,
            "expiration": self.expiration, "creator_id": self.creator_id,
            "payload": self.payload, "content_type": self.content_type,
            "created": self.created, "updated": self.updated,
            "consumers": [
                {"service": c.service, "resource_type": c.resource_type,
                 "resource_id": c.resource_id}
                for c in self.live_consumers()
            ],
        }


@dataclass
class Order:
    """A key order; the mock fulfils it at once."""

    id: str
    project: str
    type: str
    meta: dict[str, Any]
    secret_id: str
    created: str
    updated: str


class Store:
    """All state of one mock server, guarded by a single lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.secrets: dict[str, Secret] = {}
        self.orders: dict[str, Order] = {}

    @staticmethod
    def new_id() -> str:
        """A fresh UUID4 string (Barbican only accepts version 4 ids)."""
        return str(uuid.uuid4())

    def add_secret(self, secret: Secret) -> None:
        """Store *secret*."""
        with self.lock:
            self.secrets[secret.id] = secret

    def get_secret(self, secret_id: str) -> Secret | None:
        """The secret with this id, whatever its project, or None."""
        with self.lock:
            return self.secrets.get(secret_id)

    def delete_secret(self, secret_id: str) -> None:
        """Remove a secret and its consumers."""
        with self.lock:
            self.secrets.pop(secret_id, None)

    def project_secrets(self, project: str | None) -> list[Secret]:
        """Secrets of *project* (all when None), in creation order."""
        with self.lock:
            return [s for s in self.secrets.values() if project is None or s.project == project]

    @staticmethod
    def _same(consumer: Consumer, key: tuple[str, str, str], by_resource_id: bool) -> bool:
        return consumer.resource_id == key[2] if by_resource_id else consumer.key == key

    def add_consumer(self, secret: Secret, key: tuple[str, str, str],
                     by_resource_id: bool = False) -> None:
        """Register a consumer; idempotent (a deleted row is revived)."""
        service, rtype, rid = key
        with self.lock:
            stamp = now()
            for consumer in secret.consumers:
                if self._same(consumer, key, by_resource_id):
                    if consumer.deleted:
                        consumer.deleted, consumer.updated = False, stamp
                    return
            secret.consumers.append(Consumer(service, rtype, rid, stamp, stamp))
            secret.updated = stamp

    def remove_consumer(self, secret: Secret, key: tuple[str, str, str],
                        by_resource_id: bool = False) -> bool:
        """Soft-delete a consumer; False when there is no such live consumer."""
        with self.lock:
            for consumer in secret.live_consumers():
                if self._same(consumer, key, by_resource_id):
                    consumer.deleted = True
                    secret.updated = consumer.updated = now()
                    return True
            return False

    def add_order(self, order: Order) -> None:
        """Store *order*."""
        with self.lock:
            self.orders[order.id] = order

    def get_order(self, order_id: str, project: str) -> Order | None:
        """The order with this id if *project* owns it."""
        with self.lock:
            order = self.orders.get(order_id)
            return order if order is not None and order.project == project else None

    def delete_order(self, order_id: str) -> None:
        """Remove an order (its secret stays, as in Barbican)."""
        with self.lock:
            self.orders.pop(order_id, None)

    def project_orders(self, project: str) -> list[Order]:
        """Orders of *project*, in creation order."""
        with self.lock:
            return [o for o in self.orders.values() if o.project == project]

    def counts(self) -> dict[str, int]:
        """Numbers of live secrets, live consumers and orders."""
        with self.lock:
            return {
                "secrets": len(self.secrets),
                "consumers": sum(len(s.live_consumers()) for s in self.secrets.values()),
                "orders": len(self.orders),
            }

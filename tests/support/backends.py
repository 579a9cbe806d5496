"""Key managers to test against: the local store, or a mock Barbican of a given era.

``open_backend(name, tmp_path)`` yields a :class:`Backend`: the manager the code under test
uses, and an independent view of what it holds (the mock's own records, not the manager's
answers, when there is a mock). ``name`` is ``local`` or a Barbican era (``2026.2``, ``zed``,
``yoga``, optionally written ``mock-2026.2``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from barbican_mock import MockBarbican
from img_crypt.keys.base import KeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore

PROJECT = "p1"
"""The project every mock-backed manager works in."""


@dataclass
class Backend:
    """A key manager and an independent view of what it holds."""

    name: str
    manager: KeyManager
    mock: MockBarbican | None = None

    def keys(self) -> dict[str, str | None]:
        """Key id -> name."""
        if self.mock is None:
            return {k.key_id: k.name for k in self.manager.list_keys()}
        return {s["id"]: s["name"] for s in self.mock.secrets(PROJECT)}

    def key_exists(self, key_id: str) -> bool:
        """Whether the key is there."""
        return key_id in self.keys()

    def consumers(self, key_id: str) -> list[dict[str, str]]:
        """The consumers of ``key_id`` as service/resource_type/resource_id dicts."""
        if self.mock is None:
            return [c.to_dict() for c in self.manager.list_consumers(key_id)]
        return [{k: c[k] for k in ("service", "resource_type", "resource_id")}
                for c in self.mock.consumers(key_id)]

    def consumer_ids(self, key_id: str) -> list[str]:
        """The resource ids of the consumers of ``key_id``."""
        return [c["resource_id"] for c in self.consumers(key_id)]

    def all_consumers(self) -> list[dict[str, str]]:
        """The consumers of every key."""
        return [c for key_id in self.keys() for c in self.consumers(key_id)]

    def lookup(self) -> Callable[[str, str], bytes | None]:
        """An envelope KEK lookup through the manager."""
        return lambda kind, key_id: self.manager.get_key(key_id) \
            if kind == self.manager.kind else None

    def manager_for(self, owner: str | None) -> KeyManager:
        """The manager of the project ``owner`` (there is only :data:`PROJECT`)."""
        assert owner == PROJECT
        return self.manager


@contextlib.contextmanager
def open_backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    """A local store in ``tmp_path / "keys"``, or a running mock Barbican of era ``name``."""
    if name == "local":
        yield Backend("local", LocalKeyStore(tmp_path / "keys"))
        return
    with MockBarbican(era=name.removeprefix("mock-")) as mock:
        yield Backend(name, connect(url=mock.url, project_id=PROJECT, backoff=0), mock)

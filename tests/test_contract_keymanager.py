"""One contract for every key manager: the local store, barbican_mock in each era, real Barbican.

The same behaviours through the :class:`KeyManager` interface, so the rest of img-crypt never
needs to know which one it has. Era differences are facts of the servers (FORMAT-independent):
Train has no consumer API, and only microversion 1.2 servers protect consumers themselves; the
adapter makes deletion behave the same everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from barbican_mock import MockBarbican
from img_crypt.errors import (
    ConsumerNotFoundError,
    ConsumersUnsupportedError,
    ForbiddenError,
    KeyHasConsumersError,
    KeyNotFoundError,
)
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore

TARGETS = ["local", "mock-train", "mock-yoga", "mock-zed", "mock-2026.2", "real"]


@dataclass
class Target:
    """A key-manager back end and how to get a manager for a project."""

    name: str
    make: Callable[..., KeyManager]

    @property
    def has_consumers(self) -> bool:
        return self.name != "mock-train"

    def manager(self, project: str = "project-a", **options: object) -> KeyManager:
        return self.make(project, **options)


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    name: str = request.param
    if name == "local":
        yield Target(name, lambda project, **_: LocalKeyStore(tmp_path / project))
        return
    if name == "real":
        url = request.getfixturevalue("real_barbican").url
        suffix = uuid.uuid4().hex[:8]  # the real server is shared: projects of our own
        yield Target(name, lambda project, **o: connect(
            url=url, project_id=f"{project}-{suffix}", backoff=0, **o))
        return
    with MockBarbican(era=name.removeprefix("mock-")) as mock:
        yield Target(name, lambda project, **o: connect(url=mock.url, project_id=project,
                                                        backoff=0, **o))


def image(n: int = 1) -> Consumer:
    return Consumer(service="image", resource_type="image",
                    resource_id=str(uuid.UUID(int=n)))


# --- keys ------------------------------------------------------------------------------------

def test_a_created_key_is_256_random_bits_and_fetches_back(target: Target) -> None:
    km = target.manager()
    first, second = km.create_key("contract"), km.create_key("contract")
    assert uuid.UUID(first) and first != second
    assert len(km.get_key(first)) == 32
    assert km.get_key(first) == km.get_key(first) != km.get_key(second)
    assert {first, second} <= {k.key_id for k in km.list_keys()}


def test_a_deleted_key_is_gone(target: Target) -> None:
    km = target.manager()
    key = km.create_key()
    km.delete_key(key)
    with pytest.raises(KeyNotFoundError):
        km.get_key(key)


@pytest.mark.parametrize(
    "bad", ["0f6c1d2e-5b4a-4c3d-8e9f-a0b1c2d3e4f5", "../../etc/passwd", "not-a-uuid"])
def test_unknown_or_malformed_ids_are_not_found(target: Target, bad: str) -> None:
    with pytest.raises(KeyNotFoundError):
        target.manager().get_key(bad)


def test_another_project_cannot_use_the_key(target: Target) -> None:
    if target.name == "local":
        pytest.skip("the local store has no projects: its directory is the boundary")
    key = target.manager("project-a").create_key()
    other = target.manager("project-b")
    with pytest.raises(ForbiddenError):
        other.get_key(key)
    with pytest.raises(ForbiddenError):
        other.delete_key(key, force=True)


# --- consumers -------------------------------------------------------------------------------

def test_consumers_add_idempotently_list_and_remove(target: Target) -> None:
    km = target.manager()
    key = km.create_key()
    if not target.has_consumers:
        with pytest.raises(ConsumersUnsupportedError, match="consumer"):
            km.add_consumer(key, image(1))
        return
    km.add_consumer(key, image(1))
    km.add_consumer(key, image(1))
    km.add_consumer(key, image(2))
    assert sorted(c.resource_id for c in km.list_consumers(key)) == [
        image(1).resource_id, image(2).resource_id]
    km.remove_consumer(key, image(1))
    assert km.list_consumers(key) == [image(2)]
    with pytest.raises(ConsumerNotFoundError):
        km.remove_consumer(key, image(1))


def test_listing_consumers_pages_past_one_hundred(target: Target) -> None:
    if not target.has_consumers:
        pytest.skip("no consumer API before Ussuri")
    km = target.manager()
    key = km.create_key()
    for n in range(105):
        km.add_consumer(key, image(n))
    assert len(km.list_consumers(key)) == 105


def test_consumers_of_a_missing_key_are_key_not_found(target: Target) -> None:
    if not target.has_consumers:
        pytest.skip("no consumer API before Ussuri")
    with pytest.raises(KeyNotFoundError):
        target.manager().add_consumer(str(uuid.uuid4()), image())


def test_best_effort_goes_on_without_a_consumer_api(target: Target,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    km = target.manager(consumers="best_effort") if target.name != "local" else target.manager()
    key = km.create_key()
    km.add_consumer(key, image())
    if target.has_consumers:
        assert km.list_consumers(key) == [image()]
    else:
        assert km.list_consumers(key) == []
        assert "best_effort" in caplog.text


# --- deletion honours consumers on every era -------------------------------------------------

def test_a_key_with_consumers_is_not_deleted_without_force(target: Target) -> None:
    if not target.has_consumers:
        pytest.skip("no consumer can exist before Ussuri")
    km = target.manager()
    key = km.create_key()
    km.add_consumer(key, image())
    with pytest.raises(KeyHasConsumersError, match="consumer"):
        km.delete_key(key)
    assert len(km.get_key(key)) == 32  # still there
    km.delete_key(key, force=True)
    with pytest.raises(KeyNotFoundError):
        km.get_key(key)


def test_a_key_whose_last_consumer_left_can_be_deleted(target: Target) -> None:
    if not target.has_consumers:
        pytest.skip("no consumer can exist before Ussuri")
    km = target.manager()
    key = km.create_key()
    km.add_consumer(key, image())
    km.remove_consumer(key, image())
    km.delete_key(key)
    with pytest.raises(KeyNotFoundError):
        km.get_key(key)

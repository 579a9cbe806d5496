"""One enrollment: the keys an operation uses, the consumer it registers on them, and its undo.

Every path that protects a resource (an image) with keys enrolls here: CLI ``encrypt`` and
``rewrap``, the Glance import plugin, and later callers. Pure: the key-manager interface only.

Rules:

- A :class:`NewKey` is created, and remembered as this operation's key.
- Before the consumer is registered on a key this operation did not create, the key's
  consumers are listed. A record that is already there is not registered again and never
  removed by the undo. A record for the same resource under another service counts as there
  before too (registered, never undone): Barbican Ussuri to Yoga keeps one record per
  resource id, so removing ours would remove it.
- A registration whose answer was lost (:class:`UnavailableError`: timeout, dropped
  connection, 5xx) is resolved by listing: found, it landed and the operation goes on;
  absent, the error stands. If the listing fails too, the error stands and the undo removes
  the record (it was not there before; ``ConsumerNotFoundError`` then is fine).
- :meth:`Enrollment.undo` removes exactly what this operation created, best effort, in one
  fixed order: first the forced delete of each key it created (the delete takes that key's
  consumers with it: one request, and nothing of it stays); then the removal of each consumer
  it added to a key it did not create, or to a created key whose delete failed (what stays
  is then a key without consumers, which protects nothing). Each step is tried whatever the
  others did; what could not be undone is returned as one line each, for the caller to print
  or log. A key manager without the consumer API and ``consumers = best_effort`` makes
  registration and removal warnings, not failures (the manager's rule).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from img_crypt.errors import ConsumerNotFoundError, ImgCryptError, KeyManagerError, UnavailableError
from img_crypt.keys.base import Consumer, KeyManager

LOG = logging.getLogger("img_crypt.enrollment")


@dataclass(frozen=True)
class NewKey:
    """A key for the enrollment to create, under this name."""

    name: str | None = None


KeyRef = str | NewKey
"""An existing key id, or a key to create."""


def release(manager: KeyManager, consumer: Consumer, key_ids: Iterable[str]) -> list[str]:
    """Remove ``consumer`` from each key, best effort; one line per removal that failed.

    A consumer that is not there is fine: there is nothing to remove.
    """
    problems = []
    for key_id in key_ids:
        try:
            manager.remove_consumer(key_id, consumer)
        except ConsumerNotFoundError:
            pass
        except ImgCryptError as e:
            problems.append(f"could not remove the consumer from key {key_id}: {e}")
    return problems


class Enrollment:
    """What one operation enrolled, so that :meth:`undo` removes exactly that.

    As a context manager it undoes itself when the block raises, and hands each line of what
    could not be undone to ``report`` (default: a warning log record).
    """

    def __init__(self, manager: KeyManager, *,
                 report: Callable[[str], None] | None = None) -> None:
        self.manager = manager
        self.created_keys: list[str] = []
        self.added: list[tuple[str, Consumer]] = []
        """(key id, consumer) records this operation created, or may have (lost answers)."""
        self._report = report or (lambda line: LOG.warning("%s", line))

    def key(self, ref: KeyRef) -> str:
        """The id of ``ref``: an existing id as it is, or a key created now."""
        if isinstance(ref, str):
            return ref
        key_id = self.manager.create_key(ref.name)
        self.created_keys.append(key_id)
        return key_id

    def register(self, consumer: Consumer, key_ids: Iterable[str]) -> None:
        """Register ``consumer`` on each key where it is missing (see the module's rules)."""
        for key_id in key_ids:
            self._register(consumer, key_id)

    def _register(self, consumer: Consumer, key_id: str) -> None:
        if key_id not in self.created_keys:  # a key made just now has no consumers
            present = self.manager.list_consumers(key_id)
            if consumer in present:  # equality ignores the registration time
                return
            if any(c.resource_id == consumer.resource_id for c in present):
                self.manager.add_consumer(key_id, consumer)  # ours and theirs may be one
                return
        try:
            self.manager.add_consumer(key_id, consumer)
        except UnavailableError as lost:
            self._resolve(consumer, key_id, lost)
        self.added.append((key_id, consumer))

    def _resolve(self, consumer: Consumer, key_id: str, lost: UnavailableError) -> None:
        """Did the registration whose answer was lost land? Return if so, else raise."""
        try:
            landed = any(c.resource_id == consumer.resource_id
                         for c in self.manager.list_consumers(key_id))
        except KeyManagerError:
            self.added.append((key_id, consumer))  # unknown: the undo removes it
            raise lost from None
        if not landed:
            raise lost

    def undo(self) -> list[str]:
        """Remove what this operation created, keys first; return what could not be undone.

        The record is cleared: a second call does nothing.
        """
        problems: list[str] = []
        deleted = set()
        for key_id in self.created_keys:
            try:
                self.manager.delete_key(key_id, force=True)
                deleted.add(key_id)
            except ImgCryptError as e:
                problems.append(f"could not delete the new key {key_id}: {e}")
        for key_id, consumer in self.added:
            if key_id not in deleted:
                problems += release(self.manager, consumer, [key_id])
        self.created_keys, self.added = [], []
        return problems

    def __enter__(self) -> Enrollment:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if error is not None:
            for line in self.undo():
                self._report(line)

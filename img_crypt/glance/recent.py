"""Consumer records this process registered moments ago, so the upload hooks skip a request.

The import plugin registers the image on its key before Glance stores the data; Glance then
sends ``image.upload`` and ``image.activate``, and their handler (:mod:`.uploads`) would list
the key's consumers to find that record there: one Barbican round trip each, on the import's
path (about 50 ms of a 16 MiB import, bench/import_sweep.md). A record noted here less than
:data:`TTL` seconds ago is taken as there. The plugin notes a record once the import
succeeded and forgets it when it undoes one; other processes (img-crypt-listener) have their
own, empty, memory and ask Barbican; ``img-crypt reconcile`` repairs a record removed since.
"""

from __future__ import annotations

import collections
import threading
import time

from img_crypt.keys.base import Consumer

TTL = 600.0
"""Seconds a noted record is trusted: Glance's events follow the import within seconds."""
LIMIT = 4096
"""Records kept at most (the oldest go first): memory stays bounded in a busy glance-api."""

_lock = threading.Lock()
_noted: collections.OrderedDict[tuple[str, Consumer], float] = collections.OrderedDict()


def note(key_id: str, consumer: Consumer) -> None:
    """Remember that ``consumer`` was just registered on ``key_id``."""
    with _lock:
        _noted[(key_id, consumer)] = time.monotonic()
        _noted.move_to_end((key_id, consumer))
        while len(_noted) > LIMIT:
            _noted.popitem(last=False)


def forget(key_id: str, consumer: Consumer) -> None:
    """Drop the record (it was undone)."""
    with _lock:
        _noted.pop((key_id, consumer), None)


def registered(key_id: str, consumer: Consumer) -> bool:
    """True if this process registered ``consumer`` on ``key_id`` less than TTL ago."""
    with _lock:
        when = _noted.get((key_id, consumer))
        return when is not None and time.monotonic() - when < TTL


def clear() -> None:
    """Forget everything (tests)."""
    with _lock:
        _noted.clear()

"""Write a regular file from a helper thread, so writing overlaps the cipher.

Copying into the page cache costs about as much CPU as AES-GCM itself on this machine
(``bench/``): done in the cipher's thread, the two add up. With a writer thread the cipher fills
the next buffer while the previous one is written, and no byte is copied on the way. Only
regular files get the thread: their writes never block for long, so the writer can always be
joined (a pipe's reader might never read). Other sinks are written in the caller's thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Protocol

from img_crypt._io import Writable, write_all
from img_crypt._prefetch import is_regular_file

DEPTH = 3
"""Buffers in flight: one being filled, one being written, one spare."""


class Writer(Protocol):
    """Hands out output buffers and writes them, in order, to one sink."""

    def buffer(self) -> bytearray:
        """A buffer to fill; it belongs to the caller until passed to ``submit``."""

    def submit(self, data: memoryview | bytes, buf: bytearray | None = None) -> None:
        """Write ``data`` (a view of ``buf`` when ``buf`` came from ``buffer``)."""


class _Direct:
    """Writes in the caller's thread, reusing one buffer."""

    def __init__(self, sink: Writable, size: int) -> None:
        self._sink, self._buf = sink, bytearray(size)

    def buffer(self) -> bytearray:
        return self._buf

    def submit(self, data: memoryview | bytes, buf: bytearray | None = None) -> None:
        write_all(self._sink, data)


class BehindWriter:
    """Writes submitted buffers from a helper thread, in submission order.

    A write error is raised in the caller's thread by the next ``buffer`` or by ``close``.
    """

    def __init__(self, sink: Writable, size: int, depth: int = DEPTH) -> None:
        self._sink = sink
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[
            tuple[memoryview | bytes, bytearray | None] | None] = queue.SimpleQueue()
        for _ in range(depth):
            self._free.put(bytearray(size))
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="img-crypt-write-behind",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            data, buf = item
            if self._error is None and not self._abort:
                try:
                    write_all(self._sink, data)
                except BaseException as e:  # handed to the caller, which raises it
                    self._error = e
            del data
            if buf is not None:
                self._free.put(buf)

    def buffer(self) -> bytearray:
        """Wait for a free buffer; raise the writer's error if a write failed."""
        buf = self._free.get()
        if self._error is not None:
            self._free.put(buf)
            raise self._error
        return buf

    def submit(self, data: memoryview | bytes, buf: bytearray | None = None) -> None:
        """Queue ``data`` for writing; ``buf`` returns to the pool once it is written."""
        self._full.put((data, buf))

    def close(self, *, abort: bool = False) -> None:
        """Join the writer; unless ``abort``, after every queued write (raising its error)."""
        self._abort = abort
        self._full.put(None)
        self._thread.join()
        if self._error is not None and not abort:
            raise self._error


@contextlib.contextmanager
def writer(sink: Writable, size: int) -> Iterator[Writer]:
    """A writer for ``sink`` with ``size``-byte buffers; behind a thread for regular files.

    On a normal exit every byte has been written (or the write error is raised). On an
    exception, queued writes are dropped and the thread is joined before it propagates.
    """
    if not is_regular_file(sink):
        yield _Direct(sink, size)
        return
    behind = BehindWriter(sink, size)
    try:
        yield behind
    except BaseException:
        behind.close(abort=True)
        raise
    behind.close()

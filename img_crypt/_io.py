"""Byte sources and sinks for the stream layer: files, pipes and iterators, in constant memory.

A :class:`Source` reads into reused buffers when the input has ``readinto`` (a regular file is
read ahead by a second thread, :mod:`img_crypt._prefetch`) and slices iterator items to
``read_size``, so no read ever holds more than a few ``read_size`` buffers of input.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from typing import Protocol, TypeAlias, runtime_checkable

from cryptography.utils import Buffer

from img_crypt._prefetch import is_regular_file, prefetched

DEFAULT_READ_SIZE = 1 << 20


@runtime_checkable
class Readable(Protocol):
    """Anything with ``read(n)`` (files, pipes, sockets, HTTP responses)."""

    def read(self, size: int = -1, /) -> bytes | None:
        """Read at most ``size`` bytes."""


@runtime_checkable
class ReadableInto(Protocol):
    """Anything with ``readinto`` (binary files and pipes): the zero-copy path."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        """Read into ``buffer``; return the count."""


class Writable(Protocol):
    """Anything with ``write`` (files, pipes, sockets, BytesIO)."""

    def write(self, data: Buffer, /) -> int | None:
        """Write ``data``; return the count written (None means all of it)."""


Input: TypeAlias = ReadableInto | Readable | Buffer | Iterable[Buffer]  # one buffer: one piece


class Source:
    """One pass over an input: ``read_exact`` for headers, then ``views`` for the rest.

    The memoryviews that ``views`` yields are valid only until the next one is requested.
    """

    def __init__(self, stream: Input, read_size: int = DEFAULT_READ_SIZE) -> None:
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self._read_size = read_size
        self._pending = memoryview(b"")
        self._iter: Generator[memoryview, None, None] = self._pieces(stream)
        self.consumed = 0

    def _pieces(self, stream: Input) -> Generator[memoryview, None, None]:
        size = self._read_size
        if isinstance(stream, bytes | bytearray | memoryview):
            stream = [stream]
        if isinstance(stream, ReadableInto) and is_regular_file(stream):
            yield from prefetched(stream, size)
        elif isinstance(stream, ReadableInto):
            buf = memoryview(bytearray(size))
            while n := stream.readinto(buf) or 0:
                yield buf[:n]
        elif isinstance(stream, Readable):
            while data := stream.read(size):
                yield memoryview(data)
        else:
            for item in stream:
                view = memoryview(item).cast("B")
                for start in range(0, len(view), size):
                    yield view[start:start + size]

    def close(self) -> None:
        """Stop reading (and join a read-ahead thread) before the caller closes the input."""
        self._pending = memoryview(b"")
        self._iter.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_exact(self, size: int) -> bytes:
        """Return the next ``size`` bytes, or fewer if the input ends first."""
        parts: list[bytes] = []
        need = size
        while need:
            if not self._pending:
                self._pending = next(self._iter, memoryview(b""))
                if not self._pending:
                    break
            take = self._pending[:need]
            parts.append(bytes(take))
            self._pending = self._pending[len(take):]
            need -= len(take)
        data = b"".join(parts)
        self.consumed += len(data)
        return data

    def views(self) -> Iterator[memoryview]:
        """Yield the rest of the input, at most ``read_size`` bytes at a time."""
        if self._pending:
            pending, self._pending = self._pending, memoryview(b"")
            self.consumed += len(pending)
            yield pending
        for view in self._iter:
            self.consumed += len(view)
            yield view


def write_all(sink: Writable, data: Buffer) -> None:
    """Write all of ``data``, looping over short writes (raw files and pipes may write less)."""
    view = memoryview(data).cast("B")
    while view:
        written = sink.write(view)
        if written is None:
            return
        view = view[written:]

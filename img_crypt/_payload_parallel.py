"""Cobblestone payloads on several threads: salt, derivation, commitment, and where to read.

:mod:`img_crypt._parallel` ciphers the chunks; this module writes and checks the payload's
salt and commitment (FORMAT.md section 6) around it and picks the input: a plain regular file
(``io.FileIO``, or a buffered reader over one) is read by offset from the workers, anything
else (pipes, iterators, in-memory data) is copied into job buffers in order.
"""

from __future__ import annotations

import hmac
import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from img_crypt._cobblestone import CHUNK, CT_CHUNK, PREFIX, SALT, Suite, derive
from img_crypt._io import Source, Writable, write_all
from img_crypt._prefetch import is_regular_file
from img_crypt._threads import DEFAULT_MAX_THREADS, MAX_THREADS
from img_crypt.errors import AuthenticationError, InvalidValueError

if TYPE_CHECKING:  # the engine is imported when a pool runs: inspect and --range never need it
    from img_crypt._parallel import FileReader, Progress, Reader


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return max(1, count() or 1)
    try:  # Python < 3.13
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity API (macOS)
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """What ``--threads auto`` asks for: the usable cores, at most 8."""
    return min(usable_cores(), DEFAULT_MAX_THREADS)


def workers(threads: int | None) -> int:
    """The workers for ``threads``; None and 1 mean no pool (the one-thread streaming path).

    One thread is the default: cryptography's streaming Cobblestone ciphers a whole read in
    one call, while the pool makes one AES-GCM call per 16 KiB chunk from Python, and on the
    2-core machine measured (bench/results.md) two threads were slower than that one.
    """
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, int) \
            or not 1 <= threads <= MAX_THREADS:
        raise InvalidValueError(f"threads must be a whole number from 1 to {MAX_THREADS}")
    return threads


@dataclass(frozen=True)
class RegularFile:
    """A plain regular file read by offset from ``base``, its position moved on at the end."""

    stream: BinaryIO
    fd: int
    base: int

    def reader(self, skip: int = 0) -> FileReader:
        """Read the file by offset from ``base + skip``."""
        from img_crypt._parallel import FileReader

        return FileReader(self.fd, self.base + skip)


def regular_file(stream: Any) -> RegularFile | None:
    """``stream`` as a :class:`RegularFile` if it is a plain regular file, else None.

    Only ``io.FileIO`` (directly or under a buffered reader) qualifies: a decompressing or
    otherwise transforming reader may have a regular file's descriptor but other bytes.
    """
    raw = stream.raw if isinstance(stream, io.BufferedReader | io.BufferedRandom) else stream
    if isinstance(raw, io.FileIO) and is_regular_file(stream):
        return RegularFile(stream, raw.fileno(), stream.tell())
    return None


def _inflight(workers: int) -> int:
    return workers + 2


def encrypt(suite: Suite, key: bytes, context: bytes, source: Source | RegularFile,
            sink: Writable, *, workers: int, read_size: int, progress: Progress | None = None,
            salt: bytes | None = None) -> tuple[int, int]:
    """Write the payload of ``source``; return (plaintext bytes, payload bytes).

    ``salt`` is drawn at random; tests inject one (a seam: production never passes it).
    """
    from img_crypt import _parallel

    salt = os.urandom(SALT) if salt is None else salt
    derived = derive(suite, key, salt, context)
    write_all(sink, salt + derived.commitment)
    reader: Reader = _parallel.StreamReader(source.views()) if isinstance(source, Source) \
        else source.reader()
    chunks = _parallel.Chunks(derived, encrypt=True, per_job=max(1, read_size // CHUNK))
    read, written = _parallel.run(chunks, reader, sink, workers=workers,
                                  inflight=_inflight(workers), progress=progress)
    if isinstance(source, RegularFile):
        source.stream.seek(source.base + read)
    return read, PREFIX + written


def decrypt(suite: Suite, key: bytes, context: bytes, source: Source | RegularFile,
            sink: Writable, *, workers: int, read_size: int,
            progress: Progress | None = None) -> tuple[int, int]:
    """Write the plaintext of the payload ``source``; return (plaintext bytes, payload bytes).

    The commitment is checked before any chunk is read.
    """
    from img_crypt import _parallel

    if isinstance(source, Source):
        prefix = source.read_exact(PREFIX)
        reader: Reader = _parallel.StreamReader(source.views())
    else:
        buf = bytearray(PREFIX)
        prefix = bytes(buf[:source.reader().fill(memoryview(buf), 0)])
        reader = source.reader(PREFIX)
    if len(prefix) < PREFIX:
        raise AuthenticationError()
    derived = derive(suite, key, prefix[:SALT], context)
    if not hmac.compare_digest(derived.commitment, prefix[SALT:]):
        raise AuthenticationError()
    chunks = _parallel.Chunks(derived, encrypt=False, per_job=max(1, read_size // CT_CHUNK))
    read, written = _parallel.run(chunks, reader, sink, workers=workers,
                                  inflight=_inflight(workers), progress=progress)
    if isinstance(source, RegularFile):
        source.stream.seek(source.base + PREFIX + read)
    return written, PREFIX + read

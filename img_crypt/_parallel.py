"""Chunk-parallel Cobblestone: a pool of threads ciphers runs of chunks, written in order.

FORMAT.md section 6: chunk ``i`` is AES-256-GCM under the derived key with the nonce
``base_nonce XOR i``, so chunks are independent and ``AESGCM`` releases the GIL. A *job* is a
run of consecutive chunks; workers cipher jobs (and, for a regular file, read them with
``os.preadv``) while the caller writes finished jobs strictly in job order. The bytes are those
of cryptography's streaming Cobblestone (tests prove it). Memory is constant: at most
``inflight`` jobs (two buffers each) exist at a time.

Decryption releases only authenticated plaintext, in order: a job's plaintext is written only
after its chunks verified, and when a chunk fails the job's chunks before it are written (as
the streaming decryptor releases them) and then :class:`AuthenticationError` is raised. A full
ciphertext chunk is never final, so a payload cut at a chunk boundary fails as truncated.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from img_crypt._cobblestone import CHUNK, CT_CHUNK, NONCE, TAG, Derived
from img_crypt._io import Writable, write_all
from img_crypt.errors import AuthenticationError

Progress = Callable[[int], None]


class Reader(Protocol):
    """Fills job buffers with input; ``concurrent`` readers are called from the workers."""

    concurrent: bool

    def fill(self, buf: memoryview, offset: int) -> int:
        """Read input bytes ``[offset, offset + len(buf))`` into ``buf``; fewer only at the end."""


class FileReader:
    """A regular file read by offset (``os.preadv``): each worker reads its own job."""

    concurrent = True

    def __init__(self, fd: int, base: int) -> None:
        self._fd, self._base = fd, base

    def fill(self, buf: memoryview, offset: int) -> int:
        """Read at ``base + offset``, looping over short reads until the buffer or the file ends."""
        got = 0
        while got < len(buf):
            n = os.preadv(self._fd, [buf[got:]], self._base + offset + got)
            if not n:
                break
            got += n
        return got


class StreamReader:
    """Views of a stream (pipe, iterator, in-memory data) copied in order by the caller."""

    concurrent = False

    def __init__(self, views: Iterator[memoryview]) -> None:
        self._views = views
        self._view = memoryview(b"")

    def fill(self, buf: memoryview, offset: int) -> int:
        """Copy the next ``len(buf)`` bytes (``offset`` is implied by the order of calls)."""
        got = 0
        while got < len(buf):
            if not self._view:
                self._view = next(self._views, memoryview(b""))
                if not self._view:
                    break
            take = min(len(self._view), len(buf) - got)
            buf[got:got + take] = self._view[:take]
            self._view = self._view[take:]
            got += take
        return got


@dataclass(eq=False)
class _Job:
    """A run of chunks: its input and output buffers and what the worker made of them."""

    data: bytearray
    out: bytearray
    first: int = 0
    size: int = 0
    done: int = 0
    failed: bool = False
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class Chunks:
    """Encrypt or decrypt jobs of ``per_job`` chunks under one derived key and base nonce."""

    def __init__(self, derived: Derived, *, encrypt: bool, per_job: int) -> None:
        aead = AESGCM(derived.aead_key)
        self._op = aead.encrypt_into if encrypt else aead.decrypt_into
        self._base = int.from_bytes(derived.base_nonce, "big")
        self._encrypt = encrypt
        self.in_chunk, self.out_chunk = (CHUNK, CT_CHUNK) if encrypt else (CT_CHUNK, CHUNK)
        self.per_job = per_job

    def new_job(self) -> _Job:
        """A job with buffers for ``per_job`` chunks."""
        return _Job(bytearray(self.in_chunk * self.per_job),
                    bytearray(self.out_chunk * self.per_job))

    def cipher(self, job: _Job) -> None:
        """Cipher ``job.size`` input bytes; a short job ends with the final chunk."""
        data, out, size = memoryview(job.data), memoryview(job.out), job.size
        final = size < len(data)
        count = size // self.in_chunk + final
        job.done, job.failed = 0, False
        op, step, base, done = self._op, self.in_chunk, self._base, 0
        for k in range(count):
            piece = data[k * step:min((k + 1) * step, size)]
            length = len(piece) + TAG if self._encrypt else len(piece) - TAG
            if length < 0:  # no final chunk: the payload was cut at a boundary or in a tag
                break
            try:  # the nonce is base_nonce XOR uint96be(index), FORMAT.md section 6
                op((base ^ (job.first + k)).to_bytes(NONCE, "big"), piece, None,
                   out[done:done + length])
            except InvalidTag:
                break
            done += length
        else:
            job.done = done
            return
        job.done, job.failed = done, True


class _Pool:
    """Worker threads that run ``work`` on submitted jobs and set each job's ``ready``."""

    def __init__(self, workers: int, work: Callable[[_Job], None]) -> None:
        self._tasks: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._work = work
        self._stop = False
        self._threads = [threading.Thread(target=self._run, name="img-crypt-cipher",
                                          daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while (job := self._tasks.get()) is not None:
            if not self._stop:
                try:
                    self._work(job)
                except BaseException as e:  # handed to the caller, which raises it
                    job.error = e
            job.ready.set()

    def submit(self, job: _Job) -> None:
        """Queue ``job``."""
        job.ready.clear()
        job.error = None
        self._tasks.put(job)

    def close(self) -> None:
        """Skip the jobs still queued and join every worker."""
        self._stop = True
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()


def run(chunks: Chunks, reader: Reader, sink: Writable, *, workers: int, inflight: int,
        progress: Progress | None = None) -> tuple[int, int]:
    """Cipher all of ``reader``'s input into ``sink``; return (bytes read, bytes written).

    Raises :class:`AuthenticationError` after writing the authenticated chunks that came
    before the first failing one.
    """
    job_input = chunks.in_chunk * chunks.per_job

    def work(job: _Job) -> None:
        if reader.concurrent:
            job.size = reader.fill(memoryview(job.data), job.first * chunks.in_chunk)
        chunks.cipher(job)

    free: list[_Job] = []
    pending: collections.deque[_Job] = collections.deque()
    pool = _Pool(workers, work)
    read = written = index = 0
    ended = False
    try:
        while True:
            while not ended and len(pending) < inflight:
                job = free.pop() if free else chunks.new_job()
                job.first = index
                index += chunks.per_job
                if not reader.concurrent:
                    job.size = reader.fill(memoryview(job.data), 0)
                    ended = job.size < job_input
                pool.submit(job)
                pending.append(job)
            job = pending.popleft()
            job.ready.wait()
            if job.error is not None:
                raise job.error
            write_all(sink, memoryview(job.out)[:job.done])
            read, written = read + job.size, written + job.done
            if progress:
                progress(job.size)
            if job.failed:
                raise AuthenticationError()
            if job.size < job_input:
                return read, written
            free.append(job)
    finally:
        pool.close()

"""A background worker that runs the delete hook's jobs outside Glance's request.

A few daemon threads per process take jobs from one bounded queue. The caller hands it a job with
:meth:`RetryWorker.submit` and waits on the returned :class:`Ticket` for as long as it can spend
(the hook's time budget); whatever is not finished by then goes on here. A job that fails with
:class:`~img_crypt.errors.UnavailableError` (key manager down, hung past its request timeout)
is retried after a delay that doubles each time, a bounded number of times; every other error
ends it. When the worker gives up (or the queue is full, or the process exits first) it logs
that ``img-crypt reconcile`` will clean up, so jobs must be idempotent.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from img_crypt.errors import ImgCryptError, UnavailableError

LOG = logging.getLogger("img_crypt.glance.retry_worker")

MAX_DELAY = 600.0
"""No retry waits longer than this (seconds)."""
NET = "img-crypt reconcile will clean it up"


class Ticket:
    """The caller's view of a job: :meth:`wait` until its first attempt is over."""

    def __init__(self) -> None:
        self._first_attempt = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True when the first attempt ended (however it ended) within ``timeout`` seconds."""
        return self._first_attempt.wait(max(0.0, timeout))

    def _attempted(self) -> None:
        self._first_attempt.set()


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    name: str = field(compare=False)
    run: Callable[[], object] = field(compare=False)
    retries: int = field(compare=False)
    delay: float = field(compare=False)
    ticket: Ticket = field(compare=False)
    attempt: int = field(default=0, compare=False)


class RetryWorker:
    """``threads`` daemon threads running jobs in order of due time; ``max_pending`` queued.

    Several threads, so that concurrent deletes are cleaned up side by side, as when each
    request ran its own cleanup, and one hung request does not hold up the others.
    """

    def __init__(self, max_pending: int = 1000, threads: int = 4) -> None:
        self.max_pending, self.threads = max_pending, threads
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def submit(self, name: str, run: Callable[[], object], *, retries: int,
               delay: float) -> Ticket:
        """Queue ``run`` (named ``name`` in the log) to run as soon as the thread is free.

        It is retried ``retries`` times on UnavailableError, first after ``delay`` seconds,
        each delay twice the one before, at most :data:`MAX_DELAY`. A full queue refuses the
        job (logged): the returned ticket is already over.
        """
        ticket = Ticket()
        with self._cond:
            if len(self._jobs) >= self.max_pending or self._stopping:
                why = "the process is stopping" if self._stopping else \
                    f"{len(self._jobs)} key cleanups already pending"
                LOG.error("%s: not run, %s; %s", name, why, NET)
                ticket._attempted()
                return ticket
            self._push(_Job(time.monotonic(), next(self._seq), name, run, retries, delay, ticket))
            self._ensure_threads()
        return ticket

    def pending(self) -> list[str]:
        """Names of the queued jobs (not those running)."""
        with self._cond:
            return [job.name for job in sorted(self._jobs)]

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Stop taking jobs and end the threads; log and return the names never finished."""
        with self._cond:
            self._stopping = True
            left = [job.name for job in sorted(self._jobs)]
            self._jobs.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        for name in left:
            LOG.warning("%s: not finished before the process stopped; %s", name, NET)
        return left

    # --- the thread -------------------------------------------------------------------------

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._jobs, job)
        self._cond.notify_all()

    def _ensure_threads(self) -> None:
        """Start the threads on first use, in the process that uses them (after any fork)."""
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.threads:
            thread = threading.Thread(target=self._loop, daemon=True,
                                      name=f"img-crypt-retry-{len(self._threads)}")
            thread.start()
            self._threads.append(thread)

    def _next(self) -> _Job | None:
        with self._cond:
            while not self._stopping:
                if self._jobs:
                    wait = self._jobs[0].due - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._jobs)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _loop(self) -> None:  # one thread
        while (job := self._next()) is not None:
            self._attempt(job)

    def _attempt(self, job: _Job) -> None:
        job.attempt += 1
        try:
            job.run()
        except UnavailableError as e:
            self._retry(job, e)
        except ImgCryptError as e:
            LOG.error("%s failed: %s; %s", job.name, e, NET)
        except Exception:  # never let one job end the thread
            LOG.exception("%s failed; %s", job.name, NET)
        else:
            if job.attempt > 1:
                LOG.info("%s done at attempt %d", job.name, job.attempt)
        finally:
            job.ticket._attempted()

    def _retry(self, job: _Job, error: UnavailableError) -> None:
        if job.attempt > job.retries:
            LOG.error("%s: key manager still unavailable after %d attempts (%s); giving up; "
                      "%s", job.name, job.attempt, error, NET)
            return
        wait = min(job.delay * 2 ** (job.attempt - 1), MAX_DELAY)
        LOG.warning("%s: key manager unavailable (%s); attempt %d of %d in %.1f s", job.name,
                    error, job.attempt + 1, job.retries + 1, wait)
        with self._cond:
            if self._stopping:
                LOG.warning("%s: not finished before the process stopped; %s", job.name, NET)
                return
            job.due = time.monotonic() + wait
            self._push(job)


_shared: RetryWorker | None = None
_shared_pid = 0
_shared_lock = threading.Lock()


def shared() -> RetryWorker:
    """The worker of this process (a forked child gets its own); stopped at interpreter exit."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid():
            _shared, _shared_pid = RetryWorker(), os.getpid()
            atexit.register(_shared.stop, 1.0)
        return _shared

"""The delete hook's background worker (img_crypt/glance/retry_worker.py).

Jobs run on a few daemon threads; the caller waits on a ticket for its budget only. A job failing
with UnavailableError is retried after a delay that doubles, a bounded number of times; any
other error ends it. Each way a job is given up (attempts exhausted, refused error, full queue,
process stopping) is logged naming ``img-crypt reconcile``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from img_crypt.errors import ForbiddenError, UnavailableError
from img_crypt.glance import retry_worker
from img_crypt.glance.retry_worker import RetryWorker

RECONCILE = "img-crypt reconcile"


@pytest.fixture
def worker() -> Iterator[RetryWorker]:
    w = RetryWorker(max_pending=3, threads=1)
    yield w
    w.stop(timeout=5)


class Job:
    """A job that fails with ``errors`` in turn, then succeeds; records when it ran."""

    def __init__(self, *errors: Exception, block: threading.Event | None = None) -> None:
        self.errors = list(errors)
        self.block = block
        self.times: list[float] = []
        self.done = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        if self.block is not None:
            self.block.wait(10)
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == retry_worker.LOG.name and r.levelno == level]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_job_that_succeeds_ends_its_ticket_within_the_wait(worker: RetryWorker) -> None:
    job = Job()
    assert worker.submit("job", job, retries=0, delay=0.1).wait(5)
    assert job.done.is_set()


def test_the_caller_waits_no_longer_than_its_budget_for_a_job_that_hangs(
        worker: RetryWorker) -> None:
    release = threading.Event()
    job = Job(block=release)
    began = time.monotonic()
    assert not worker.submit("job", job, retries=0, delay=0.1).wait(0.2)
    assert time.monotonic() - began < 1.0
    release.set()
    assert job.done.wait(5)  # it went on after the caller stopped waiting


def test_an_unavailable_key_manager_is_retried_with_a_doubling_delay_until_it_succeeds(
        worker: RetryWorker, caplog: pytest.LogCaptureFixture) -> None:
    job = Job(UnavailableError("down"), UnavailableError("down"))
    with caplog.at_level(logging.INFO, logger=retry_worker.LOG.name):
        ticket = worker.submit("cleanup of image x", job, retries=3, delay=0.2)
        assert ticket.wait(5)  # the first attempt is over (failed): the caller goes on
        assert job.done.wait(10)
        wait_until(lambda: bool(messages(caplog, logging.INFO)))
    first, second = job.times[1] - job.times[0], job.times[2] - job.times[1]
    assert first >= 0.2 and second >= 0.4  # 0.2 s, then twice that
    assert len(messages(caplog, logging.WARNING)) == 2
    assert messages(caplog, logging.INFO) == ["cleanup of image x done at attempt 3"]
    assert messages(caplog, logging.ERROR) == []


def test_after_its_last_retry_the_worker_gives_up_and_names_reconcile(
        worker: RetryWorker, caplog: pytest.LogCaptureFixture) -> None:
    job = Job(*[UnavailableError("down")] * 3)
    with caplog.at_level(logging.WARNING, logger=retry_worker.LOG.name):
        worker.submit("cleanup of image x", job, retries=2, delay=0.01)
        wait_until(lambda: bool(messages(caplog, logging.ERROR)))
    assert len(job.times) == 3 and not job.done.is_set()
    [error] = messages(caplog, logging.ERROR)
    assert "cleanup of image x" in error and "after 3 attempts" in error and RECONCILE in error
    assert worker.pending() == []


def test_the_delay_is_capped(worker: RetryWorker, monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(retry_worker, "MAX_DELAY", 0.05)
    job = Job(*[UnavailableError("down")] * 4)
    worker.submit("job", job, retries=4, delay=0.04)
    assert job.done.wait(5)
    gaps = [b - a for a, b in zip(job.times, job.times[1:], strict=False)]
    assert max(gaps) < 0.3  # uncapped, the last wait alone would be 0.32 s


@pytest.mark.parametrize("error", [ForbiddenError("refused"), RuntimeError("bug")])
def test_other_errors_are_not_retried_and_name_reconcile(
        worker: RetryWorker, caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    job = Job(error)
    with caplog.at_level(logging.ERROR, logger=retry_worker.LOG.name):
        assert worker.submit("cleanup of image x", job, retries=5, delay=0.01).wait(5)
    time.sleep(0.1)
    assert len(job.times) == 1
    [message] = messages(caplog, logging.ERROR)
    assert "cleanup of image x failed" in message and RECONCILE in message


def test_a_full_queue_refuses_the_job_at_once_and_names_reconcile(
        worker: RetryWorker, caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    worker.submit("running", Job(block=release), retries=0, delay=0.1)
    wait_until(lambda: worker.pending() == [])  # the thread took it
    queued = [Job() for _ in range(3)]
    for n, job in enumerate(queued):
        worker.submit(f"queued {n}", job, retries=0, delay=0.1)
    refused = Job()
    with caplog.at_level(logging.ERROR, logger=retry_worker.LOG.name):
        assert worker.submit("one too many", refused, retries=0, delay=0.1).wait(0)
    [message] = messages(caplog, logging.ERROR)
    assert "one too many" in message and RECONCILE in message
    release.set()
    for job in queued:
        assert job.done.wait(5)
    assert refused.times == []


def test_stopping_logs_every_job_left_and_refuses_new_ones(
        worker: RetryWorker, caplog: pytest.LogCaptureFixture) -> None:
    waiting = Job(UnavailableError("down"))
    worker.submit("cleanup of image x", waiting, retries=3, delay=60)
    wait_until(lambda: bool(waiting.times) and worker.pending() == ["cleanup of image x"])
    with caplog.at_level(logging.WARNING, logger=retry_worker.LOG.name):
        assert worker.stop() == ["cleanup of image x"]
        assert worker.submit("late", Job(), retries=0, delay=0.1).wait(0)
    stopped = [m for m in messages(caplog, logging.WARNING) if "process stopped" in m]
    assert len(stopped) == 1 and "cleanup of image x" in stopped[0] and RECONCILE in stopped[0]
    assert any("late" in m for m in messages(caplog, logging.ERROR))


def test_jobs_run_side_by_side_so_a_hung_one_does_not_hold_up_the_others() -> None:
    release = threading.Event()
    worker = RetryWorker(threads=2)
    try:
        hung, quick = Job(block=release), Job()
        worker.submit("hung", hung, retries=0, delay=0.1)
        assert worker.submit("quick", quick, retries=0, delay=0.1).wait(5)
        assert quick.done.is_set() and not hung.done.is_set()
    finally:
        release.set()
        worker.stop()


def test_the_shared_worker_is_one_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_worker, "_shared", None)
    first = retry_worker.shared()
    assert retry_worker.shared() is first
    monkeypatch.setattr(retry_worker, "_shared_pid", os.getpid() + 1)  # as in a forked child
    assert retry_worker.shared() is not first


EXITING = """
import logging, sys
from img_crypt.errors import UnavailableError
from img_crypt.glance import retry_worker
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
def down():
    raise UnavailableError("down")
retry_worker.shared().submit("cleanup of image x", down, retries=3, delay=60).wait(5)
"""


def test_a_process_that_exits_logs_each_cleanup_it_leaves_to_reconcile() -> None:
    """Glance stopping (gunicorn's graceful stop, uwsgi's reload) while a retry waits."""
    proc = subprocess.run([sys.executable, "-c", EXITING], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ("cleanup of image x: not finished before the process stopped; img-crypt reconcile "
            "will clean it up") in proc.stderr

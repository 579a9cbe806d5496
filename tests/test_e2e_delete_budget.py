"""End to end: the in-Glance delete hook holds a user's DELETE for its time budget at most.

A real Glance 33 runs the ``img_crypt`` notifier driver; barbican_mock is the key manager, made
to hang (every request sleeps past the client's timeout) or to refuse connections (stopped; it
starts again on the same port with its state). The DELETE answers within about
``[image_encryption] delete_hook_budget``; the cleanup goes on in Glance's background worker and
completes once Barbican is back. Before the budget, the DELETE waited for every retry of every
request: 3.8 s with connections refused, over 120 s with Barbican hanging (timeout 30 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from barbican_mock import Faults, MockBarbican
from tests.servers.glance import GlanceClient, RealGlance
from tests.support.e2e_glance import PROJECT, MiB, encrypted_image, plaintext, start_glance
from tests.support.listener_proc import wait_for

BUDGET = 1.0
SLACK = 1.5
"""What Glance itself may add to a DELETE (database, store) on a loaded test machine."""
HANG = 3600.0
CLEANUP_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def barbican() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2", faults=Faults()) as mock:
        yield mock


@pytest.fixture(scope="module")
def glance(barbican: MockBarbican) -> Iterator[RealGlance]:
    server = start_glance(barbican.url, timeout="2", delete_hook_budget=str(BUDGET),
                          delete_hook_retry_delay="0.5", delete_hook_retries="8")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(plaintext(MiB + 1))
    return path


def timed_delete(glance: RealGlance, image_id: str) -> float:
    with GlanceClient(glance.url, PROJECT) as client:
        began = time.monotonic()
        client.delete_image(image_id)
        return time.monotonic() - began


def key_gone(barbican: MockBarbican, key_id: str) -> bool:
    return key_id not in {s["id"] for s in barbican.secrets(PROJECT)}


def test_a_delete_answers_within_the_budget_while_barbican_hangs_and_cleans_up_once_it_is_back(
        glance: RealGlance, barbican: MockBarbican, data_file: Path) -> None:
    image_id, key_id = encrypted_image(glance, data_file)
    barbican.faults.latency = HANG
    try:
        elapsed = timed_delete(glance, image_id)
        assert elapsed < BUDGET + SLACK, f"DELETE took {elapsed:.2f} s"
        assert not key_gone(barbican, key_id)
        wait_for("a timed-out attempt scheduled a retry",
                 lambda: f"deleted image {image_id}: key manager unavailable" in
                 glance.log_text(), CLEANUP_TIMEOUT, glance.log_text)
    finally:
        barbican.faults.latency = 0.0
    wait_for("the background cleanup deleted the key", lambda: key_gone(barbican, key_id),
             CLEANUP_TIMEOUT, glance.log_text)
    assert barbican.consumers(key_id) == []


def test_a_delete_answers_within_the_budget_while_barbican_refuses_and_cleans_up_once_it_is_back(
        glance: RealGlance, barbican: MockBarbican, data_file: Path) -> None:
    image_id, key_id = encrypted_image(glance, data_file)
    barbican.stop()
    try:
        elapsed = timed_delete(glance, image_id)
        assert elapsed < BUDGET + SLACK, f"DELETE took {elapsed:.2f} s"
        wait_for("a refused attempt scheduled a retry",
                 lambda: f"deleted image {image_id}: key manager unavailable" in
                 glance.log_text(), CLEANUP_TIMEOUT, glance.log_text)
        assert not key_gone(barbican, key_id)
    finally:
        barbican.start()  # same port, same state
    wait_for("the background cleanup deleted the key", lambda: key_gone(barbican, key_id),
             CLEANUP_TIMEOUT, glance.log_text)
    assert barbican.consumers(key_id) == []


def test_with_barbican_healthy_the_cleanup_is_done_before_the_delete_answers(
        glance: RealGlance, barbican: MockBarbican, data_file: Path) -> None:
    image_id, key_id = encrypted_image(glance, data_file)
    elapsed = timed_delete(glance, image_id)
    assert key_gone(barbican, key_id)  # no polling: the budget was enough
    assert barbican.consumers(key_id) == []
    assert elapsed < BUDGET + SLACK

"""``img-crypt --key-manager barbican`` end to end, and faults injected with barbican_mock.

Round trips run against the real Barbican 23.0.0 and the mock in the unmicroversioned ``yoga``
era (where python-barbicanclient refuses consumer calls and the adapter goes direct). Fault
cases count what the mock holds afterwards: nothing the failed command created may remain.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from barbican_mock import MockBarbican
from img_crypt.errors import UnavailableError
from img_crypt.keys.connect import connect
from tests.support.cli import Run, cli


@dataclass
class Barbican:
    url: str
    project: str

    def options(self) -> list[str]:
        return ["--key-manager", "barbican", "--barbican-url", self.url,
                "--project-id", self.project]


@pytest.fixture(params=["real", "mock-yoga"])
def barbican(request: pytest.FixtureRequest) -> Iterator[Barbican]:
    project = f"cli-{uuid.uuid4().hex[:8]}"
    if request.param == "real":
        yield Barbican(request.getfixturevalue("real_barbican").url, project)
        return
    with MockBarbican(era="yoga") as mock:
        yield Barbican(mock.url, project)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(3 * 16384 + 77))
    return path


def key_of(run: Run) -> str:
    line = next(line for line in run.out.splitlines() if line.startswith("key: barbican:"))
    return line.split(":", 2)[2].split()[0]


def test_encrypt_registers_the_image_and_decrypt_round_trips(barbican: Barbican, plain: Path,
                                                            tmp_path: Path) -> None:
    image_id = str(uuid.uuid4())
    enc = cli("encrypt", str(plain), str(tmp_path / "disk.icr"), "--image-id", image_id,
              *barbican.options())
    assert enc.code == 0, enc.err
    key = key_of(enc)
    listed = cli("keys", "consumers", key, *barbican.options())
    assert listed.code == 0 and listed.out.split()[:3] == ["image", "image", image_id]
    assert datetime.fromisoformat(listed.out.split()[3]).tzinfo is not None  # registered at
    dec = cli("decrypt", str(tmp_path / "disk.icr"), str(tmp_path / "back.raw"),
              "--image-id", image_id, *barbican.options())
    assert dec.code == 0, dec.err
    assert (tmp_path / "back.raw").read_bytes() == plain.read_bytes()


def test_a_key_in_use_is_not_deleted_and_the_error_says_why(barbican: Barbican, plain: Path,
                                                            tmp_path: Path) -> None:
    enc = cli("encrypt", str(plain), str(tmp_path / "disk.icr"), "--image-id",
              str(uuid.uuid4()), *barbican.options())
    key = key_of(enc)
    refused = cli("keys", "delete", key, *barbican.options())
    assert refused.code == 1
    assert refused.err.count("\n") == 1 and "consumer" in refused.err
    assert cli("keys", "delete", key, "--force", *barbican.options()).code == 0
    gone = cli("decrypt", str(tmp_path / "disk.icr"), str(tmp_path / "x"), *barbican.options())
    assert gone.code == 1 and not (tmp_path / "x").exists()


def test_without_barbican_options_a_barbican_slot_is_reported_not_guessed(
        barbican: Barbican, plain: Path, tmp_path: Path) -> None:
    assert cli("encrypt", str(plain), str(tmp_path / "d.icr"), *barbican.options()).code == 0
    run = cli("decrypt", str(tmp_path / "d.icr"), str(tmp_path / "out"),
              "--key-store", str(tmp_path / "empty"))
    assert run.code == 1 and "barbican:" in run.err
    assert not (tmp_path / "out").exists()


# --- faults ----------------------------------------------------------------------------------

@pytest.fixture
def mock() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2") as server:
        yield server


def options(mock: MockBarbican) -> list[str]:
    return ["--key-manager", "barbican", "--barbican-url", mock.url, "--project-id", "p"]


def left_behind(mock: MockBarbican) -> dict[str, int]:
    counts = mock.counts()
    return {"secrets": counts["secrets"], "consumers": counts["consumers"]}


def test_a_burst_of_503s_is_retried_and_the_encrypt_succeeds(mock: MockBarbican, plain: Path,
                                                             tmp_path: Path) -> None:
    mock.faults.error_burst = 2
    run = cli("encrypt", str(plain), str(tmp_path / "d.icr"), "--image-id", str(uuid.uuid4()),
              *options(mock))
    assert run.code == 0, run.err
    assert left_behind(mock) == {"secrets": 1, "consumers": 1}


def test_a_barbican_that_keeps_failing_fails_cleanly_and_boundedly(
        mock: MockBarbican, plain: Path, tmp_path: Path) -> None:
    mock.faults.error_rate = 1.0
    run = cli("encrypt", str(plain), str(tmp_path / "d.icr"), *options(mock))
    assert run.code == 1
    assert run.err.startswith("img-crypt: error: ") and run.err.count("\n") == 1
    assert "503" in run.err and "Traceback" not in run.err
    assert len(mock.requests_log()) <= 4  # discovery: 1 try + 3 retries, then stop
    assert not (tmp_path / "d.icr").exists()
    assert left_behind(mock) == {"secrets": 0, "consumers": 0}


def test_a_refused_consumer_registration_leaves_nothing_behind(
        mock: MockBarbican, plain: Path, tmp_path: Path) -> None:
    mock.faults.consumers_fail = 403
    run = cli("encrypt", str(plain), str(tmp_path / "d.icr"), "--image-id", str(uuid.uuid4()),
              *options(mock))
    assert run.code == 1 and "403" in run.err
    assert not (tmp_path / "d.icr").exists()
    assert list(tmp_path.iterdir()) == [plain]  # no temporary file either
    assert left_behind(mock) == {"secrets": 0, "consumers": 0}


def test_a_failure_after_registration_removes_the_consumer_and_the_new_key(
        mock: MockBarbican, plain: Path, tmp_path: Path) -> None:
    existing = tmp_path / "d.icr"
    existing.write_bytes(b"keep me")  # OUTPUT exists and no --force: fails after registering
    run = cli("encrypt", str(plain), str(existing), "--image-id", str(uuid.uuid4()),
              *options(mock))
    assert run.code == 1 and "already exists" in run.err
    assert existing.read_bytes() == b"keep me"
    assert left_behind(mock) == {"secrets": 0, "consumers": 0}


def test_dropped_connections_are_retried(mock: MockBarbican) -> None:
    km = connect(url=mock.url, project_id="p", backoff=0)
    key = km.create_key()
    mock.faults.drop_next = 2
    assert len(km.get_key(key)) == 32


def test_latency_past_the_timeout_is_unavailable_after_bounded_retries(
        mock: MockBarbican) -> None:
    km = connect(url=mock.url, project_id="p", backoff=0, retries=1, timeout=0.3)
    key = km.create_key()
    mock.faults.latency = 1.0
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="cannot reach Barbican"):
        km.get_key(key)
    assert time.monotonic() - started < 3.0  # two tries of 0.3 s, not a hang


def test_a_barbican_that_is_down_is_one_clear_line(plain: Path, tmp_path: Path) -> None:
    with MockBarbican() as gone:
        url = gone.url
    run = cli("encrypt", str(plain), str(tmp_path / "d.icr"), "--key-manager", "barbican",
              "--barbican-url", url, "--project-id", "p")
    assert run.code == 1
    assert run.err == "img-crypt: error: discover the Barbican version: cannot reach Barbican " \
                      "(ConnectFailure)\n"
    assert not (tmp_path / "d.icr").exists()

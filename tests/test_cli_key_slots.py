"""``img-crypt decrypt`` tries every key slot before failing (issue 11, behaviour 7).

Files carry a Barbican slot first and a local slot second. A Barbican that refuses (403),
has lost the key (404) or is down must not stop the local slot from opening the file; when
no slot opens, the one error line names every slot with its reason, escaped. An unwrap that
fails authentication stays opaque.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from barbican_mock import MockBarbican
from img_crypt import envelope
from img_crypt.envelope import Kek
from img_crypt.errors import AuthenticationError
from img_crypt.keys import connect as connect_module
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore
from tests.support.cli import Run, cli

OWNER = "owner"
OPAQUE = f"img-crypt: error: {AuthenticationError()}\n"


@dataclass
class Slots:
    """A two-slot file (barbican, then local), what it holds and how to decrypt it."""

    path: Path
    plain: bytes
    barbican: str
    local: str
    store: Path
    url: str

    def decrypt(self, out: Path, *, project: str = OWNER, store: Path | None = None,
                url: str | None = None) -> Run:
        return cli("decrypt", str(self.path), str(out), "--key-store", str(store or self.store),
                   "--barbican-url", url or self.url, "--project-id", project)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's Barbican managers retry as often, without sleeping."""
    monkeypatch.setattr(connect_module, "BarbicanKeyManager",
                        functools.partial(BarbicanKeyManager, backoff=0))


@pytest.fixture
def mock() -> Iterator[MockBarbican]:
    with MockBarbican() as server:
        yield server


def make_file(tmp_path: Path, mock: MockBarbican, *, local_key: bytes | None = None,
              barbican_key: bytes | None = None, local_id: str | None = None) -> Slots:
    """Encrypt random data under a Barbican KEK and a local KEK (bytes overridable)."""
    store = tmp_path / "store"
    local = LocalKeyStore(store)
    lid = local_id or local.create_key()
    km = connect(url=mock.url, project_id=OWNER)
    bid = km.create_key()
    keks = [Kek("barbican", bid, barbican_key or km.get_key(bid)),
            Kek("local", lid, local_key or local.get_key(lid))]
    plain = os.urandom(2 * 16384 + 5)
    (tmp_path / "plain").write_bytes(plain)
    path = tmp_path / "two-slots.icr"
    with open(tmp_path / "plain", "rb") as src, open(path, "wb") as sink:
        envelope.encrypt(src, sink, keks)
    return Slots(path, plain, bid, lid, store, mock.url)


def assert_one_error_line(run: Run) -> str:
    assert run.code == 1, run
    assert run.err.startswith("img-crypt: error: ") and run.err.count("\n") == 1, run.err
    assert "Traceback" not in run.err
    return run.err


def test_a_forbidden_barbican_slot_does_not_stop_a_local_slot_that_works(
        tmp_path: Path, mock: MockBarbican) -> None:
    slots = make_file(tmp_path, mock)
    run = slots.decrypt(tmp_path / "out", project="intruder")  # Barbican answers 403
    assert run.code == 0, run.err
    assert (tmp_path / "out").read_bytes() == slots.plain
    assert ("GET", f"/v1/secrets/{slots.barbican}", 403) in mock.requests_log()


def test_a_key_missing_from_barbican_does_not_stop_a_local_slot_that_works(
        tmp_path: Path, mock: MockBarbican) -> None:
    slots = make_file(tmp_path, mock)
    connect(url=mock.url, project_id=OWNER).delete_key(slots.barbican, force=True)
    run = slots.decrypt(tmp_path / "out")
    assert run.code == 0, run.err
    assert (tmp_path / "out").read_bytes() == slots.plain


def test_a_barbican_that_is_down_does_not_stop_a_local_slot_that_works(tmp_path: Path) -> None:
    with MockBarbican() as gone:
        slots = make_file(tmp_path, gone)
    run = slots.decrypt(tmp_path / "out")
    assert run.code == 0, run.err
    assert (tmp_path / "out").read_bytes() == slots.plain


def test_when_every_slot_fails_the_error_names_each_slot_and_its_reason(
        tmp_path: Path, mock: MockBarbican) -> None:
    slots = make_file(tmp_path, mock)
    err = assert_one_error_line(slots.decrypt(tmp_path / "out", project="intruder",
                                              store=tmp_path / "empty"))
    assert "no key available for any key slot" in err
    barbican_part, local_part = err.split("; ")
    assert f"barbican:{slots.barbican} -> " in barbican_part and "403" in barbican_part
    assert f"local:{slots.local} -> " in local_part and "not found" in local_part
    assert not (tmp_path / "out").exists()


def test_an_unavailable_and_a_missing_slot_are_both_reported(tmp_path: Path) -> None:
    with MockBarbican() as gone:
        slots = make_file(tmp_path, gone)
    err = assert_one_error_line(slots.decrypt(tmp_path / "out", store=tmp_path / "empty"))
    assert f"barbican:{slots.barbican} -> " in err and "cannot reach Barbican" in err
    assert f"local:{slots.local} -> " in err


def test_a_slot_of_a_kind_with_no_manager_configured_says_so(
        tmp_path: Path, mock: MockBarbican) -> None:
    slots = make_file(tmp_path, mock)
    run = cli("decrypt", str(slots.path), str(tmp_path / "out"), "--key-store",
              str(tmp_path / "empty"))
    err = assert_one_error_line(run)
    assert f"barbican:{slots.barbican} -> no barbican key manager configured" in err


def test_reasons_with_hostile_characters_are_escaped_on_one_line(
        tmp_path: Path, mock: MockBarbican) -> None:
    evil = "k\u2028ey\u202eid"
    slots = make_file(tmp_path, mock, local_id=evil, local_key=os.urandom(32))
    err = assert_one_error_line(slots.decrypt(tmp_path / "out", project="intruder"))
    assert "\u2028" not in err and "\u202e" not in err
    assert "local:k\\u2028ey\\u202eid -> " in err


def test_a_slot_that_fails_authentication_does_not_stop_a_later_slot_that_works(
        tmp_path: Path, mock: MockBarbican) -> None:
    slots = make_file(tmp_path, mock, barbican_key=os.urandom(32))  # wrong bytes in slot 1
    run = slots.decrypt(tmp_path / "out")
    assert run.code == 0, run.err
    assert (tmp_path / "out").read_bytes() == slots.plain


def test_an_authentication_failure_stays_opaque_whatever_the_other_slots_say(
        tmp_path: Path, mock: MockBarbican) -> None:
    slots = make_file(tmp_path, mock, local_key=os.urandom(32))  # wrong bytes in slot 2
    run = slots.decrypt(tmp_path / "out", project="intruder")
    assert_one_error_line(run)
    assert run.err == OPAQUE
    assert not (tmp_path / "out").exists()


"""One enrollment and its undo (img_crypt/enrollment.py), and the CLI paths that use it.

Issue 11, behaviour 1: a failed ``encrypt --kek K --image-id X`` never removes a consumer X
that was on K before it started. Behaviour 4: ``rewrap --add-kek NEW --remove-kek OLD`` of an
image-bound file moves the image's consumer from OLD to NEW, registering before the output is
published and releasing after, and authenticates the payload unless ``--header-only``. Value
objects raise our own errors: a bad ``--consumer-service`` is one usage error, nothing created.
The plugin's cases are in tests/test_glance_plugin.py (its ``backend`` fixture).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from barbican_mock import MockBarbican
from img_crypt import envelope
from img_crypt.enrollment import Enrollment, NewKey, release
from img_crypt.errors import (
    ImgCryptError,
    InvalidValueError,
    UnavailableError,
    UsageError,
)
from img_crypt.format import KeySlot
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore
from tests.support.cli import Run, cli

PROJECT = "p-enroll"
IMAGE = "5c1b7a52-0f8e-4d0a-9a57-3c1f2d4e6b80"


def image(resource_id: str = IMAGE, service: str = "image") -> Consumer:
    return Consumer(service=service, resource_type="image", resource_id=resource_id)


def ids(consumers: list[Consumer]) -> list[tuple[str, str, str]]:
    return [(c.service, c.resource_type, c.resource_id) for c in consumers]


# --- the enrollment itself, on the local store with injected faults ---------------------------

class Faulty(LocalKeyStore):
    """The local store, with registrations whose answer is lost and other injected failures."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lose_answer = False  # the registration lands, then UnavailableError
        self.refuse_register = False  # UnavailableError, nothing registered
        self.listing_fails = False
        self.delete_fails = False
        self.remove_fails = False

    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        if self.refuse_register:
            raise UnavailableError("503 from the key manager")
        super().add_consumer(key_id, consumer)
        if self.lose_answer:
            raise UnavailableError("the answer was lost")

    def list_consumers(self, key_id: str) -> list[Consumer]:
        if self.listing_fails:
            raise UnavailableError("listing failed")
        return super().list_consumers(key_id)

    def remove_consumer(self, key_id: str, consumer: Consumer) -> None:
        if self.remove_fails:
            raise UnavailableError("removal failed")
        super().remove_consumer(key_id, consumer)

    def delete_key(self, key_id: str, *, force: bool = False) -> None:
        if self.delete_fails:
            raise UnavailableError("delete failed")
        super().delete_key(key_id, force=force)


@pytest.fixture
def km(tmp_path: Path) -> Faulty:
    return Faulty(tmp_path / "keys")


def test_a_consumer_that_was_there_before_is_not_undone(km: Faulty) -> None:
    key = km.create_key("shared")
    km.add_consumer(key, image())
    enrolled = Enrollment(km)
    enrolled.register(image(), [key])
    assert enrolled.undo() == []
    assert ids(km.list_consumers(key)) == ids([image()])


def test_a_consumer_this_operation_added_is_undone(km: Faulty) -> None:
    key = km.create_key("shared")
    enrolled = Enrollment(km)
    enrolled.register(image(), [key])
    assert ids(km.list_consumers(key)) == ids([image()])
    assert enrolled.undo() == []
    assert km.list_consumers(key) == []


def test_a_created_key_is_deleted_with_its_consumers_by_the_undo(km: Faulty) -> None:
    enrolled = Enrollment(km)
    key = enrolled.key(NewKey("new"))
    enrolled.register(image(), [key])
    assert enrolled.created_keys == [key]
    assert enrolled.undo() == []
    assert km.list_keys() == []


def test_an_existing_key_id_is_used_as_it_is(km: Faulty) -> None:
    key = km.create_key("shared")
    enrolled = Enrollment(km)
    assert enrolled.key(key) == key
    assert enrolled.created_keys == []


def test_a_lost_answer_of_a_registration_that_landed_is_found_by_listing(km: Faulty) -> None:
    key = km.create_key("shared")
    km.lose_answer = True
    enrolled = Enrollment(km)
    enrolled.register(image(), [key])  # no error: the listing shows it landed
    km.lose_answer = False
    assert enrolled.undo() == []
    assert km.list_consumers(key) == []


def test_a_lost_answer_of_a_registration_that_did_not_land_fails(km: Faulty) -> None:
    key = km.create_key("shared")
    km.refuse_register = True
    enrolled = Enrollment(km)
    with pytest.raises(UnavailableError, match="503"):
        enrolled.register(image(), [key])
    assert enrolled.added == []


def test_a_lost_answer_that_cannot_be_checked_fails_and_the_undo_removes_it(km: Faulty) -> None:
    key = km.create_key("shared")
    km.lose_answer = True
    enrolled = Enrollment(km)

    real_list = LocalKeyStore.list_consumers
    calls = 0

    def list_then_fail(self: Faulty, key_id: str) -> list[Consumer]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise UnavailableError("listing failed")
        return real_list(self, key_id)

    km.list_consumers = list_then_fail.__get__(km)  # type: ignore[method-assign]
    with pytest.raises(UnavailableError, match="answer was lost"):
        enrolled.register(image(), [key])
    assert ids(real_list(km, key)) == ids([image()])
    assert enrolled.undo() == []
    assert real_list(km, key) == []


def test_the_same_image_under_another_service_is_registered_but_never_undone(
        km: Faulty) -> None:
    key = km.create_key("shared")
    km.add_consumer(key, image(service="glance"))
    enrolled = Enrollment(km)
    enrolled.register(image(), [key])
    assert enrolled.added == []
    assert enrolled.undo() == []
    assert sorted(ids(km.list_consumers(key))) == sorted(ids([image(), image(service="glance")]))


def test_the_undo_reports_a_key_it_could_not_delete_and_still_removes_its_consumer(
        km: Faulty) -> None:
    enrolled = Enrollment(km)
    key = enrolled.key(NewKey("new"))
    enrolled.register(image(), [key])
    km.delete_fails = True
    assert enrolled.undo() == [f"could not delete the new key {key}: delete failed"]
    assert km.list_consumers(key) == []  # what stays protects nothing
    assert enrolled.undo() == []  # the record is cleared


def test_the_undo_reports_a_consumer_it_could_not_remove(km: Faulty) -> None:
    key = km.create_key("shared")
    enrolled = Enrollment(km)
    enrolled.register(image(), [key])
    km.remove_fails = True
    assert enrolled.undo() == [f"could not remove the consumer from key {key}: removal failed"]


def test_as_a_context_manager_it_undoes_and_reports_when_the_block_fails(km: Faulty) -> None:
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt), Enrollment(km, report=lines.append) as enrolled:
        key = enrolled.key(NewKey("new"))
        enrolled.register(image(), [key])
        km.delete_fails = True
        raise KeyboardInterrupt
    assert lines == [f"could not delete the new key {key}: delete failed"]


def test_as_a_context_manager_it_keeps_everything_on_success(km: Faulty) -> None:
    with Enrollment(km) as enrolled:
        key = enrolled.key(NewKey("new"))
        enrolled.register(image(), [key])
    assert ids(km.list_consumers(key)) == ids([image()])


def test_release_of_a_missing_consumer_is_fine(km: Faulty) -> None:
    key = km.create_key("k")
    assert release(km, image(), [key]) == []


# --- value objects raise our own errors -------------------------------------------------------

@pytest.mark.parametrize("field", ["service", "resource_type", "resource_id"])
@pytest.mark.parametrize("value", ["", "x" * 300])
def test_a_consumer_field_out_of_bounds_is_an_invalid_value(field: str, value: str) -> None:
    fields = {"service": "image", "resource_type": "image", "resource_id": IMAGE, field: value}
    with pytest.raises(InvalidValueError, match=f"consumer {field}") as caught:
        Consumer(fields["service"], fields["resource_type"], fields["resource_id"])
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ImgCryptError)


@pytest.mark.parametrize(("kind", "key_id"), [("Local", "k"), ("local", ""),
                                              ("local", "x" * 256), ("local", "a\nb")])
def test_a_key_slot_with_a_bad_kind_or_id_is_an_invalid_value(kind: str, key_id: str) -> None:
    with pytest.raises(InvalidValueError):
        KeySlot(kind=kind, key_id=key_id, nonce=bytes(12), wrapped_dek=bytes(48))


# --- the command line, on the local store and barbican_mock -----------------------------------

@dataclass
class Store:
    """Where the CLI's keys live, and a manager that sees the same keys."""

    name: str
    options: list[str]
    manager: KeyManager

    def key_ids(self) -> list[str]:
        return sorted(k.key_id for k in self.manager.list_keys())


@pytest.fixture(params=["local", "2026.2", "yoga"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        path = tmp_path / "keys"
        yield Store("local", ["--key-store", str(path)], LocalKeyStore(path))
        return
    with MockBarbican(era=request.param) as mock:
        yield Store(request.param, ["--key-manager", "barbican", "--barbican-url", mock.url,
                                    "--project-id", PROJECT],
                    connect(url=mock.url, project_id=PROJECT, backoff=0))


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(3 * 16384 + 77))
    return path


def run(store: Store, *argv: str | Path) -> Run:
    return cli(*(str(a) for a in argv), *store.options)


def one_error_line(result: Run, code: int) -> str:
    assert result.code == code, (result.code, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith("img-crypt: error: "), \
        result.err
    return result.err


Failure = Callable[[Path, pytest.MonkeyPatch], None]


def output_exists(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out.write_bytes(b"keep me")


def interrupted(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(envelope, "encrypt", stop)


def disk_full(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(source: Any, sink: Any, keks: Any, **kwargs: Any) -> Any:
        sink.write(b"half a header")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envelope, "encrypt", full)


FAILURES: dict[str, tuple[Failure, int]] = {
    "output-exists": (output_exists, 1), "interrupted": (interrupted, 130),
    "disk-full": (disk_full, 1),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_encrypt_keeps_a_consumer_that_was_on_the_kek_before(
        store: Store, plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        failure: str) -> None:
    kek = store.manager.create_key("shared")
    store.manager.add_consumer(kek, image())
    out = tmp_path / "out.icr"
    make_it_fail, code = FAILURES[failure]
    make_it_fail(out, monkeypatch)
    result = run(store, "encrypt", plain, out, "--kek", kek, "--image-id", IMAGE)
    one_error_line(result, code)
    assert ids(store.manager.list_consumers(kek)) == ids([image()])
    assert store.key_ids() == [kek]


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_encrypt_removes_the_consumer_it_added(
        store: Store, plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        failure: str) -> None:
    kek = store.manager.create_key("shared")
    out = tmp_path / "out.icr"
    make_it_fail, code = FAILURES[failure]
    make_it_fail(out, monkeypatch)
    result = run(store, "encrypt", plain, out, "--kek", kek, "--image-id", IMAGE)
    one_error_line(result, code)
    assert store.manager.list_consumers(kek) == []
    assert store.key_ids() == [kek]


def test_a_consumer_service_of_300_characters_is_one_usage_error_and_creates_nothing(
        store: Store, plain: Path, tmp_path: Path) -> None:
    result = run(store, "encrypt", plain, tmp_path / "out.icr", "--image-id", IMAGE,
                 "--consumer-service", "s" * 300)
    assert "consumer service must be a string of 1 to 255 characters" in \
        one_error_line(result, 2)
    assert "Traceback" not in result.err
    assert store.key_ids() == []
    assert not (tmp_path / "out.icr").exists()


# --- rewrap moves the image's consumer --------------------------------------------------------

@dataclass
class Bound:
    """An image-bound file under OLD, and a key NEW that is not in it yet."""

    path: Path
    old: str
    new: str


@pytest.fixture
def bound(store: Store, plain: Path, tmp_path: Path) -> Bound:
    old, new = store.manager.create_key("old"), store.manager.create_key("new")
    path = tmp_path / "bound.icr"
    result = run(store, "encrypt", plain, path, "--kek", old, "--image-id", IMAGE)
    assert result.code == 0, result.err
    return Bound(path, old, new)


def test_rewrap_moves_the_image_from_the_old_key_to_the_new_one(
        store: Store, bound: Bound, tmp_path: Path) -> None:
    out = tmp_path / "moved.icr"
    result = run(store, "rewrap", bound.path, out, "--add-kek", bound.new,
                 "--remove-kek", bound.old)
    assert result.code == 0, result.err
    assert result.err == ""
    assert ids(store.manager.list_consumers(bound.new)) == ids([image()])
    assert store.manager.list_consumers(bound.old) == []
    lines = result.out.splitlines()
    assert "payload: authenticated, every chunk" in lines
    assert f"image {IMAGE}: consumer of key {bound.new}" in lines
    assert f"image {IMAGE}: released from key {bound.old}" in lines


@pytest.mark.parametrize(("call", "published"), [("add_consumer", False),
                                                 ("remove_consumer", True)])
def test_rewrap_registers_before_publishing_and_releases_after(
        store: Store, bound: Bound, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        call: str, published: bool) -> None:
    out = tmp_path / "moved.icr"
    seen: list[bool] = []
    manager_type = type(store.manager)
    real = getattr(manager_type, call)

    def spy(self: KeyManager, key_id: str, consumer: Consumer) -> None:
        seen.append(out.exists())
        real(self, key_id, consumer)

    monkeypatch.setattr(manager_type, call, spy)
    result = run(store, "rewrap", bound.path, out, "--add-kek", bound.new,
                 "--remove-kek", bound.old)
    assert result.code == 0, result.err
    assert seen == [published]


def tampered(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-100] ^= 1  # inside the final chunk: only the payload is wrong
    bad = path.with_name("tampered.icr")
    bad.write_bytes(bytes(data))
    return bad


def test_rewrap_of_a_tampered_payload_fails_and_undoes_the_new_registration(
        store: Store, bound: Bound, tmp_path: Path) -> None:
    out = tmp_path / "moved.icr"
    result = run(store, "rewrap", tampered(bound.path), out, "--add-kek", bound.new,
                 "--remove-kek", bound.old)
    assert "authentication failed" in one_error_line(result, 1)
    assert not out.exists()
    assert store.manager.list_consumers(bound.new) == []
    assert ids(store.manager.list_consumers(bound.old)) == ids([image()])


def test_rewrap_header_only_copies_the_payload_unchecked_and_says_so(
        store: Store, bound: Bound, tmp_path: Path) -> None:
    out = tmp_path / "moved.icr"
    result = run(store, "rewrap", tampered(bound.path), out, "--add-kek", bound.new,
                 "--header-only")
    assert result.code == 0, result.err
    assert "payload: copied without authentication (--header-only)" in result.out.splitlines()
    assert out.exists()


def test_rewrap_when_the_image_is_no_longer_a_consumer_of_the_old_key(
        store: Store, bound: Bound, tmp_path: Path) -> None:
    store.manager.remove_consumer(bound.old, image())
    result = run(store, "rewrap", bound.path, tmp_path / "moved.icr", "--add-kek", bound.new,
                 "--remove-kek", bound.old)
    assert result.code == 0, result.err
    assert result.err == ""


def test_rewrap_keeps_a_new_key_consumer_that_was_there_before_when_it_fails(
        store: Store, bound: Bound, tmp_path: Path) -> None:
    store.manager.add_consumer(bound.new, image())
    result = run(store, "rewrap", tampered(bound.path), tmp_path / "moved.icr",
                 "--add-kek", bound.new)
    one_error_line(result, 1)
    assert ids(store.manager.list_consumers(bound.new)) == ids([image()])


def test_rewrap_of_an_unbound_file_registers_nothing(
        store: Store, plain: Path, tmp_path: Path) -> None:
    old, new = store.manager.create_key("old"), store.manager.create_key("new")
    path = tmp_path / "unbound.icr"
    assert run(store, "encrypt", plain, path, "--kek", old).code == 0
    result = run(store, "rewrap", path, tmp_path / "out.icr", "--add-kek", new,
                 "--remove-kek", old)
    assert result.code == 0, result.err
    assert store.manager.list_consumers(new) == []
    assert "image " not in result.out


def test_rewrap_escapes_key_ids_from_the_file(tmp_path: Path, plain: Path) -> None:
    km = LocalKeyStore(tmp_path / "keys")
    real, new = km.create_key("real"), km.create_key("new")
    hostile = "evil\u202eexe.txt"
    sink = io.BytesIO()
    envelope.encrypt(io.BytesIO(plain.read_bytes()), sink, [
        envelope.Kek("local", real, km.get_key(real)),
        envelope.Kek("local", hostile, os.urandom(32))])
    path = tmp_path / "hostile.icr"
    path.write_bytes(sink.getvalue())
    result = cli("rewrap", str(path), str(tmp_path / "out.icr"), "--add-kek", new,
                 "--key-store", str(tmp_path / "keys"))
    assert result.code == 0, result.err
    assert "\u202e" not in result.out
    assert "local:evil\\u202eexe.txt" in result.out


def test_rewrap_help_documents_header_only() -> None:
    result = cli("rewrap", "--help")
    assert result.code == 0
    assert "--header-only" in result.out and "authenticated" in result.out


"""Tests of the embedded local key store (img_crypt.keys.local)."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from img_crypt.errors import (
    ConsumerNotFoundError,
    KeyHasConsumersError,
    KeyManagerError,
    KeyNotFoundError,
)
from img_crypt.keys import local
from img_crypt.keys.base import KEK_BYTES, Consumer
from img_crypt.keys.local import KeyRecord, LocalKeyStore, default_store_path
from tests.support.cli import cli

C1 = Consumer(service="image", resource_type="image", resource_id="img-1")
C2 = Consumer(service="image", resource_type="image", resource_id="img-2")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)


def key_file(store: LocalKeyStore, key_id: str) -> Path:
    return store.path / f"{key_id}.key.json"


def consumers_file(store: LocalKeyStore, key_id: str) -> Path:
    return store.path / f"{key_id}.consumers.json"


def write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def record_bytes(key_id: str, material: bytes, **extra: object) -> bytes:
    record = {"id": key_id, "name": None, "created": "2024-01-01T00:00:00Z",
              "algorithm": "AES", "bit_length": 256,
              "key": base64.b64encode(material).decode(), **extra}
    return json.dumps(record).encode()


def key_forms(key: bytes) -> list[str]:
    return [str(key), key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
            base64.urlsafe_b64encode(key).decode(), repr(key)[2:-1]]


def assert_no_key(exc: BaseException, key: bytes) -> None:
    """No form of the key, nor any 12-character piece of its hex or base64, in the error."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    pieces = [form[i:i + 12] for form in key_forms(key)[1:5] for i in range(len(form) - 11)]
    for text in texts:
        for form in key_forms(key) + pieces:
            assert form not in text
    assert "\n" not in str(exc)


# --- create / get -----------------------------------------------------------------------


def test_create_get_round_trip(store: LocalKeyStore) -> None:
    key_id = store.create_key("first")
    key = store.get_key(key_id)
    assert isinstance(key, bytes)
    assert len(key) == KEK_BYTES
    assert store.get_key(key_id) == key
    assert LocalKeyStore(store.path).get_key(key_id) == key
    record = json.loads(key_file(store, key_id).read_text())
    assert record["id"] == key_id
    assert record["name"] == "first"
    assert record["algorithm"] == "AES"
    assert record["bit_length"] == 256
    assert base64.b64decode(record["key"]) == key
    assert datetime.fromisoformat(record["created"]).utcoffset() is not None


def test_ids_are_uuid4(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    parsed = uuid.UUID(key_id)
    assert str(parsed) == key_id
    assert parsed.version == 4


def test_two_keys_differ(store: LocalKeyStore) -> None:
    a, b = store.create_key(), store.create_key()
    assert a != b
    assert store.get_key(a) != store.get_key(b)


def test_uppercase_id_is_accepted(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    assert store.get_key(key_id.upper()) == store.get_key(key_id)


def test_kind_and_repr_hold_no_key(store: LocalKeyStore) -> None:
    assert LocalKeyStore.kind == "local"
    key_id = store.create_key()
    key = store.get_key(key_id)
    record = KeyRecord.from_json(key_file(store, key_id).read_bytes())
    for text in (repr(store), repr(record), str(record)):
        for form in key_forms(key):
            assert form not in text


# --- modes ------------------------------------------------------------------------------


@pytest.mark.usefixtures("open_umask")
def test_modes_under_permissive_umask(tmp_path: Path) -> None:
    store = LocalKeyStore(tmp_path / "a" / "b" / "keys")
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", store.path):
        assert mode_of(directory) == 0o700
    assert mode_of(key_file(store, key_id)) == 0o600
    assert mode_of(consumers_file(store, key_id)) == 0o600
    assert mode_of(store.path / ".lock") == 0o600


def test_refuses_group_readable_key_file(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    path = key_file(store, key_id)
    path.chmod(0o644)
    with pytest.raises(KeyManagerError) as info:
        store.get_key(key_id)
    assert not isinstance(info.value, KeyNotFoundError)
    assert str(path) in str(info.value)
    assert "chmod 600" in str(info.value)
    with pytest.raises(KeyManagerError, match="chmod 600"):
        store.list_keys()
    path.chmod(0o600)
    assert len(store.get_key(key_id)) == KEK_BYTES


def test_refuses_group_writable_consumer_file(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    consumers_file(store, key_id).chmod(0o620)
    with pytest.raises(KeyManagerError, match="chmod 600"):
        store.list_consumers(key_id)


def test_refuses_open_store_directory(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    store.path.chmod(0o755)
    for call in (lambda: store.get_key(key_id), store.create_key, store.list_keys):
        with pytest.raises(KeyManagerError) as info:
            call()
        assert not isinstance(info.value, KeyNotFoundError)
        assert str(store.path) in str(info.value)
        assert "chmod 700" in str(info.value)


def test_refuses_symlinked_key_file(store: LocalKeyStore, tmp_path: Path) -> None:
    key_id = store.create_key()
    path = key_file(store, key_id)
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(KeyManagerError, match="symlink") as info:
        store.get_key(key_id)
    assert not isinstance(info.value, KeyNotFoundError)


OTHER_UID = 12345


def give_away(path: Path) -> None:
    """Make ``path`` another user's; the suite runs as root, so this must work."""
    try:
        os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)
    except PermissionError:
        pytest.fail(f"cannot chown {path} to uid {OTHER_UID}: the ownership tests need root")
    assert os.lstat(path).st_uid == OTHER_UID


def assert_refused_as_not_owned(call: Callable[[], object], path: Path) -> None:
    with pytest.raises(KeyManagerError) as info:
        call()
    message = str(info.value)
    assert not isinstance(info.value, KeyNotFoundError)
    assert message == (f"{path} is owned by uid {OTHER_UID}, not by uid {os.geteuid()} "
                       f"running img-crypt; if it is yours, run: chown {os.geteuid()} {path}")


def test_refuses_a_store_directory_owned_by_another_user(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    give_away(store.path)
    for call in (lambda: store.get_key(key_id), store.create_key, store.list_keys,
                 lambda: store.add_consumer(key_id, C1), lambda: store.delete_key(key_id)):
        assert_refused_as_not_owned(call, store.path)
    assert [p.name for p in store.path.iterdir()] == [key_file(store, key_id).name]


def test_refuses_a_key_file_owned_by_another_user(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    give_away(key_file(store, key_id))
    for call in (lambda: store.get_key(key_id), store.list_keys,
                 lambda: store.list_consumers(key_id), lambda: store.add_consumer(key_id, C1)):
        assert_refused_as_not_owned(call, key_file(store, key_id))
    assert not consumers_file(store, key_id).exists()


def test_refuses_a_consumer_record_owned_by_another_user(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    give_away(consumers_file(store, key_id))
    for call in (lambda: store.list_consumers(key_id), store.list_keys,
                 lambda: store.add_consumer(key_id, C2),
                 lambda: store.remove_consumer(key_id, C1), lambda: store.delete_key(key_id)):
        assert_refused_as_not_owned(call, consumers_file(store, key_id))
    assert key_file(store, key_id).exists()


def test_the_cli_reports_a_foreign_key_file_in_one_line(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    give_away(key_file(store, key_id))

    run = cli("keys", "list", "--key-store", str(store.path))

    assert run.code == 1
    assert run.err == (f"img-crypt: error: {key_file(store, key_id)} is owned by uid "
                       f"{OTHER_UID}, not by uid {os.geteuid()} running img-crypt; if it is "
                       f"yours, run: chown {os.geteuid()} {key_file(store, key_id)}\n")


# --- store location ---------------------------------------------------------------------


def test_explicit_path_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMG_CRYPT_KEY_STORE", str(tmp_path / "env"))
    assert default_store_path() == tmp_path / "env"
    assert LocalKeyStore().path == tmp_path / "env"
    assert LocalKeyStore(None).path == tmp_path / "env"
    assert default_store_path(tmp_path / "arg") == tmp_path / "arg"
    assert LocalKeyStore(str(tmp_path / "arg")).path == tmp_path / "arg"
    key_id = LocalKeyStore().create_key()
    assert key_file(LocalKeyStore(tmp_path / "env"), key_id).exists()


def test_default_follows_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMG_CRYPT_KEY_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "img-crypt" / "keys"
    assert default_store_path() == expected
    store = LocalKeyStore()
    assert store.path == expected
    key_id = store.create_key()
    assert key_file(store, key_id).is_file()


def test_empty_store_lists_nothing_and_is_not_created(store: LocalKeyStore) -> None:
    assert store.list_keys() == []
    assert not store.path.exists()
    with pytest.raises(KeyNotFoundError):
        store.get_key(str(uuid.uuid4()))
    assert not store.path.exists()


# --- bad ids and records ----------------------------------------------------------------


BAD_IDS = ["../x", "../../etc/passwd", "", "not-a-uuid", "..", "/etc/passwd",
           "12345678-1234-1234-1234-1234567890ab/../x",
           "{12345678-1234-1234-1234-1234567890ab}",
           "urn:uuid:12345678-1234-1234-1234-1234567890ab",
           "123456781234123412341234567890ab"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_bad_ids_are_not_found_without_touching_files(
        store: LocalKeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        bad_id: str) -> None:
    store.create_key()
    write_private(tmp_path / "x.key.json", record_bytes("../x", os.urandom(32)))

    def no_fs(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"filesystem touched for id {bad_id!r}")

    monkeypatch.setattr(os, "open", no_fs)
    monkeypatch.setattr(os, "stat", no_fs)
    monkeypatch.setattr(os, "unlink", no_fs)
    calls: list[Callable[[], object]] = [
        lambda: store.get_key(bad_id), lambda: store.delete_key(bad_id, force=True),
        lambda: store.list_consumers(bad_id), lambda: store.add_consumer(bad_id, C1),
        lambda: store.remove_consumer(bad_id, C1)]
    for call in calls:
        with pytest.raises(KeyNotFoundError, match="not found in the local key store"):
            call()


def test_unknown_id_message(store: LocalKeyStore) -> None:
    store.create_key()
    missing = str(uuid.uuid4())
    with pytest.raises(KeyNotFoundError) as info:
        store.get_key(missing)
    assert str(info.value) == f"key {missing} not found in the local key store {store.path}"


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b"null"])
def test_corrupt_json(store: LocalKeyStore, content: bytes) -> None:
    key_id = store.create_key()
    write_private(key_file(store, key_id), content)
    with pytest.raises(KeyManagerError, match="corrupt") as info:
        store.get_key(key_id)
    assert not isinstance(info.value, KeyNotFoundError)
    assert "\n" not in str(info.value)


def test_truncated_record_does_not_leak_key(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    key = store.get_key(key_id)
    path = key_file(store, key_id)
    write_private(path, path.read_bytes()[:-2])
    with pytest.raises(KeyManagerError, match="corrupt") as info:
        store.get_key(key_id)
    assert_no_key(info.value, key)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_wrong_key_length(store: LocalKeyStore, length: int) -> None:
    key_id = store.create_key()
    bad = os.urandom(length)
    write_private(key_file(store, key_id), record_bytes(key_id, bad))
    with pytest.raises(KeyManagerError, match="corrupt") as info:
        store.get_key(key_id)
    assert f"{length} bytes" in str(info.value)
    if length:
        assert_no_key(info.value, bad)


@pytest.mark.parametrize("extra", [{"bit_length": 128}, {"algorithm": "DES"},
                                   {"key": "not base64!"}, {"id": str(uuid.uuid4())},
                                   {"created": "2024-01-01T00:00:00"}, {"surprise": 1}])
def test_invalid_fields(store: LocalKeyStore, extra: dict[str, object]) -> None:
    key_id = store.create_key()
    key = os.urandom(32)
    write_private(key_file(store, key_id), record_bytes(key_id, key, **extra))
    with pytest.raises(KeyManagerError, match="corrupt") as info:
        store.get_key(key_id)
    assert_no_key(info.value, key)


# --- consumers --------------------------------------------------------------------------


def test_consumers_add_list_remove(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    before = key_file(store, key_id).read_bytes()
    inode = os.stat(key_file(store, key_id)).st_ino
    assert store.list_consumers(key_id) == []
    store.add_consumer(key_id, C1)
    store.add_consumer(key_id, C1)
    assert store.list_consumers(key_id) == [C1]
    store.add_consumer(key_id, C2)
    assert store.list_consumers(key_id) == [C1, C2]
    assert LocalKeyStore(store.path).list_consumers(key_id) == [C1, C2]
    assert key_file(store, key_id).read_bytes() == before
    assert os.stat(key_file(store, key_id)).st_ino == inode
    store.remove_consumer(key_id, C1)
    assert store.list_consumers(key_id) == [C2]
    with pytest.raises(ConsumerNotFoundError):
        store.remove_consumer(key_id, C1)
    assert store.list_consumers(key_id) == [C2]


def test_consumers_are_per_key(store: LocalKeyStore) -> None:
    a, b = store.create_key(), store.create_key()
    store.add_consumer(a, C1)
    assert store.list_consumers(b) == []
    with pytest.raises(ConsumerNotFoundError):
        store.remove_consumer(b, C1)


def test_consumers_of_unknown_key(store: LocalKeyStore) -> None:
    store.create_key()
    missing = str(uuid.uuid4())
    with pytest.raises(KeyNotFoundError):
        store.list_consumers(missing)
    with pytest.raises(KeyNotFoundError):
        store.add_consumer(missing, C1)
    with pytest.raises(KeyNotFoundError):
        store.remove_consumer(missing, C1)
    assert not consumers_file(store, missing).exists()


def _add_many(path: str, key_id: str, worker: int) -> None:
    store = LocalKeyStore(path)
    for i in range(10):
        store.add_consumer(key_id, Consumer(service="image", resource_type="image",
                                            resource_id=f"w{worker}-{i}"))


def test_concurrent_add_consumer_loses_nothing(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(str(store.path), key_id, w)) for w in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert len(store.list_consumers(key_id)) == 60


# --- delete -----------------------------------------------------------------------------


def test_delete_with_consumers_refused_then_forced(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    key = store.get_key(key_id)
    store.add_consumer(key_id, C1)
    store.add_consumer(key_id, C2)
    with pytest.raises(KeyHasConsumersError, match="2 consumer") as info:
        store.delete_key(key_id)
    assert_no_key(info.value, key)
    assert store.get_key(key_id) == key
    assert store.list_consumers(key_id) == [C1, C2]
    store.delete_key(key_id, force=True)
    assert not key_file(store, key_id).exists()
    assert not consumers_file(store, key_id).exists()
    with pytest.raises(KeyNotFoundError):
        store.get_key(key_id)
    with pytest.raises(KeyNotFoundError):
        store.list_consumers(key_id)


def test_delete_without_consumers(store: LocalKeyStore) -> None:
    a, b = store.create_key(), store.create_key()
    store.add_consumer(a, C1)
    store.remove_consumer(a, C1)
    store.delete_key(a)
    assert [info.key_id for info in store.list_keys()] == [b]
    with pytest.raises(KeyNotFoundError):
        store.delete_key(a)


def test_delete_unknown(store: LocalKeyStore) -> None:
    with pytest.raises(KeyNotFoundError):
        store.delete_key(str(uuid.uuid4()))
    store.create_key()
    with pytest.raises(KeyNotFoundError):
        store.delete_key(str(uuid.uuid4()), force=True)


# --- list -------------------------------------------------------------------------------


def test_list_keys_sorted_by_creation(store: LocalKeyStore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC),
                  datetime(2024, 2, 1, tzinfo=UTC)])

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return next(times)

    monkeypatch.setattr(local, "datetime", FakeDatetime)
    march, january, february = (store.create_key(n) for n in ("march", "january", "february"))
    store.add_consumer(february, C1)
    store.add_consumer(february, C2)
    store.add_consumer(march, C1)
    infos = store.list_keys()
    assert [i.key_id for i in infos] == [january, february, march]
    assert [i.name for i in infos] == ["january", "february", "march"]
    assert [i.consumers for i in infos] == [0, 2, 1]
    assert infos[0].created == datetime(2024, 1, 1, tzinfo=UTC)
    dumped = json.dumps([i.to_json() for i in infos])
    for key_id in (march, january, february):
        for form in key_forms(store.get_key(key_id)):
            assert form not in dumped


# --- atomic writes ----------------------------------------------------------------------


def leftovers(store: LocalKeyStore) -> list[str]:
    return sorted(p.name for p in store.path.iterdir()
                  if not p.name.endswith((".key.json", ".consumers.json")) and p.name != ".lock")


def test_no_temp_file_after_success(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    store.remove_consumer(key_id, C1)
    assert leftovers(store) == []
    assert sorted(p.name for p in store.path.iterdir()) == sorted(
        [".lock", f"{key_id}.key.json", f"{key_id}.consumers.json"])


def test_crash_at_rename_leaves_nothing(store: LocalKeyStore,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store.path.mkdir(mode=0o700)

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "simulated crash")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(KeyManagerError, match="simulated crash"):
            store.create_key()
    assert list(store.path.iterdir()) == []
    assert store.list_keys() == []


def test_crash_during_fsync_leaves_nothing(store: LocalKeyStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    before = consumers_file(store, key_id).read_bytes()

    def crash(fd: int) -> None:
        raise OSError(5, "simulated crash")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", crash)
        with pytest.raises(KeyManagerError):
            store.add_consumer(key_id, C2)
        with pytest.raises(KeyManagerError):
            store.create_key()
    assert leftovers(store) == []
    assert consumers_file(store, key_id).read_bytes() == before
    assert [i.key_id for i in store.list_keys()] == [key_id]


def test_interrupt_during_write_cleans_temp(store: LocalKeyStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store.path.mkdir(mode=0o700)

    def interrupt(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "replace", interrupt)
        with pytest.raises(KeyboardInterrupt):
            store.create_key()
    assert list(store.path.iterdir()) == []


# --- no key material in errors ----------------------------------------------------------


def test_error_messages_never_contain_key(store: LocalKeyStore) -> None:
    key_id = store.create_key()
    key = store.get_key(key_id)
    path = key_file(store, key_id)
    store.add_consumer(key_id, C1)
    errors: list[BaseException] = []

    def capture(call: Callable[[], object]) -> None:
        with pytest.raises(KeyManagerError) as info:
            call()
        errors.append(info.value)

    capture(lambda: store.delete_key(key_id))
    capture(lambda: store.remove_consumer(key_id, C2))
    capture(lambda: store.get_key(str(uuid.uuid4())))
    path.chmod(0o640)
    capture(lambda: store.get_key(key_id))
    path.chmod(0o600)
    original = path.read_bytes()
    wrapped = json.loads(original)
    wrapped["key"] = [wrapped["key"]]
    damages = (original[:-1], original.replace(b'"AES"', b'"AES2"'),
               original.replace(b'"bit_length":256', b'"bit_length":"x"'), original + b"garbage",
               json.dumps(wrapped).encode())
    for damaged in damages:
        write_private(path, damaged)
        capture(lambda: store.get_key(key_id))
    assert len(errors) == 9
    for exc in errors:
        assert_no_key(exc, key)

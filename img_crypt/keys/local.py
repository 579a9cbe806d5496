"""The embedded local key store: KEKs as private JSON files in one directory.

Layout (directory mode 0700, files mode 0600, all owned by the user running img-crypt;
symlinked files are refused)::

    <dir>/<uuid>.key.json        KeyRecord: id, name, created (UTC), AES, 256, key (base64)
    <dir>/<uuid>.consumers.json  ConsumerRecord: the key's consumers (absent means none),
                                 each with the time it was registered (older records: none)
    <dir>/.lock                  flock(2) guard of consumer read-modify-write and deletes

Writes go through :func:`img_crypt._atomic.write_file` (``.<name>.<8 hex>.tmp`` in the same
directory, mode 0600, fsynced, renamed, directory fsynced): a crash never leaves a
half-written record under a final name. The directory is the ``path`` argument, else
``$IMG_CRYPT_KEY_STORE``, else ``platformdirs.user_data_path("img-crypt") / "keys"``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from img_crypt._atomic import fsync_dir, write_file
from img_crypt.errors import (
    ConsumerNotFoundError,
    KeyHasConsumersError,
    KeyManagerError,
    KeyNotFoundError,
)
from img_crypt.keys.base import KEK_BYTES, Consumer, KeyInfo, KeyManager

ENV_VAR = "IMG_CRYPT_KEY_STORE"
"""Environment variable naming the store directory when no path is given."""

_KEY_SUFFIX, _CONSUMERS_SUFFIX = ".key.json", ".consumers.json"
_MAX_RECORD = 1 << 20


_NOT_JSON = object()


class _Corrupt(ValueError):
    """A record that does not have the expected fields; the text names fields, never values."""


def _fields(raw: bytes, expected: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Decode a JSON object whose keys and value types are exactly ``expected``."""
    data: Any = _NOT_JSON
    with contextlib.suppress(ValueError, RecursionError):  # not ``raise from`` in a handler:
        data = json.loads(raw)  # the decoder's error (``doc``) holds the record, key and all
    if data is _NOT_JSON:
        raise _Corrupt("not valid JSON")
    if not isinstance(data, dict):
        raise _Corrupt("not a JSON object")
    bad = sorted(set(data) ^ set(expected))
    bad += sorted(k for k, kinds in expected.items() if k in data
                  and (not isinstance(data[k], kinds) or isinstance(data[k], bool)))
    if bad:
        raise _Corrupt(f"invalid field(s) {', '.join(bad)}")
    return data


@dataclass(frozen=True)
class KeyRecord:
    """The on-disk record of one KEK (``<uuid>.key.json``): AES-256, base64 ``key``."""

    id: str
    created: datetime
    key: str = field(repr=False)
    name: str | None = None

    def to_json(self) -> bytes:
        """The record as written to disk."""
        return json.dumps({"id": self.id, "name": self.name,
                           "created": _stamp(self.created),
                           "algorithm": "AES", "bit_length": 256, "key": self.key},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeyRecord:
        """Parse and check a record; ``_Corrupt`` names the offending fields only."""
        data = _fields(raw, {"id": str, "name": (str, type(None)), "created": str,
                             "algorithm": str, "bit_length": int, "key": str})
        bad = [k for k, want in (("algorithm", "AES"), ("bit_length", 256)) if data[k] != want]
        created = _parse_stamp(data["created"])
        if created is None:
            bad.append("created")
        if bad or created is None:
            raise _Corrupt(f"invalid field(s) {', '.join(bad)}")
        return cls(id=data["id"], name=data["name"], created=created, key=data["key"])


@dataclass(frozen=True)
class ConsumerRecord:
    """The on-disk consumer list of one KEK (``<uuid>.consumers.json``)."""

    key_id: str
    consumers: list[Consumer]

    def to_json(self) -> bytes:
        """The record as written to disk."""
        consumers = [c.to_dict() | ({"created": _stamp(c.created)} if c.created else {})
                     for c in self.consumers]
        return json.dumps({"key_id": self.key_id, "consumers": consumers},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ConsumerRecord:
        """Parse and check a record; ``_Corrupt`` names the offending fields only.

        A consumer without ``created`` (written before the store recorded it) reads as None.
        """
        data = _fields(raw, {"key_id": str, "consumers": list})
        try:
            consumers = [_consumer(c) for c in data["consumers"]]
        except (TypeError, ValueError):
            raise _Corrupt("invalid field(s) consumers") from None
        return cls(key_id=data["key_id"], consumers=consumers)


def _consumer(entry: dict[str, Any]) -> Consumer:
    """One consumer of a ConsumerRecord; TypeError or ValueError when it is not one."""
    fields = dict(entry)
    stamp = fields.pop("created", None)
    created = None if stamp is None else _parse_stamp(stamp)
    if stamp is not None and created is None:
        raise ValueError("invalid created")
    return Consumer(**fields, created=created)


def _stamp(when: datetime) -> str:
    """A UTC time as the records spell it (ISO 8601, ``Z``)."""
    return when.isoformat().replace("+00:00", "Z")


def _parse_stamp(text: object) -> datetime | None:
    """The time of a record field; None unless it is ISO 8601 text with a time zone."""
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def default_store_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the store directory: ``path``, else ``$IMG_CRYPT_KEY_STORE``, else XDG data."""
    if path is not None:
        return Path(path).expanduser()
    if env := os.environ.get(ENV_VAR):
        return Path(env).expanduser()
    import platformdirs  # only here: it imports tempfile, shutil, bz2 and lzma

    return platformdirs.user_data_path("img-crypt") / "keys"


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


@contextlib.contextmanager
def _os_errors(action: str, path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise KeyManagerError(f"cannot {action} {path}: {exc.strerror or exc}") from exc


def _check_private(path: Path, st: os.stat_result, fix: str) -> None:
    """Refuse a store entry that another user owns or may reach (as ssh refuses keys)."""
    if st.st_uid != (me := os.geteuid()):
        raise KeyManagerError(f"{path} is owned by uid {st.st_uid}, not by uid {me} running "
                              f"img-crypt; if it is yours, run: chown {me} {path}")
    if st.st_mode & 0o077:
        raise KeyManagerError(f"{path} is accessible by group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod {fix} {path}")


def _read_private(path: Path) -> bytes | None:
    """Return the contents of a private regular file, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyManagerError(f"refusing symlink {path}; replace it with a regular file "
                                  "(mode 0600)") from None
        raise KeyManagerError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh, _os_errors("read", path):
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyManagerError(f"{path} is not a regular file")
        _check_private(path, st, "600")
        return fh.read(_MAX_RECORD)


def _write_atomic(path: Path, data: bytes) -> None:
    """Publish ``data`` as ``path`` (mode 0600 from the first byte), durably."""
    with _os_errors("write", path):
        write_file(path, data)


_R = TypeVar("_R", "KeyRecord", "ConsumerRecord")


def _parse(record: type[_R], path: Path, raw: bytes) -> _R:
    try:
        return record.from_json(raw)
    except _Corrupt as exc:  # names fields, never values: a value may be the key
        raise KeyManagerError(f"corrupt key store record {path}: {exc}") from None


class LocalKeyStore(KeyManager):
    """KEKs kept as 0600 JSON files in a 0700 directory on this machine.

    ``LocalKeyStore(None)`` uses :func:`default_store_path`, so a CLI can pass its
    ``--key-store DIR`` option (or None) straight through.
    """

    kind: ClassVar[str] = "local"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = default_store_path(path)

    def _key_path(self, key_id: str, suffix: str = _KEY_SUFFIX) -> Path:
        return self.path / f"{key_id}{suffix}"

    def _not_found(self, key_id: str) -> KeyNotFoundError:
        return KeyNotFoundError(f"key {key_id} not found in the local key store {self.path}")

    def _valid_id(self, key_id: str) -> str:
        if not _is_uuid(canonical := str(key_id).lower()):
            raise self._not_found(key_id)
        return canonical

    def _check_dir(self, *, create: bool = False) -> bool:
        """Check that the store directory is private (creating it 0700); return if it exists."""
        if create:  # every missing directory, parents included, is made exactly 0700
            for directory in reversed([p for p in (self.path, *self.path.parents)
                                       if not p.exists()]):
                with _os_errors("create", directory), contextlib.suppress(FileExistsError):
                    os.mkdir(directory, 0o700)
                    os.chmod(directory, 0o700)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise KeyManagerError(f"cannot access key store {self.path}: {exc.strerror}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise KeyManagerError(f"key store {self.path} is not a directory")
        _check_private(self.path, st, "700")
        return True

    @contextlib.contextmanager
    def _locked(self, key_id: str) -> Iterator[None]:
        """Hold the store lock while ``key_id`` exists; KeyNotFoundError if it does not."""
        if not self._check_dir():
            raise self._not_found(key_id)
        lock = self.path / ".lock"
        with _os_errors("open lock file", lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not os.path.lexists(self._key_path(key_id)):
                raise self._not_found(key_id)
            yield
        finally:
            os.close(fd)

    def _load_key(self, key_id: str) -> tuple[KeyRecord, bytes]:
        path = self._key_path(key_id)
        raw = _read_private(path) if self._check_dir() else None
        if raw is None:
            raise self._not_found(key_id)
        record = _parse(KeyRecord, path, raw)
        try:
            key = base64.b64decode(record.key, validate=True)
        except (binascii.Error, ValueError):
            raise KeyManagerError(f"corrupt key store record {path}: key is not base64") from None
        if len(key) != KEK_BYTES or record.id != key_id:
            what = "id does not match" if record.id != key_id else f"key is {len(key)} bytes"
            raise KeyManagerError(f"corrupt key store record {path}: {what}")
        return record, key

    def _load_consumers(self, key_id: str) -> list[Consumer]:
        path = self._key_path(key_id, _CONSUMERS_SUFFIX)
        raw = _read_private(path)
        if raw is None:
            return []
        record = _parse(ConsumerRecord, path, raw)
        if record.key_id != key_id:
            raise KeyManagerError(f"corrupt key store record {path}: key_id does not match")
        return record.consumers

    def _save_consumers(self, key_id: str, consumers: list[Consumer]) -> None:
        record = ConsumerRecord(key_id=key_id, consumers=consumers)
        _write_atomic(self._key_path(key_id, _CONSUMERS_SUFFIX), record.to_json())

    @property
    def delete_is_atomic(self) -> bool:
        """True: the consumer check and the unlink happen under the store lock."""
        return True

    def create_key(self, name: str | None = None) -> str:
        """Create a new random 256-bit KEK and return its id (a UUID4 string)."""
        self._check_dir(create=True)
        key_id = str(uuid.uuid4())
        # os.urandom is what secrets.token_bytes calls; the secrets module imports random
        key = base64.b64encode(os.urandom(KEK_BYTES)).decode("ascii")
        record = KeyRecord(id=key_id, name=name, created=datetime.now(UTC), key=key)
        _write_atomic(self._key_path(key_id), record.to_json())
        return key_id

    def get_key(self, key_id: str) -> bytes:
        """Return the 32 bytes of the KEK ``key_id``."""
        return self._load_key(self._valid_id(key_id))[1]

    def delete_key(self, key_id: str, *, force: bool = False) -> None:
        """Delete a KEK and its consumer record; without ``force`` refuse while it has any."""
        key_id = self._valid_id(key_id)
        with self._locked(key_id):
            count = len(self._load_consumers(key_id))
            if count and not force:
                raise KeyHasConsumersError(f"key {key_id} has {count} consumer(s); remove them "
                                           "first or delete with force")
            with _os_errors("delete", self._key_path(key_id)):
                os.unlink(self._key_path(key_id))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._key_path(key_id, _CONSUMERS_SUFFIX))
                fsync_dir(self.path)

    def list_keys(self) -> list[KeyInfo]:
        """List the keys in the store, oldest first (never their bytes)."""
        if not self._check_dir():
            return []
        infos: list[KeyInfo] = []
        for entry in self.path.glob(f"*{_KEY_SUFFIX}"):
            key_id = entry.name.removesuffix(_KEY_SUFFIX)
            if not _is_uuid(key_id):
                continue
            with contextlib.suppress(KeyNotFoundError):  # deleted while we were listing
                record = self._load_key(key_id)[0]
                infos.append(KeyInfo(key_id=key_id, name=record.name, created=record.created,
                                     consumers=len(self._load_consumers(key_id))))
        return sorted(infos, key=lambda info: (info.created, info.key_id))

    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        """Register ``consumer`` on ``key_id``; registering twice is not an error."""
        key_id = self._valid_id(key_id)
        with self._locked(key_id):
            self._load_key(key_id)
            consumers = self._load_consumers(key_id)
            if consumer not in consumers:
                stamped = dataclasses.replace(consumer,
                                              created=datetime.fromtimestamp(time.time(), UTC))
                self._save_consumers(key_id, [*consumers, stamped])

    def remove_consumer(self, key_id: str, consumer: Consumer) -> None:
        """Remove ``consumer`` from ``key_id``; an unknown consumer is ``ConsumerNotFoundError``."""
        key_id = self._valid_id(key_id)
        with self._locked(key_id):
            self._load_key(key_id)
            consumers = self._load_consumers(key_id)
            if consumer not in consumers:
                raise ConsumerNotFoundError(f"consumer {consumer.service}/{consumer.resource_type}"
                                            f"/{consumer.resource_id} not found on key {key_id}")
            self._save_consumers(key_id, [c for c in consumers if c != consumer])

    def list_consumers(self, key_id: str) -> list[Consumer]:
        """Return every consumer of ``key_id``."""
        key_id = self._valid_id(key_id)
        self._load_key(key_id)
        return self._load_consumers(key_id)

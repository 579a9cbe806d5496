"""Secrets hygiene (issue 6): no DEK or KEK byte reaches a log record, an error or an output.

How: the ``watch`` fixture forces every logger on (``Logger.isEnabledFor`` answers True for
every logger at every level, so keystoneauth, urllib3, barbicanclient, stevedore, taskflow,
oslo and loggers anyone silenced all build their records) and captures every record at
``Logger.handle``. CLI commands run with ``--debug``. It also records every secret that passes
through the process: the DEK at ``_keyslots.seal`` and ``open_dek``, each KEK returned by
``LocalKeyStore.get_key`` and ``BarbicanKeyManager.get_key``, and every ``secrets.token_bytes``
value (new local keys, locally generated Barbican keys). Scanned afterwards: each record's
message, ``args``, formatted traceback and stack; each error the CLI reported (``_fail``),
each exception a call raised and each one logged with ``exc_info``, with its whole
``__cause__``/``__context__`` chain: ``str``, ``repr``, attributes and formatted traceback; the
CLI's stdout and stderr (``inspect --json`` included). Forms searched (8): raw (latin-1 text),
bytes-literal escapes, hex, HEX, base64 and urlsafe base64 each with and without padding; plus
every 16-character piece of the hex (case-insensitively) and base64 forms and every
10-character piece of the raw form.

30 tests:

- 1 self-check: the scanner finds a key in each of the 8 forms and as a 16-character piece,
  in a silenced logger's record, in a suppressed ``__context__`` and in stdout.
- 4 CLI workflows, one per key manager: local store, barbican_mock 2026.2 and yoga, real
  Barbican 23 (25 commands each): keys create/list (text and --json)/consumers (text and
  --json)/delete, encrypt (named key with --image-id, new key), inspect (text and --json),
  decrypt (whole and --range), rewrap add and remove; failures: delete refused (consumers),
  tampered header MAC, tampered payload, truncated file, wrong image id, output exists (the new
  key rolled back), removing an absent slot, decrypt after the key was deleted.
- 1 local store failures (8 commands): wrong key (same id, other bytes), group-readable key
  record, corrupt (truncated) record.
- 2 Barbican requests carrying key bytes (mock, real; 5 commands each): keys created by POSTing
  a locally generated key (orders failing), and a text/plain secret given as ``--kek``
  (refused without fetching it).
- 1 barbican_mock faults (5 commands): a 503 burst (retried), 503s until the retries run out
  (decrypt, rewrap), refused consumer registration (new key, named key).
- 1 ``--debug``: documented in ``--help``, DEBUG records on stderr, the failure's traceback,
  the root logger restored afterwards, nothing on stderr without it.
- 1 logging configured as oslo.log's ``log_config_append`` would (``dictConfig`` naming
  ``img_crypt``, in a subprocess): the POST of a locally generated key is not logged.
- 4 Glance plugin imports through a taskflow engine (local, mock): success, and a later task
  failing so that the engine reverts EncryptImage; 1 with mock failures: refused consumer,
  Barbican 503s, 503s with require_encryption = False (plaintext fallback).
- 3 delete hook: ``on_image_delete`` (local, mock) and its repeat; the notifier driver (mock):
  success, Barbican 503s (logged error), refused consumer removal (logged error, and raised by
  ``on_image_delete``), a malformed payload (logged traceback).
- 11 key-store modes not in test_keystore_local.py: key and consumer records readable by group
  alone or by world alone (0640, 0604) refused by every call that reads them (4); directories
  open to group alone or world alone (0750, 0705, 0710, 0701) refused (4); a symlinked consumer
  record refused; the temp file of a new key or consumer record is 0600 from its creation under
  umask 000; the CLI reports a group-readable record in one line without the key.

Leaks found and fixed with these tests (each test fails without its fix): the secret POST was
kept out of keystoneauth's DEBUG log by a logger silenced with its level, which
``logging.config`` resets for every child of a logger it configures (oslo.log's
``log_config_append``, any ``dictConfig`` naming ``img_crypt``): the new key's base64 was
logged; now ``log=False``. ``BarbicanKeyManager.get_key`` fetched payloads through
python-barbicanclient, whose requests keystoneauth logs with the body when the server labels it
text: a text/plain secret given as ``--kek`` was logged, then refused; non-binary secrets are
now refused from their metadata and payloads fetched with ``log=False``. A corrupt local
record's ``json.JSONDecodeError`` (its ``doc``: the whole record, key included) stayed
reachable as the error's ``__context__.__context__``; it is no longer chained.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from taskflow import engines
from taskflow import task as tf_task
from taskflow.patterns import linear_flow

import img_crypt.cli
from barbican_mock import MockBarbican
from img_crypt import _keyslots
from img_crypt.errors import ForbiddenError, KeyManagerError
from img_crypt.glance import keys as glance_keys
from img_crypt.glance import lifecycle, notifier
from img_crypt.glance import properties as props
from img_crypt.keys import connect as connect_module
from img_crypt.keys import naming
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore
from tests.support.backends import PROJECT, Backend, open_backend
from tests.support.cli import Run, cli
from tests.support.glance_import import Import, glance_conf, make_conf, using

REPO = Path(__file__).resolve().parent.parent
PIECE, RAW_PIECE = 16, 10
UUID_LEN = 36


# --- the scanner ------------------------------------------------------------------------------

def text_forms(secret: bytes) -> dict[str, str]:
    """The 8 whole forms a secret could be written in."""
    b64, url = base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode()
    return {"raw": secret.decode("latin-1"), "escaped": repr(secret)[2:-1],
            "hex": secret.hex(), "HEX": secret.hex().upper(), "base64": b64,
            "base64-unpadded": b64.rstrip("="), "urlsafe": url, "urlsafe-unpadded": url.rstrip("=")}


def needles(secret: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, needle) pairs to find in the text as is, and in the lower-cased text."""
    forms = text_forms(secret)
    exact = [(name, form) for name, form in forms.items() if name.lower() != "hex"]
    lowered = [("hex/HEX", forms["hex"])]
    for name in ("base64-unpadded", "urlsafe-unpadded"):
        form = forms[name]
        exact += [(f"{name}[{i}:{i + PIECE}]", form[i:i + PIECE])
                  for i in range(len(form) - PIECE + 1)]
    raw = forms["raw"]
    exact += [(f"raw[{i}:{i + RAW_PIECE}]", raw[i:i + RAW_PIECE])
              for i in range(len(raw) - RAW_PIECE + 1)]
    hexed = forms["hex"]
    lowered += [(f"hex[{i}:{i + PIECE}]", hexed[i:i + PIECE])
                for i in range(len(hexed) - PIECE + 1)]
    return exact, lowered


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception reachable through __cause__, __context__ and groups."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [c for c in (e.__cause__, e.__context__) if c is not None]
        if isinstance(e, BaseExceptionGroup):
            stack += list(e.exceptions)


def exception_texts(error: BaseException) -> list[str]:
    texts = []
    for e in exception_chain(error):
        texts += [str(e), repr(e), repr(getattr(e, "__dict__", {})), repr(e.args),
                  "".join(traceback.format_exception(e))]
    return texts


def record_texts(record: logging.LogRecord) -> list[str]:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = f"{record.msg!r} % {record.args!r}"
    texts = [message, repr(record.msg), repr(record.args), record.stack_info or ""]
    if record.exc_info and record.exc_info[1] is not None:
        texts.append(logging.Formatter().formatException(record.exc_info))
        texts += exception_texts(record.exc_info[1])
    return texts


@dataclass
class Watch:
    """Everything said while a scenario ran, and every secret that was in the process."""

    records: list[logging.LogRecord] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    secrets: dict[bytes, set[str]] = field(default_factory=dict)
    commands: int = 0

    def secret(self, label: str, value: bytes) -> None:
        if len(value) >= 16:
            self.secrets.setdefault(bytes(value), set()).add(label)

    def labels(self) -> set[str]:
        return set().union(*self.secrets.values())

    def run(self, *argv: str | Path) -> Run:
        args = ["--debug", *map(str, argv)]
        run = cli(*args)
        self.commands += 1
        self.outputs += [(f"stdout of {args}", run.out), (f"stderr of {args}", run.err)]
        return run

    def ok(self, *argv: str | Path) -> Run:
        run = self.run(*argv)
        assert run.code == 0, run.err[-2000:]
        return run

    def fails(self, expected: str, *argv: str | Path, code: int = 1) -> Run:
        run = self.run(*argv)
        assert run.code == code, run.err[-2000:]
        assert run.err.splitlines()[-1].startswith("img-crypt: error: ")
        assert expected in run.err.splitlines()[-1], run.err.splitlines()[-1]
        return run

    def raised(self, error: BaseException) -> None:
        self.errors.append(error)

    def texts(self) -> list[tuple[str, str]]:
        out = list(self.outputs)
        for record in self.records:
            out += [(f"log record {record.name} {record.levelname}", t)
                    for t in record_texts(record)]
        for error in self.errors:
            out += [(f"exception {type(error).__name__}", t) for t in exception_texts(error)]
        return out

    def leaks(self) -> list[str]:
        """Where a form of a recorded secret appears, if anywhere."""
        texts = self.texts()
        joined = "\n\0\n".join(t for _, t in texts)
        lowered = joined.lower()
        found = []
        for secret, labels in self.secrets.items():
            label = " / ".join(sorted(labels))
            exact, lower = needles(secret)
            for (name, needle), haystack in [(n, joined) for n in exact] + \
                    [(n, lowered) for n in lower]:
                if needle in haystack:
                    where = next(w for w, t in texts if needle in (t.lower() if haystack is
                                                                   lowered else t))
                    found.append(f"{label} as {name} in {where}")
        return found

    def assert_clean(self, *, min_secrets: int = 1) -> None:
        assert len(self.secrets) >= min_secrets, "too few secrets seen: the scan proves little"
        assert self.records or self.outputs, "nothing said: the scan proves nothing"
        leaks = self.leaks()
        assert not leaks, "\n".join(leaks[:20])
        loggers = sorted({r.name for r in self.records})
        print(f"scanned: {self.commands} commands, {len(self.records)} records from "
              f"{len(loggers)} loggers, {len(self.texts())} texts, {len(self.secrets)} secrets "
              f"x {sum(map(len, needles(bytes(32))))} needles; loggers: {loggers}")


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    w = Watch()
    real_handle = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        w.records.append(record)
        real_handle(self, record)

    monkeypatch.setattr(logging.Logger, "isEnabledFor", lambda self, level: True)
    monkeypatch.setattr(logging.Logger, "handle", handle)

    real_seal, real_open = _keyslots.seal, _keyslots.open_dek

    def seal(dek: bytes, *args: Any, **kwargs: Any) -> Any:
        w.secret("a DEK", dek)
        return real_seal(dek, *args, **kwargs)

    def open_dek(*args: Any, **kwargs: Any) -> bytes:
        dek = real_open(*args, **kwargs)
        w.secret("a DEK", dek)
        return dek

    monkeypatch.setattr(_keyslots, "seal", seal)
    monkeypatch.setattr(_keyslots, "open_dek", open_dek)
    for cls in (LocalKeyStore, BarbicanKeyManager):
        real_get = cls.get_key

        def get_key(self: KeyManager, key_id: str,
                    _real: Callable[[Any, str], bytes] = real_get) -> bytes:
            key = _real(self, key_id)
            w.secret(f"KEK {self.kind}:{key_id}", key)
            return key

        monkeypatch.setattr(cls, "get_key", get_key)
    real_token = secrets.token_bytes

    def token_bytes(n: int | None = None) -> bytes:
        value = real_token(n)
        w.secret("a new KEK (token_bytes)", value)
        return value

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    real_fail = img_crypt.cli._fail

    def fail(error: BaseException) -> int:
        w.raised(error)
        return real_fail(error)

    monkeypatch.setattr(img_crypt.cli, "_fail", fail)
    yield w


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Barbican managers the CLI and Glance build retry as often, without sleeping."""
    fast = functools.partial(BarbicanKeyManager, backoff=0)
    monkeypatch.setattr(connect_module, "BarbicanKeyManager", fast)
    monkeypatch.setattr(glance_keys, "BarbicanKeyManager", fast)


def test_the_scanner_finds_every_form(watch: Watch) -> None:
    key = os.urandom(32)
    watch.secret("the canary", key)
    silenced = logging.getLogger(f"img_crypt.tests.silenced-{uuid.uuid4().hex}")
    silenced.setLevel(logging.CRITICAL + 1)
    silenced.propagate = False
    for form in text_forms(key).values():
        watch.records.clear()
        silenced.debug("body %s", form)
        assert len(watch.leaks()) >= 1
    watch.records.clear()
    hexed = key.hex().upper()
    silenced.debug("truncated ...%s...", hexed[7:7 + PIECE])
    assert watch.leaks()
    watch.records.clear()
    try:
        try:
            raise ValueError(base64.urlsafe_b64encode(key)[3:3 + PIECE].decode())
        except ValueError:
            raise KeyManagerError("clean message") from None
    except KeyManagerError as e:
        watch.raised(e)
    assert watch.leaks()
    watch.errors.clear()
    watch.outputs.append(("stdout", repr(key)))
    assert watch.leaks()


# --- CLI workflows ----------------------------------------------------------------------------

@dataclass
class Target:
    """Where the CLI's keys live, and an independent client of it."""

    name: str
    options: list[str]
    manager: KeyManager
    mock: MockBarbican | None = None
    url: str = ""
    project: str = ""


def barbican_target(name: str, url: str, project: str,
                    mock: MockBarbican | None = None) -> Target:
    return Target(name, ["--key-manager", "barbican", "--barbican-url", url,
                         "--project-id", project],
                  connect(url=url, project_id=project, backoff=0), mock, url, project)


@pytest.fixture(params=["local", "mock-2026.2", "mock-yoga", "real"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    project = f"hygiene-{uuid.uuid4().hex[:8]}"
    if request.param == "local":
        store = tmp_path / "keys"
        yield Target("local", ["--key-store", str(store)], LocalKeyStore(store))
    elif request.param == "real":
        url = request.getfixturevalue("real_barbican").url
        yield barbican_target("real", url, project)
    else:
        with MockBarbican(era=request.param.removeprefix("mock-")) as mock:
            yield barbican_target(request.param, mock.url, project, mock)


@pytest.fixture(params=["mock-2026.2", "real"])
def barbican(request: pytest.FixtureRequest) -> Iterator[Target]:
    project = f"hygiene-{uuid.uuid4().hex[:8]}"
    if request.param == "real":
        yield barbican_target("real", request.getfixturevalue("real_barbican").url, project)
        return
    with MockBarbican(era="2026.2") as mock:
        yield barbican_target(request.param, mock.url, project, mock)


@pytest.fixture
def mock_target() -> Iterator[Target]:
    with MockBarbican(era="2026.2") as mock:
        yield barbican_target("mock-2026.2", mock.url, PROJECT, mock)


def new_key_of(run: Run) -> str:
    line = next(line for line in run.out.splitlines() if line.endswith("(new)"))
    return line.split(":", 2)[2].split()[0]


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def test_cli_workflow_logs_and_prints_no_key(watch: Watch, target: Target,
                                             tmp_path: Path) -> None:
    o, t = target.options, tmp_path
    plain = t / "plain.raw"
    plain.write_bytes(os.urandom(3 * 16384 + 77))
    image, other = str(uuid.uuid4()), str(uuid.uuid4())
    k1 = watch.ok("keys", "create", "--name", "hygiene", *o).out.strip()
    k2 = watch.ok("keys", "create", *o).out.strip()
    assert len(k1) == len(k2) == UUID_LEN
    watch.ok("keys", "list", *o)
    watch.ok("keys", "list", "--json", *o)
    watch.ok("encrypt", plain, t / "a.icr", "--kek", k1, "--image-id", image, *o)
    k3 = new_key_of(watch.ok("encrypt", plain, t / "b.icr", *o))
    watch.ok("inspect", t / "a.icr")
    info = json.loads(watch.ok("inspect", "--json", t / "a.icr").out)
    assert [s["key_id"] for s in info["key_slots"]] == [k1]
    watch.ok("decrypt", t / "a.icr", t / "a.out", "--image-id", image, *o)
    assert (t / "a.out").read_bytes() == plain.read_bytes()
    watch.ok("decrypt", t / "b.icr", t / "b.part", "--range", "100:20000", *o)
    watch.ok("rewrap", t / "a.icr", t / "c.icr", "--add-kek", k2, *o)
    watch.ok("rewrap", t / "c.icr", t / "d.icr", "--remove-kek", k1, *o)
    watch.ok("keys", "consumers", k1, *o)
    watch.ok("keys", "consumers", "--json", k1, *o)
    watch.fails("consumer", "keys", "delete", k2, *o)  # rewrap moved the image from k1 to k2
    data, header = (t / "a.icr").read_bytes(), info["header_size"]
    (t / "mac.icr").write_bytes(flipped(data, header - 1))
    (t / "payload.icr").write_bytes(flipped(data, header + 100))
    (t / "short.icr").write_bytes(data[:-20])
    for name in ("mac", "payload", "short"):
        watch.fails("authentication failed", "decrypt", t / f"{name}.icr", t / f"{name}.out",
                    *o)
        assert not (t / f"{name}.out").exists()
    watch.fails(f"not to image {other}", "decrypt", t / "a.icr", t / "x", "--image-id", other,
                *o)
    before = {k.key_id for k in target.manager.list_keys()}
    watch.fails("already exists", "encrypt", plain, t / "a.icr", *o)  # a new key, rolled back
    assert {k.key_id for k in target.manager.list_keys()} == before
    watch.fails("no key slot", "rewrap", t / "d.icr", t / "e.icr", "--remove-kek", k1, *o,
                code=2)
    watch.ok("keys", "delete", k1, "--force", *o)
    watch.fails("no key available", "decrypt", t / "a.icr", t / "x", *o)
    watch.ok("decrypt", t / "d.icr", t / "d.out", "--image-id", image, *o)
    watch.ok("keys", "delete", k3, *o)
    assert watch.commands == 25
    assert sum("a DEK" in labels for labels in watch.secrets.values()) >= 2  # one per file
    assert {f"KEK {target.manager.kind}:{k}" for k in (k1, k2, k3)} <= watch.labels()
    if target.name != "local":  # the HTTP traffic itself was logged and looked at
        assert any(r.name == "keystoneauth.session" for r in watch.records)
        assert any(r.name.startswith("urllib3") for r in watch.records)
    watch.assert_clean(min_secrets=6)


def test_local_store_failures_name_no_key(watch: Watch, tmp_path: Path) -> None:
    store = tmp_path / "keys"
    o = ["--key-store", str(store)]
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(20_000))
    key_id = watch.ok("keys", "create", *o).out.strip()
    watch.ok("encrypt", plain, tmp_path / "a.icr", "--kek", key_id, *o)
    record = store / f"{key_id}.key.json"
    original = record.read_bytes()
    wrong = json.loads(original)
    wrong["key"] = base64.b64encode(secrets.token_bytes(32)).decode()
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / record.name).write_text(json.dumps(wrong))
    (other / record.name).chmod(0o600)
    watch.fails("authentication failed", "decrypt", tmp_path / "a.icr", tmp_path / "x",
                "--key-store", other)
    LocalKeyStore(other).get_key(key_id)  # the wrong key is among the secrets looked for
    record.chmod(0o640)
    watch.fails("chmod 600", "decrypt", tmp_path / "a.icr", tmp_path / "x", *o)
    watch.fails("chmod 600", "keys", "list", *o)
    record.chmod(0o600)
    record.write_bytes(original[:-3])
    watch.fails("corrupt", "decrypt", tmp_path / "a.icr", tmp_path / "x", *o)
    watch.fails("corrupt", "rewrap", tmp_path / "a.icr", tmp_path / "y", "--add-kek", key_id,
                *o)
    record.write_bytes(original)
    watch.ok("decrypt", tmp_path / "a.icr", tmp_path / "x", *o)
    assert not (tmp_path / "y").exists()
    watch.assert_clean(min_secrets=3)


# --- Barbican: the requests that carry key bytes ----------------------------------------------

def no_orders(self: BarbicanKeyManager, label: str) -> str:
    raise KeyManagerError("orders are disabled here")


def store_text_secret(target: Target, text: str) -> str:
    resp = requests.post(f"{target.url}/v1/secrets", headers={"X-Project-Id": target.project},
                         json={"name": "user-kek", "payload": text,
                               "payload_content_type": "text/plain"}, timeout=30)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["secret_ref"]).rsplit("/", 1)[1]


def test_barbican_key_bytes_in_http_bodies_are_never_logged(
        watch: Watch, barbican: Target, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    o = barbican.options
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(20_000))
    with monkeypatch.context() as m:  # the fallback: POST a locally generated key
        m.setattr(BarbicanKeyManager, "_order_key", no_orders)
        stored = watch.ok("keys", "create", "--name", "posted", *o).out.strip()
        posted = new_key_of(watch.ok("encrypt", plain, tmp_path / "a.icr", *o))
    assert any("orders are disabled" in r.getMessage() for r in watch.records)
    watch.ok("decrypt", tmp_path / "a.icr", tmp_path / "a.out", *o)
    watch.ok("encrypt", plain, tmp_path / "b.icr", "--kek", stored, *o)
    assert barbican.manager.get_key(posted) and barbican.manager.get_key(stored)
    passphrase = base64.b64encode(os.urandom(32)).decode()  # 44 characters of text
    text_id = store_text_secret(barbican, passphrase)
    watch.fails("is not a 256-bit key", "encrypt", plain, tmp_path / "c.icr", "--kek", text_id,
                *o)
    watch.secret("a text/plain secret", passphrase.encode())
    watch.assert_clean(min_secrets=4)
    said = [r.getMessage() for r in watch.records]
    assert not [m for m in said if f"{text_id}/payload" in m]  # not even requested
    assert any("/payload" in m for m in said)  # urllib3 traces the binary payload GETs,
    assert not [r for r in watch.records  # but keystoneauth (which logs bodies) never does
                if r.name.startswith("keystoneauth") and "/payload" in r.getMessage()]


def test_barbican_faults_log_no_key(watch: Watch, mock_target: Target, tmp_path: Path,
                                    fast_retries: None) -> None:
    mock, o = mock_target.mock, mock_target.options
    assert mock is not None
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(20_000))
    mock.faults.error_burst = 2
    key_id = new_key_of(watch.ok("encrypt", plain, tmp_path / "a.icr", "--image-id",
                                 str(uuid.uuid4()), *o))
    assert any(r.levelno == logging.WARNING and "retry" in r.getMessage()
               for r in watch.records)
    mock_target.manager.get_key(key_id)
    mock.faults.error_rate = 1.0
    watch.fails("503", "decrypt", tmp_path / "a.icr", tmp_path / "x", *o)
    watch.fails("503", "rewrap", tmp_path / "a.icr", tmp_path / "y", "--add-kek", key_id, *o)
    mock.faults.error_rate = 0.0
    mock.faults.consumers_fail = 403
    watch.fails("403", "encrypt", plain, tmp_path / "b.icr", "--image-id", str(uuid.uuid4()),
                *o)
    watch.fails("403", "encrypt", plain, tmp_path / "c.icr", "--kek", key_id, "--image-id",
                str(uuid.uuid4()), *o)
    assert not any((tmp_path / n).exists() for n in ("x", "y", "b.icr", "c.icr"))
    watch.assert_clean(min_secrets=3)


# --- --debug ----------------------------------------------------------------------------------

def test_debug_is_documented_logs_to_stderr_and_is_undone(mock_target: Target,
                                                          tmp_path: Path) -> None:
    assert "--debug" in cli("--help").out
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    run = cli("--debug", "keys", "create", *mock_target.options)
    assert run.code == 0 and len(run.out.strip()) == UUID_LEN
    assert " DEBUG keystoneauth.session: REQ: curl" in run.err
    assert (root.level, root.handlers) == (level, handlers)
    quiet = cli("keys", "create", *mock_target.options)
    assert quiet.code == 0 and quiet.err == ""
    failed = cli("--debug", "decrypt", str(tmp_path / "missing"), str(tmp_path / "x"),
                 "--key-store", str(tmp_path / "keys"))
    assert failed.code == 1
    assert "Traceback (most recent call last)" in failed.err
    assert failed.err.splitlines()[-1].startswith("img-crypt: error: cannot read")
    assert (root.level, root.handlers) == (level, handlers)


LOGGING_CONFIG_PROGRAM = """
import logging, logging.config, sys
import img_crypt.keys._barbican_http  # every img_crypt logger exists before the configuration
from img_crypt.errors import KeyManagerError
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.connect import connect
logging.config.dictConfig({
    "version": 1, "disable_existing_loggers": False,
    "handlers": {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {"img_crypt": {"level": "DEBUG"}},
    "root": {"level": "DEBUG", "handlers": ["err"]}})
def no_orders(self, label):
    raise KeyManagerError("orders are disabled here")
BarbicanKeyManager._order_key = no_orders
km = connect(url=sys.argv[1], project_id=sys.argv[2], backoff=0)
key_id = km.create_key("posted")
print(key_id)
km.get_key(key_id)
"""


def test_a_logging_config_naming_img_crypt_logs_no_posted_key(mock_target: Target) -> None:
    """oslo.log's log_config_append is a fileConfig: it resets the loggers under img_crypt."""
    done = subprocess.run([sys.executable, "-c", LOGGING_CONFIG_PROGRAM, mock_target.url,
                           mock_target.project],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    key_id = done.stdout.strip()
    assert mock_target.mock is not None
    [secret] = [s for s in mock_target.mock.secrets() if s["id"] == key_id]
    assert "POST /v1/secrets" in done.stderr  # the request was made, and traced by urllib3
    watch = Watch(outputs=[("stderr", done.stderr), ("stdout", done.stdout)])
    watch.secret("the posted key", mock_target.manager.get_key(key_id))
    assert watch.secrets and len(next(iter(watch.secrets))) == 32
    assert secret["name"].startswith("posted")
    watch.assert_clean()


# --- the Glance plugin, through a taskflow engine ---------------------------------------------

class ImportToStore(tf_task.Task):  # type: ignore[misc]
    """The task after ours in Glance's import flow; ``fail`` makes the engine revert ours."""

    def __init__(self, fail: bool) -> None:
        super().__init__(name="api_image_import-ImportToStore")
        self.fail = fail

    def execute(self, file_path: str) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")


def run_import(imp: Import, *, fail_after: bool) -> None:
    flow = linear_flow.Flow("api_image_import").add(imp.task, ImportToStore(fail_after))
    engines.run(flow, store={"file_path": imp.file_path})


@pytest.fixture(params=["local", "mock-2026.2"])
def plugin_backend(request: pytest.FixtureRequest, tmp_path: Path,
                   fast_retries: None) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.mark.parametrize("fail_after", [False, True], ids=["imported", "reverted"])
def test_plugin_import_and_revert_log_no_key(watch: Watch, plugin_backend: Backend,
                                            tmp_path: Path, fail_after: bool) -> None:
    data = os.urandom(3 * 16384 + 5)
    imp = Import(tmp_path, data, make_conf(), using(plugin_backend.manager))
    if fail_after:
        with pytest.raises(OSError, match="No space") as info:
            run_import(imp, fail_after=True)
        watch.raised(info.value)
        assert imp.image.status == "queued" and not plugin_backend.manager.list_keys()
    else:
        run_import(imp, fail_after=False)
        [key] = plugin_backend.manager.list_keys()
        plugin_backend.manager.get_key(key.key_id)
    assert any(r.name.startswith("taskflow") for r in watch.records)
    watch.assert_clean(min_secrets=2)


def test_plugin_failures_log_no_key(watch: Watch, mock_target: Target, tmp_path: Path) -> None:
    mock, manager = mock_target.mock, mock_target.manager
    assert mock is not None
    shared = manager.create_key("shared")
    manager.get_key(shared)
    for name in ("refused", "down", "plain"):
        (tmp_path / name).mkdir()
    mock.faults.consumers_fail = 403
    imp = Import(tmp_path / "refused", os.urandom(20_000), make_conf(), using(manager))
    with pytest.raises(RuntimeError, match="403") as refused:
        run_import(imp, fail_after=False)
    watch.raised(refused.value)
    mock.faults.consumers_fail = None
    mock.faults.error_rate = 1.0
    imp = Import(tmp_path / "down", os.urandom(20_000), make_conf(kek_id=shared), using(manager))
    with pytest.raises(RuntimeError, match="503") as down:
        run_import(imp, fail_after=False)
    watch.raised(down.value)
    imp = Import(tmp_path / "plain", os.urandom(20_000),
                 make_conf(kek_id=shared, require_encryption=False), using(manager))
    run_import(imp, fail_after=False)
    assert any("plaintext" in r.getMessage() for r in watch.records)
    watch.assert_clean(min_secrets=2)


# --- the delete hook --------------------------------------------------------------------------

def encrypted_image(manager: KeyManager) -> dict[str, Any]:
    image_id = str(uuid.uuid4())
    key_id = manager.create_key(f"{naming.PER_IMAGE_KEY_PREFIX}{image_id}")
    manager.get_key(key_id)
    manager.add_consumer(key_id, Consumer(service="image", resource_type="image",
                                          resource_id=image_id))
    return {"id": image_id, "owner": PROJECT, "properties": {
        props.FORMAT: props.FORMAT_NAME, props.KEY_ID: key_id,
        props.DELETION_POLICY: "on_image_deletion"}}


def test_on_image_delete_logs_no_key(watch: Watch, plugin_backend: Backend) -> None:
    manager = plugin_backend.manager
    image = encrypted_image(manager)
    outcome = lifecycle.on_image_delete(image, lambda owner: manager, service="image")
    assert outcome is not None and outcome.key_deleted
    again = lifecycle.on_image_delete(image, lambda owner: manager, service="image")
    assert again is not None and not again.key_deleted
    watch.assert_clean(min_secrets=1)


def test_the_notifier_driver_logs_no_key(watch: Watch, mock_target: Target,
                                         fast_retries: None, own_retry_worker: object) -> None:
    mock, manager = mock_target.mock, mock_target.manager
    assert mock is not None
    driver = notifier.ImageDeleteDriver(glance_conf(mock.url, key_manager_auth="noauth"),
                                        ["notifications"], None)

    def notify(payload: dict[str, Any]) -> None:
        driver.notify(ctxt={}, msg={"event_type": "image.delete", "payload": payload},
                      priority="INFO", retry=None)

    notify(encrypted_image(manager))
    down = encrypted_image(manager)
    mock.faults.error_rate = 1.0
    notify(down)
    mock.faults.error_rate = 0.0
    refused = encrypted_image(manager)
    mock.faults.consumers_fail = 403
    notify(refused)
    with pytest.raises(ForbiddenError) as info:
        lifecycle.on_image_delete(refused, lambda owner: manager, service="image")
    watch.raised(info.value)
    mock.faults.consumers_fail = None
    notify({"properties": {props.KEY_ID: str(uuid.uuid4())}})  # no id: an unexpected error
    hook = ("img_crypt.glance.notifier", "img_crypt.glance.retry_worker")
    errors = [r for r in watch.records if r.name in hook and r.levelno >= logging.WARNING]
    assert len(errors) == 3 and errors[-1].exc_info  # down (a retry), refused, unexpected
    watch.assert_clean(min_secrets=3)


# --- key-store modes (what test_keystore_local.py does not already cover) ---------------------

C1 = Consumer(service="image", resource_type="image", resource_id="img-1")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)


def refused(call: Callable[[], object], fix: str) -> KeyManagerError:
    with pytest.raises(KeyManagerError, match=fix) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_key_record_readable_by_group_alone_or_world_alone_is_refused(
        store: LocalKeyStore, mode: int) -> None:
    key_id = store.create_key()
    key = store.get_key(key_id)
    path = store.path / f"{key_id}.key.json"
    path.chmod(mode)
    calls: list[Callable[[], object]] = [
        lambda: store.get_key(key_id), store.list_keys, lambda: store.list_consumers(key_id),
        lambda: store.add_consumer(key_id, C1)]
    for call in calls:
        error = refused(call, "chmod 600")
        assert f"{mode:04o}" in str(error) and str(path) in str(error)
        for form in text_forms(key).values():
            assert form not in str(error) + repr(error)
    assert not (store.path / f"{key_id}.consumers.json").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_consumer_record_readable_by_group_alone_or_world_alone_is_refused(
        store: LocalKeyStore, mode: int) -> None:
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    path = store.path / f"{key_id}.consumers.json"
    path.chmod(mode)
    before = path.read_bytes()
    calls: list[Callable[[], object]] = [
        lambda: store.list_consumers(key_id), store.list_keys,
        lambda: store.add_consumer(key_id, C1), lambda: store.remove_consumer(key_id, C1),
        lambda: store.delete_key(key_id)]
    for call in calls:
        refused(call, "chmod 600")
    assert path.read_bytes() == before  # nothing was rewritten or deleted
    assert (store.path / f"{key_id}.key.json").exists()


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o710, 0o701])
def test_a_store_directory_open_to_group_alone_or_world_alone_is_refused(
        store: LocalKeyStore, mode: int) -> None:
    key_id = store.create_key()
    store.path.chmod(mode)
    calls: list[Callable[[], object]] = [
        lambda: store.get_key(key_id), store.create_key, store.list_keys,
        lambda: store.add_consumer(key_id, C1), lambda: store.list_consumers(key_id),
        lambda: store.delete_key(key_id, force=True)]
    for call in calls:
        refused(call, "chmod 700")
    store.path.chmod(0o700)
    assert [k.key_id for k in store.list_keys()] == [key_id]


def test_a_symlinked_consumer_record_is_refused(store: LocalKeyStore, tmp_path: Path) -> None:
    key_id = store.create_key()
    store.add_consumer(key_id, C1)
    path = store.path / f"{key_id}.consumers.json"
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    for call in (lambda: store.list_consumers(key_id), store.list_keys):
        refused(call, "symlink")


def test_the_temp_file_of_a_new_key_is_private_from_its_first_byte(
        store: LocalKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0)
    modes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            modes.append(stat.S_IMODE(st.st_mode))
        real_fsync(fd)

    try:
        monkeypatch.setattr(os, "fsync", fsync)
        key_id = store.create_key()
        store.add_consumer(key_id, C1)
    finally:
        os.umask(old)
    assert modes == [0o600, 0o600]  # the key record's temp file, the consumer record's
    assert mode_of(store.path / f"{key_id}.key.json") == 0o600


def test_the_cli_reports_a_group_readable_record_in_one_line_without_the_key(
        watch: Watch, tmp_path: Path) -> None:
    store = tmp_path / "keys"
    key_id = watch.ok("keys", "create", "--key-store", store).out.strip()
    LocalKeyStore(store).get_key(key_id)
    (store / f"{key_id}.key.json").chmod(0o640)
    for argv in (["keys", "list"], ["keys", "consumers", key_id]):
        run = watch.fails("chmod 600", *argv, "--key-store", store)
        assert run.err.count("img-crypt: error:") == 1
    assert (store / f"{key_id}.key.json").exists()
    watch.assert_clean(min_secrets=1)

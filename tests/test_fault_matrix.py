"""Key-manager faults with barbican_mock: every operation against every fault, then what is left.

Each cell runs one operation while barbican_mock injects one fault and asserts either success
after bounded retries or a clean failure (one ``img-crypt: error:`` line or a one-line
exception, no traceback, within a time bound). It then waits until the mock has served every
request (one that outlived the client's timeout may still change the state) and counts what
is left against a snapshot taken before the operation: secrets, their consumers and orders
in the mock; files in the output directory (no temporary ``.part`` file); staged plaintext and
``.img-crypt`` files of the import plugin.

Faults at the start of the operation (every operation):
``5xx-burst`` (2 x 503, recovers), ``5xx-persistent``, ``slow-burst`` (2 requests past the
client timeout, recovers), ``slow-persistent``, ``drop-burst`` (2 dropped connections,
recovers), ``drop-persistent``, ``consumer-403`` and ``consumer-500`` (consumer POST/DELETE
refused). Mid-operation faults use ``barbican_mock.Trigger``: at a given request (the key
order, the payload fetch, the consumer registration or removal, the key delete) a burst that
exhausts that call's retries and then recovers (``5xx``, ``drop``), a response lost after the
server acted (``lost``), or a persistent 503 from there on (``down``).
A registration whose every answer was lost (``register/lost-all``) is resolved by listing the
key's consumers (img_crypt/enrollment.py): it landed, so the operation succeeds.

Operations x cells (each on era 2026.2, microversion 1.2, and yoga, unmicroversioned with the
consumer calls over the REST fallback):

| operation                                      | start | mid | cells x 2 eras |
|------------------------------------------------|-------|-----|----------------|
| CLI encrypt --image-id, new per-image key      |   8   |  9  |  34            |
| CLI encrypt --image-id --kek (existing key)    |   8   |  5  |  26            |
| CLI decrypt (fetches the key)                  |   8   |  2  |  20            |
| CLI keys delete, key with consumers            |   8   |  1  |  18            |
| CLI keys delete, key without consumers         |   8   |  2  |  20            |
| plugin, per-image key (taskflow engine)        |   8   |  6  |  28            |
| plugin, shared kek_id                          |   8   |  3  |  22            |
| delete hook, per-image key (listener retries)  |   8   |  3  |  22            |
| delete hook, shared key with another consumer  |   8   |  2  |  20            |

210 matrix cells, plus 2 cells through a real ``img-crypt`` process (what reaches stderr when
no test harness captures logging) and 2 through a real Glance 33 (latency past the timeout and
dropped connections during an import): 214 cases. Where the delete hook's consumer removal
took effect without it knowing (a lost answer, a removal the server finished after the client
timed out) or the consumer could not be put back, the redelivery still deletes the per-image
key: its name ``img-crypt-image-<image id>`` proves it was made for that image alone.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import oslo_messaging
import pytest
import taskflow.engines
from oslo_config import cfg
from taskflow import task as tf_task
from taskflow.patterns import linear_flow

from barbican_mock import Faults, MockBarbican, Trigger
from img_crypt.envelope import inspect as inspect_header
from img_crypt.glance import listener, notifier, opts, plugin
from img_crypt.glance import properties as props
from img_crypt.keys import connect as connect_module
from img_crypt.keys import naming
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer
from tests.support.cli import Run, cli
from tests.support.glance_import import (
    STORES,
    FakeActionWrapper,
    FakeImage,
    FakeImageRepo,
    make_conf,
)

ERAS = ["2026.2", "yoga"]
PROJECT = "p-faults"
SERVICE = "image"
TIMEOUT = 0.25
"""The client's per-request timeout in these tests (seconds)."""
LATENCY = 0.6
"""Injected latency: past the timeout."""
RETRIES = 3
"""The adapter's default: 1 try + 3 retries for calls that are safe to repeat."""
BURST = RETRIES + 1
"""A burst this long exhausts one call's retries."""
BOUND = 8.0
"""No operation may take longer than this (seconds): retries are bounded."""
MAX_REQUESTS = 60
"""Nor send more requests than this."""

Outcome = Literal["ok", "fail"]


# --- faults -----------------------------------------------------------------------------------

START: dict[str, dict[str, Any]] = {
    "5xx-burst": {"error_burst": 2},
    "5xx-persistent": {"error_rate": 1.0},
    "slow-burst": {"latency": LATENCY, "latency_burst": 2},
    "slow-persistent": {"latency": LATENCY},
    "drop-burst": {"drop_next": 2},
    "drop-persistent": {"drop_rate": 1.0},
    "consumer-403": {"consumers_fail": 403},
    "consumer-500": {"consumers_fail": 500},
}
TRANSIENT = {"5xx-burst", "slow-burst", "drop-burst"}

POINTS: dict[str, tuple[str, str]] = {
    "order": ("POST", r"^/v1/orders/?$"),
    "payload": ("GET", r"^/v1/secrets/[^/]+/payload/?$"),
    "register": ("POST", r"^/v1/secrets/[^/]+/consumers/?$"),
    "unregister": ("DELETE", r"^/v1/secrets/[^/]+/consumers/?$"),
    "list-consumers": ("GET", r"^/v1/secrets/[^/]+/consumers/?$"),
    "delete-key": ("DELETE", r"^/v1/secrets/[^/]+/?$"),
}
MID: dict[str, dict[str, Any]] = {
    "5xx": {"error_burst": BURST},
    "drop": {"drop_next": BURST},
    "lost": {"lose_next": 1},
    "lost-all": {"lose_next": BURST},
    "down": {"error_rate": 1.0},
}


def point_of(mock: MockBarbican, point: str) -> str:
    """``key-delete-step``: the first request of a delete without force, which depends on the
    era: microversion 1.2 sends the DELETE (Barbican checks the consumers), older eras list
    the consumers first."""
    if point == "key-delete-step":
        return "delete-key" if mock.era.name == "2026.2" else "list-consumers"
    return point


def inject(mock: MockBarbican, fault: str) -> None:
    """Apply a start fault (``5xx-burst``) or a mid-operation one (``register/5xx``)."""
    if "/" in fault:
        point, kind = fault.split("/")
        method, path = POINTS[point_of(mock, point)]
        mock.faults.triggers.append(Trigger(method, path, dict(MID[kind])))
        return
    for name, value in START[fault].items():
        setattr(mock.faults, name, value)


def clear(mock: MockBarbican) -> None:
    """The fault goes away (and requests still sleeping are served first)."""
    mock.faults = Faults()
    mock.wait_idle()


# --- what is in the mock ----------------------------------------------------------------------

ConsumerKey = tuple[str, str, str]


@dataclass(frozen=True)
class State:
    """Every secret (id -> name, consumers) and the number of orders."""

    secrets: dict[str, tuple[str | None, frozenset[ConsumerKey]]]
    orders: int

    def consumers(self, key_id: str) -> frozenset[ConsumerKey]:
        return self.secrets[key_id][1]


def state(mock: MockBarbican) -> State:
    """What the mock holds once no request is in flight."""
    mock.wait_idle()
    secrets = {s["id"]: (s["name"], frozenset((c["service"], c["resource_type"],
                                               c["resource_id"]) for c in s["consumers"]))
               for s in mock.secrets()}
    return State(secrets, mock.counts()["orders"])


@dataclass
class Diff:
    """What an operation changed in the mock."""

    new: dict[str, tuple[str | None, frozenset[ConsumerKey]]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    consumers_added: dict[str, set[ConsumerKey]] = field(default_factory=dict)
    consumers_removed: dict[str, set[ConsumerKey]] = field(default_factory=dict)
    orders: int = 0

    @property
    def empty(self) -> bool:
        return not (self.new or self.gone or self.consumers_added or self.consumers_removed
                    or self.orders)


def diff(before: State, after: State) -> Diff:
    d = Diff(orders=after.orders - before.orders)
    for key_id, entry in after.secrets.items():
        if key_id not in before.secrets:
            d.new[key_id] = entry
            continue
        added = set(entry[1] - before.consumers(key_id))
        removed = set(before.consumers(key_id) - entry[1])
        if added:
            d.consumers_added[key_id] = added
        if removed:
            d.consumers_removed[key_id] = removed
    d.gone = set(before.secrets) - set(after.secrets)
    return d


def left_on_failure(fault: str) -> Diff:
    """What a failed operation may leave: nothing, except the order record of a key order
    whose answer was lost (no key material; the secret it made is found by name and deleted,
    but the order cannot be found)."""
    return Diff(orders=1) if fault == "order/lost" else Diff()


def image_consumer(image_id: str) -> ConsumerKey:
    return (SERVICE, "image", image_id)


def count(mock: MockBarbican, point: str, status: int, since: int = 0) -> int:
    """Requests to ``point`` the server answered (or meant to answer) with ``status``, from
    the ``since``-th request of its log on."""
    method, path = POINTS[point]
    return sum(1 for m, p, s in mock.requests_log()[since:]
               if m == method and re.search(path, p.split("?")[0]) and s == status)


def net_removals(mock: MockBarbican, since: int) -> int:
    """Consumer removals the server made, less the registrations (the delete hook puts the
    consumer back when it cannot finish, so that its retry can)."""
    return count(mock, "unregister", 200, since) - count(mock, "register", 200, since)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(params=ERAS)
def mock(request: pytest.FixtureRequest) -> Iterator[MockBarbican]:
    with MockBarbican(era=request.param) as server:
        yield server


def manager(mock: MockBarbican) -> BarbicanKeyManager:
    """A key manager with the short timeout and no backoff sleeps (same number of tries)."""
    return connect_module.connect(url=mock.url, project_id=PROJECT, timeout=TIMEOUT,
                                  backoff=0)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def assert_bounded(mock: MockBarbican, elapsed: float, requests_before: int) -> None:
    assert elapsed < BOUND, f"took {elapsed:.1f} s"
    assert len(mock.requests_log()) - requests_before <= MAX_REQUESTS


# --- the command line -------------------------------------------------------------------------

@pytest.fixture
def fast_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's Barbican connection with the short timeout and no backoff sleeps."""
    monkeypatch.setattr(connect_module, "connect",
                        functools.partial(connect_module.connect, timeout=TIMEOUT, backoff=0))


@dataclass
class Workdir:
    """The input file and an output directory that holds nothing else."""

    plain: Path
    out: Path

    @property
    def output(self) -> Path:
        return self.out / "disk.icr"

    def files(self) -> list[str]:
        return sorted(os.listdir(self.out))


@pytest.fixture
def work(tmp_path: Path) -> Workdir:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    plain = tmp_path / "in" / "disk.raw"
    plain.write_bytes(os.urandom(2 * 16384 + 99))
    return Workdir(plain, tmp_path / "out")


def options(mock: MockBarbican) -> list[str]:
    return ["--key-manager", "barbican", "--barbican-url", mock.url, "--project-id", PROJECT]


def run_cli(mock: MockBarbican, *argv: str) -> tuple[Run, float]:
    """One ``img-crypt`` run as a new process would do it (no era known yet)."""
    before = len(mock.requests_log())
    run, elapsed = timed(lambda: cli(*argv, *options(mock)))
    assert_bounded(mock, elapsed, before)
    return run, elapsed


def assert_clean_failure(run: Run, *, warnings: int = 0) -> str:
    """Exit 1, ``warnings`` warning lines, then exactly one error line; no traceback."""
    assert run.code == 1, (run.code, run.out, run.err)
    lines = run.err.splitlines()
    assert "Traceback" not in run.err
    assert [line for line in lines if not line.startswith("img-crypt: warning: ")] \
        == lines[-1:], run.err
    assert lines[-1].startswith("img-crypt: error: ") and run.err.endswith("\n"), run.err
    assert len(lines) == warnings + 1, run.err
    return lines[-1]


def assert_success(run: Run) -> None:
    assert run.code == 0, run.err
    assert run.err == "", run.err


def new_key_of(run: Run) -> str:
    [line] = [line for line in run.out.splitlines() if line.startswith("key: barbican:")]
    return line.split(":", 2)[2].split()[0]


# CLI encrypt, a new per-image key --------------------------------------------------------------

ENCRYPT_NEW: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT else "fail" for name in START},
    "order/5xx": "fail", "order/lost": "fail", "payload/5xx": "fail", "register/5xx": "fail",
    "register/drop": "fail", "register/lost": "ok", "register/lost-all": "ok",
    "register/down": "fail", "after-register:delete-key/5xx": "fail",
}


@pytest.mark.parametrize("fault", list(ENCRYPT_NEW))
def test_cli_encrypt_with_a_new_key(mock: MockBarbican, fault: str, work: Workdir,
                                    fast_cli: None) -> None:
    image_id = str(uuid.uuid4())
    local_failure = fault.startswith("after-register:")
    if local_failure:  # OUTPUT exists: the command fails after it registered the image
        work.output.write_bytes(b"keep me")
    before = state(mock)
    inject(mock, fault.split(":", 1)[-1])
    run, _ = run_cli(mock, "encrypt", str(work.plain), str(work.output), "--image-id", image_id)
    change = diff(before, state(mock))
    if ENCRYPT_NEW[fault] == "ok":
        assert_success(run)
        key_id = new_key_of(run)
        assert change == Diff(new={key_id: (change.new[key_id][0],
                                            frozenset({image_consumer(image_id)}))})
        assert work.files() == ["disk.icr"]
        with open(work.output, "rb") as f:
            header = inspect_header(f, size=work.output.stat().st_size).header
        assert [s.key_id for s in header.slots] == [key_id]
        assert str(header.image_id) == image_id
        return
    if fault == "register/down":  # Barbican went down after the key was made: the key
        message = assert_clean_failure(run, warnings=2)  # stays, and the warnings name it
        [key_id] = change.new
        assert change == Diff(new={key_id: (change.new[key_id][0], frozenset())})
        assert f"could not delete the new key {key_id}" in run.err
        assert f"could not remove the consumer from key {key_id}" in run.err
        assert "503" in message
    elif local_failure:  # the forced delete of the new key failed: the consumer is removed
        message = assert_clean_failure(run, warnings=1)  # and the key reported
        [key_id] = change.new
        assert change == Diff(new={key_id: (change.new[key_id][0], frozenset())})
        assert "already exists" in message
        assert f"could not delete the new key {key_id}" in run.err
        assert work.output.read_bytes() == b"keep me"
        assert work.files() == ["disk.icr"]
        return
    else:
        assert_clean_failure(run)
        assert change == left_on_failure(fault), change
    assert work.files() == []


# CLI encrypt with an existing --kek -----------------------------------------------------------

ENCRYPT_KEK: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT else "fail" for name in START},
    "payload/5xx": "fail", "register/5xx": "fail", "register/lost": "ok",
    "register/lost-all": "ok", "after-register:unregister/5xx": "fail",
}


@pytest.mark.parametrize("fault", list(ENCRYPT_KEK))
def test_cli_encrypt_with_an_existing_kek(mock: MockBarbican, fault: str, work: Workdir,
                                          fast_cli: None) -> None:
    kek = manager(mock).create_key("shared")
    image_id = str(uuid.uuid4())
    local_failure = fault.startswith("after-register:")
    if local_failure:
        work.output.write_bytes(b"keep me")
    before = state(mock)
    inject(mock, fault.split(":", 1)[-1])
    run, _ = run_cli(mock, "encrypt", str(work.plain), str(work.output), "--image-id",
                     image_id, "--kek", kek)
    change = diff(before, state(mock))
    if ENCRYPT_KEK[fault] == "ok":
        assert_success(run)
        assert change == Diff(consumers_added={kek: {image_consumer(image_id)}})
        assert work.files() == ["disk.icr"]
    elif local_failure:  # the removal's retries were exhausted: the consumer is reported
        assert_clean_failure(run, warnings=1)
        assert f"could not remove the consumer from key {kek}" in run.err
        assert change == Diff(consumers_added={kek: {image_consumer(image_id)}})
        assert work.output.read_bytes() == b"keep me" and work.files() == ["disk.icr"]
    else:  # a registration that failed with a 5xx may have landed: the consumers are listed
        assert_clean_failure(run)  # (it had not), so no removal is tried, nor reported
        assert change.empty, change
        assert work.files() == []


# CLI decrypt -------------------------------------------------------------------------------------

DECRYPT: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT or name.startswith("consumer-") else "fail"
       for name in START},
    "payload/5xx": "fail", "payload/lost": "ok",
}


@pytest.mark.parametrize("fault", list(DECRYPT))
def test_cli_decrypt(mock: MockBarbican, fault: str, work: Workdir, tmp_path: Path,
                     fast_cli: None) -> None:
    encrypted = tmp_path / "in" / "disk.icr"
    run, _ = run_cli(mock, "encrypt", str(work.plain), str(encrypted))
    assert run.code == 0, run.err
    before = state(mock)
    inject(mock, fault)
    run, _ = run_cli(mock, "decrypt", str(encrypted), str(work.out / "disk.raw"))
    assert diff(before, state(mock)).empty
    if DECRYPT[fault] == "ok":
        assert_success(run)
        assert (work.out / "disk.raw").read_bytes() == work.plain.read_bytes()
    else:
        assert_clean_failure(run)
        assert work.files() == []  # no output, no temporary file


# CLI keys delete ---------------------------------------------------------------------------------

DELETE_IN_USE: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT or name.startswith("consumer-") else "fail"
       for name in START},
    "key-delete-step/5xx": "fail",
}
"""ok: refused because of the consumers, as without a fault."""


@pytest.mark.parametrize("fault", list(DELETE_IN_USE))
def test_cli_keys_delete_of_a_key_in_use(mock: MockBarbican, fault: str,
                                         fast_cli: None) -> None:
    km = manager(mock)
    key_id = km.create_key("in use")
    km.add_consumer(key_id, Consumer(SERVICE, "image", str(uuid.uuid4())))
    before = state(mock)
    inject(mock, fault)
    run, _ = run_cli(mock, "keys", "delete", key_id)
    message = assert_clean_failure(run)
    refused = re.search(r"still has consumers|has 1 consumer\(s\)", message)
    assert bool(refused) == (DELETE_IN_USE[fault] == "ok"), message
    assert diff(before, state(mock)).empty


DELETE_UNUSED: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT or name.startswith("consumer-") else "fail"
       for name in START},
    "key-delete-step/5xx": "fail", "delete-key/lost": "ok",
}


@pytest.mark.parametrize("fault", list(DELETE_UNUSED))
def test_cli_keys_delete_of_an_unused_key(mock: MockBarbican, fault: str,
                                          fast_cli: None) -> None:
    key_id = manager(mock).create_key("unused")
    before, since = state(mock), len(mock.requests_log())
    inject(mock, fault)
    run, _ = run_cli(mock, "keys", "delete", key_id)
    change = diff(before, state(mock))
    if DELETE_UNUSED[fault] == "ok":
        assert_success(run)
        assert run.out == f"deleted key {key_id}\n"
        assert change == Diff(gone={key_id})
        assert count(mock, "delete-key", 204, since) == 1
    else:
        assert_clean_failure(run)
        assert change.empty


# --- the import plugin, run by a taskflow engine as Glance runs it ------------------------------

class Staging(tf_task.Task):  # type: ignore[misc]
    """Glance's staging step before the plugins: provides the staged ``file_path``."""

    default_provides = "file_path"

    def __init__(self, uri: str) -> None:
        super().__init__(name="verify-staging")
        self.uri = uri

    def execute(self) -> str:
        return self.uri


class ImportToStore(tf_task.Task):  # type: ignore[misc]
    """Glance's store upload after the plugins: reads ``file_path``; may fail."""

    def __init__(self, store: Path, fail: bool) -> None:
        super().__init__(name="import-to-store")
        self.store, self.fail = store, fail

    def execute(self, file_path: str) -> None:
        data = Path(file_path.removeprefix("file://")).read_bytes()
        if self.fail:
            raise OSError(28, "No space left on device")
        self.store.write_bytes(data)


@dataclass
class GlanceImport:
    """One image import: staging dir, image repo and the flow's outcome."""

    image_id: str
    staging: Path
    repo: FakeImageRepo
    store: Path
    error: BaseException | None = None

    def staging_files(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir())


def run_import(tmp_path: Path, km: BarbicanKeyManager, conf: cfg.ConfigOpts, *,
               store_fails: bool = False) -> tuple[GlanceImport, float]:
    image_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / image_id).write_bytes(os.urandom(40_000))
    repo = FakeImageRepo(FakeImage(image_id, size=40_000, extra_properties={
        "os_glance_import_task": task_id, "os_glance_importing_to_stores": ",".join(STORES)}))
    imp = GlanceImport(image_id, staging, repo, tmp_path / "store")
    encrypt = plugin.EncryptImage(
        context=None, task_id=task_id, task_type="api_image_import",
        action_wrapper=FakeActionWrapper(repo, image_id, task_id), stores=list(STORES),
        conf=conf, key_manager=lambda conf, ctx: km)
    flow = linear_flow.Flow("api_image_import").add(
        Staging(f"file://{staging / image_id}"), encrypt,
        ImportToStore(imp.store, store_fails))

    def go() -> None:
        try:
            taskflow.engines.run(flow, engine="serial")
        except Exception as e:  # the outcome is checked by the caller
            imp.error = e

    _, elapsed = timed(go)
    return imp, elapsed


def assert_import_rolled_back(imp: GlanceImport, *, our_message: bool = True) -> None:
    """Glance would fail the task with our one-line message; the image is queued again."""
    assert imp.error is not None
    if our_message:
        assert isinstance(imp.error, RuntimeError), repr(imp.error)  # UploadException in Glance
        message = str(imp.error)
        assert message.startswith(f"image {imp.image_id} could not be encrypted: ")
        assert "\n" not in message and "Traceback" not in message
    image = imp.repo.image
    assert image.status == "queued"
    assert image.container_format == "bare"
    assert not any(k.startswith("os_encrypt_") for k in image.extra_properties)
    assert image.extra_properties["os_glance_failed_import"] == ",".join(STORES)
    assert imp.staging_files() == []  # neither plaintext nor .img-crypt stays staged
    assert not imp.store.exists()


PLUGIN_PER_IMAGE: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT else "fail" for name in START},
    "order/lost": "fail", "payload/5xx": "fail", "register/5xx": "fail",
    "register/lost-all": "ok", "store-fails:unregister/5xx": "fail", "register/down": "fail",
}


@pytest.mark.parametrize("fault", list(PLUGIN_PER_IMAGE))
def test_plugin_with_a_per_image_key(mock: MockBarbican, fault: str, tmp_path: Path) -> None:
    km = manager(mock)
    _ = km.era  # a running Glance discovered the era long ago
    store_fails = fault.startswith("store-fails:")
    before = state(mock)
    requests_before = len(mock.requests_log())
    inject(mock, fault.split(":", 1)[-1])
    imp, elapsed = run_import(tmp_path, km, make_conf(), store_fails=store_fails)
    assert_bounded(mock, elapsed, requests_before)
    change = diff(before, state(mock))
    if PLUGIN_PER_IMAGE[fault] == "ok":
        assert imp.error is None, repr(imp.error)
        [(key_id, (name, consumers))] = change.new.items()
        assert change == Diff(new={key_id: (name, frozenset({image_consumer(imp.image_id)}))})
        assert (name or "").startswith(f"{naming.PER_IMAGE_KEY_PREFIX}{imp.image_id}")
        assert imp.repo.image.extra_properties[props.KEY_ID] == key_id
        assert imp.staging_files() == [f"{imp.image_id}.img-crypt"]  # no plaintext staged
        assert imp.store.exists()
        return
    assert_import_rolled_back(imp, our_message=not store_fails)
    if fault == "register/down":  # Barbican went down after the key was made: what stays is
        [(key_id, (name, consumers))] = change.new.items()  # a per-image key with no consumer,
        assert consumers == frozenset() and change.orders == 0  # which reconcile deletes
        assert (name or "").startswith(f"{naming.PER_IMAGE_KEY_PREFIX}{imp.image_id}")
        return
    assert change == left_on_failure(fault), change


PLUGIN_SHARED: dict[str, Outcome] = {
    **{name: "ok" if name in TRANSIENT else "fail" for name in START},
    "register/5xx": "fail", "register/lost-all": "ok", "store-fails:unregister/5xx": "fail",
}


@pytest.mark.parametrize("fault", list(PLUGIN_SHARED))
def test_plugin_with_a_shared_kek(mock: MockBarbican, fault: str, tmp_path: Path) -> None:
    km = manager(mock)
    kek = km.create_key("shared")
    store_fails = fault.startswith("store-fails:")
    before = state(mock)
    requests_before = len(mock.requests_log())
    inject(mock, fault.split(":", 1)[-1])
    imp, elapsed = run_import(tmp_path, km, make_conf(kek_id=kek), store_fails=store_fails)
    assert_bounded(mock, elapsed, requests_before)
    change = diff(before, state(mock))
    if PLUGIN_SHARED[fault] == "ok":
        assert imp.error is None, repr(imp.error)
        assert change == Diff(consumers_added={kek: {image_consumer(imp.image_id)}})
        assert imp.staging_files() == [f"{imp.image_id}.img-crypt"]
        return
    assert_import_rolled_back(imp, our_message=not store_fails)
    if store_fails:  # the removal's retries were exhausted during the revert: logged, and the
        assert change == Diff(consumers_added={kek: {image_consumer(imp.image_id)}})
        return  # image, queued again, still exists: its consumer is not an orphan yet
    assert change.empty, change


# --- the delete hook, delivered by img-crypt-listener -------------------------------------------

HANDLED = oslo_messaging.NotificationResult.HANDLED
REQUEUE = oslo_messaging.NotificationResult.REQUEUE


@pytest.fixture
def endpoint(mock: MockBarbican, monkeypatch: pytest.MonkeyPatch) -> listener.DeleteEndpoint:
    """The listener's endpoint; each delivery gets a new key manager, as with for_owner."""
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([])
    monkeypatch.setattr(notifier, "for_owner", lambda conf, owner: manager(mock))
    return listener.DeleteEndpoint(conf)


def deliver(endpoint: listener.DeleteEndpoint, mock: MockBarbican,
            payload: dict[str, Any]) -> list[Any]:
    """Deliver until handled: the broker redelivers a requeued message once the fault cleared."""
    results = []
    for _ in range(3):
        requests_before = len(mock.requests_log())
        result, elapsed = timed(lambda: endpoint.info({}, "image.localhost", "image.delete",
                                                      payload, {}))
        assert_bounded(mock, elapsed, requests_before)
        results.append(result)
        if result == HANDLED:
            break
        clear(mock)
    return results


def deleted_image(key_id: str, image_id: str, policy: str) -> dict[str, Any]:
    return {"id": image_id, "owner": PROJECT, "status": "deleted", "deleted": True,
            "properties": {props.FORMAT: props.FORMAT_NAME, props.KEY_ID: key_id,
                           props.DELETION_POLICY: policy}}


HOOK_PER_IMAGE: dict[str, Any] = {
    **{name: HANDLED if name in TRANSIENT or name == "consumer-403" else REQUEUE
       for name in START},
    "key-delete-step/5xx": REQUEUE, "unregister/lost": HANDLED, "key-delete-step/down": REQUEUE,
}
"""What the first delivery answers; a requeued one is redelivered after the fault cleared."""


@pytest.mark.parametrize("fault", list(HOOK_PER_IMAGE))
def test_delete_hook_with_a_per_image_key(mock: MockBarbican, fault: str,
                                          endpoint: listener.DeleteEndpoint) -> None:
    image_id = str(uuid.uuid4())
    km = manager(mock)
    key_id = km.create_key(f"{naming.PER_IMAGE_KEY_PREFIX}{image_id}")
    km.add_consumer(key_id, Consumer(SERVICE, "image", image_id))
    before, since = state(mock), len(mock.requests_log())
    inject(mock, fault)
    results = deliver(endpoint, mock, deleted_image(key_id, image_id, props.ON_IMAGE_DELETION))
    change = diff(before, state(mock))
    assert results[0] == HOOK_PER_IMAGE[fault]
    assert results[-1] == HANDLED
    if fault == "consumer-403":  # refused, not retried: everything stays for reconcile
        assert change.empty
        return
    assert change == Diff(gone={key_id})  # the consumer went first, then the key
    assert net_removals(mock, since) == 1  # removed exactly once (a failed delete step put
    assert count(mock, "delete-key", 204, since) == 1  # it back); the key deleted once


HOOK_SHARED: dict[str, Any] = {
    **{name: HANDLED if name in TRANSIENT or name == "consumer-403" else REQUEUE
       for name in START},
    "key-delete-step/5xx": HANDLED, "unregister/lost": HANDLED,
}
"""What the first delivery answers (on 2026.2 the key delete is sent and meets the fault)."""


@pytest.mark.parametrize("fault", list(HOOK_SHARED))
def test_delete_hook_with_a_shared_key(mock: MockBarbican, fault: str,
                                       endpoint: listener.DeleteEndpoint) -> None:
    image_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    km = manager(mock)
    key_id = km.create_key("shared")
    km.add_consumer(key_id, Consumer(SERVICE, "image", image_id))
    km.add_consumer(key_id, Consumer(SERVICE, "image", other))
    before, since = state(mock), len(mock.requests_log())
    inject(mock, fault)
    results = deliver(endpoint, mock, deleted_image(key_id, image_id, props.ON_IMAGE_DELETION))
    change = diff(before, state(mock))
    first = REQUEUE if (fault, mock.era.name) == ("key-delete-step/5xx", "2026.2") \
        else HOOK_SHARED[fault]
    assert results[0] == first and results[-1] == HANDLED
    if fault == "consumer-403":
        assert change.empty
        return
    # the image's consumer removed once; the key stays with its last consumer
    assert change == Diff(consumers_removed={key_id: {image_consumer(image_id)}})
    assert net_removals(mock, since) == 1
    assert count(mock, "delete-key", 204, since) == 0


# --- a real img-crypt process: what reaches stderr ---------------------------------------------

def real_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "img_crypt", *argv], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("era", ERAS)
def test_a_real_process_prints_one_error_line_and_nothing_from_the_libraries(
        era: str, work: Workdir) -> None:
    image_id = str(uuid.uuid4())
    with MockBarbican(era=era) as server:
        km = connect_module.connect(url=server.url, project_id=PROJECT, backoff=0)
        key_id = km.create_key("in use")
        km.add_consumer(key_id, Consumer(SERVICE, "image", image_id))
        server.faults.error_burst = 1  # one retry on the way
        run = real_cli("keys", "delete", key_id, *options(server))
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        f"img-crypt: error: delete key {key_id}: the key still has consumers (use --force)"
        if era == "2026.2" else
        f"img-crypt: error: key {key_id} has 1 consumer(s), e.g. image/image/{image_id}; "
        "not deleted"], run.stderr


# --- end to end: a real Glance 33 on the mock ---------------------------------------------------

@pytest.fixture(scope="module")
def glance_mock() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2") as server:
        yield server


@pytest.fixture(scope="module")
def glance_on_mock(glance_mock: MockBarbican) -> Iterator[Any]:
    from tests.support.e2e_glance import start_glance

    server = start_glance(glance_mock.url, timeout="1")  # the smallest [image_encryption] timeout
    try:
        yield server
    finally:
        server.stop()


E2E = {
    # every try of the consumer registration outlives the 1 s timeout; the server still
    # registers each one a little later: the enrollment lists the consumers and finds it
    "register/slow": ("ok", [Trigger("POST", POINTS["register"][1],
                                      {"latency": 1.4, "latency_burst": BURST})]),
    # every try is dropped before the server sees it: nothing landed, the import fails
    "register/drop": ("fail", [Trigger("POST", POINTS["register"][1],
                                       {"drop_next": BURST})]),
}


@pytest.mark.parametrize("fault", list(E2E))
def test_e2e_import_fault_ends_cleanly_either_way(
        glance_on_mock: Any, glance_mock: MockBarbican, tmp_path: Path, fault: str) -> None:
    """A registration whose answers were all lost is settled by listing; a failure leaves
    the image queued and nothing in Barbican, a success exactly one consumer on a new key."""
    from tests.servers.glance import GlanceClient
    from tests.support.e2e_glance import import_image, plaintext, staging_files

    expected, triggers = E2E[fault]
    data = tmp_path / "disk.raw"
    data.write_bytes(plaintext(1 << 20))
    with GlanceClient(glance_on_mock.url, PROJECT) as client:  # the era is known from now on
        first, warm = import_image(client, data)
        assert warm.task_status == "success", warm.task_message
        client.delete_image(first)
        before = state(glance_mock)
        glance_mock.faults.triggers = list(triggers)
        try:
            image_id, result = import_image(client, data)
        finally:
            clear(glance_mock)
        changed = diff(before, state(glance_mock))
        if expected == "ok":
            assert result.task_status == "success", result.task_message
            assert result.status == "active"
            key_id = result.image["os_encrypt_key_id"]
            assert changed.new == {key_id: (changed.new[key_id][0],
                                            frozenset({("image", "image", image_id)}))}
            client.delete_image(image_id)
            return
    assert result.task_status == "failure"
    assert result.status == "queued"
    message = result.task_message
    assert message.startswith(f"image {image_id} could not be encrypted: "), message
    assert "cannot reach Barbican" in message and "\n" not in message
    assert not any(name.startswith("os_encrypt_") for name in result.image)
    assert staging_files(glance_on_mock) == []
    assert changed.empty


logging.getLogger("taskflow").setLevel(logging.CRITICAL)  # a reverted flow logs tracebacks

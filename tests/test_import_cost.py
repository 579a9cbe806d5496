"""What an import costs beyond the encryption itself, and that the cuts keep every safety rule.

- The Barbican era is discovered once per process and endpoint (``shared_endpoint``), not once
  per import or hook run; it is rediscovered after ``SHARED_TTL`` (tests/conftest.py clears it
  around every test); python-barbicanclient still negotiates once per manager (the fault
  matrix relies on that retried GET). A key the manager just created is fetched without its
  metadata.
- The consumer is registered while the data is encrypted; nothing is published before both
  ended, and a failure of either is undone only after both ended.
- Each import logs how long each of its steps took, at DEBUG.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from barbican_mock import MockBarbican
from img_crypt import envelope
from img_crypt.errors import ForbiddenError
from img_crypt.glance import keys as glance_keys
from img_crypt.glance import recent, uploads
from img_crypt.keys import _barbican_http
from img_crypt.keys.base import Consumer, KeyInfo, KeyManager
from tests.servers.counting_proxy import CountingProxy
from tests.support.backends import Backend, open_backend
from tests.support.glance_import import Import, glance_conf, make_conf, using

WAIT = 5.0


@dataclass
class Context:
    """The part of Glance's RequestContext a noauth key manager reads."""

    project_id: str = "p-cost"
    auth_token: str | None = None


@pytest.fixture
def proxy() -> Iterator[CountingProxy]:
    with MockBarbican(era="2026.2") as mock, CountingProxy(mock.url) as front:
        yield front


@pytest.fixture(params=["local", "2026.2"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


def discoveries(proxy: CountingProxy) -> int:
    return sum(1 for x in proxy.log() if x.method == "GET" and x.path.split("?")[0] == "/")


# --- the era, once per process ----------------------------------------------------------------

def test_key_managers_made_per_request_discover_the_barbican_era_once(
        proxy: CountingProxy) -> None:
    conf = glance_conf(proxy.url, key_manager_auth="noauth")
    for _ in range(3):  # three imports or hook runs, each with its own manager
        manager = glance_keys.for_request(conf, Context())
        manager.get_key(manager.create_key("k"))
    assert discoveries(proxy) == 1 + 3  # the era once; the client's own negotiation per manager


def test_the_service_credential_managers_share_the_discovered_era_too(
        proxy: CountingProxy) -> None:
    conf = glance_conf(proxy.url, key_manager_auth="noauth")
    glance_keys.for_request(conf, Context()).list_keys()
    glance_keys.for_owner(conf, "p-cost").list_keys()
    assert discoveries(proxy) == 1 + 2  # the era once; the client's own negotiation per manager


def test_the_shared_endpoint_is_per_url_and_the_same_for_a_v1_suffix() -> None:
    first = _barbican_http.shared_endpoint("http://barbican.test:9311")
    assert _barbican_http.shared_endpoint("http://barbican.test:9311/v1/") is first
    assert _barbican_http.shared_endpoint("http://other.test:9311") is not first


def test_the_shared_endpoint_is_rediscovered_once_it_is_older_than_the_ttl() -> None:
    now = [1000.0]

    def endpoint() -> Any:
        return _barbican_http.shared_endpoint("http://barbican.test:9311", ttl=300,
                                              clock=lambda: now[0])

    first = endpoint()
    now[0] += 299.9
    assert endpoint() is first
    now[0] += 0.1
    renewed = endpoint()
    assert renewed is not first and renewed.known_era is None


# --- the consumer, registered during the encryption -------------------------------------------

class Gate:
    """The import's encryption (``envelope.Deferred.encrypt``): says when it runs, can fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: BaseException | None = None,
                 wait_for: threading.Event | None = None) -> None:
        self.started, self.ended = threading.Event(), threading.Event()
        real = envelope.Deferred.encrypt

        def encrypt(*args: Any, **kwargs: Any) -> Any:
            self.started.set()
            try:
                if wait_for is not None:
                    assert wait_for.wait(WAIT), "the consumer registration never started"
                if error is not None:
                    raise error
                return real(*args, **kwargs)
            finally:
                self.ended.set()

        monkeypatch.setattr(envelope.Deferred, "encrypt", encrypt)


class SlowRegistration(KeyManager):
    """A key manager whose ``add_consumer`` waits for a signal, then may fail."""

    kind: ClassVar[str] = "wrapped"

    def __init__(self, inner: KeyManager, until: threading.Event,
                 error: BaseException | None = None) -> None:
        self.inner, self.until, self.error = inner, until, error
        self.registering = threading.Event()
        self.saw_encryption_running = False

    def list_keys(self) -> list[KeyInfo]:
        return self.inner.list_keys()

    def create_key(self, name: str | None = None) -> str:
        return self.inner.create_key(name)

    def get_key(self, key_id: str) -> bytes:
        return self.inner.get_key(key_id)

    def delete_key(self, key_id: str, *, force: bool = False) -> None:
        self.inner.delete_key(key_id, force=force)

    def list_consumers(self, key_id: str) -> list[Consumer]:
        return self.inner.list_consumers(key_id)

    def remove_consumer(self, key_id: str, consumer: Consumer) -> None:
        self.inner.remove_consumer(key_id, consumer)

    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        self.registering.set()
        self.saw_encryption_running = self.until.wait(WAIT)
        if self.error is not None:
            raise self.error
        self.inner.add_consumer(key_id, consumer)


def test_the_consumer_is_registered_while_the_data_is_encrypted(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registering = threading.Event()
    gate = Gate(monkeypatch, wait_for=registering)
    manager = SlowRegistration(backend.manager, gate.started)
    manager.registering = registering
    imp = Import(tmp_path, os.urandom(100_000), make_conf(), using(manager))
    imp.run()
    assert manager.saw_encryption_running
    [key_id] = backend.keys()
    assert backend.consumer_ids(key_id) == [imp.image_id]


def test_an_encryption_failing_while_the_consumer_registers_is_undone_after_it(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek_id = backend.manager.create_key("shared")
    registering = threading.Event()
    gate = Gate(monkeypatch, error=OSError(28, "No space left on device"),
                wait_for=registering)
    manager = SlowRegistration(backend.manager, gate.ended)  # registers after the failure
    manager.registering = registering
    imp = Import(tmp_path, os.urandom(100_000), make_conf(kek_id=kek_id), using(manager))
    with pytest.raises(OSError, match="No space left"):
        imp.run()
    assert manager.saw_encryption_running
    assert list(backend.keys()) == [kek_id]
    assert backend.consumers(kek_id) == []  # the late registration was removed too
    assert imp.staging_files() == [imp.image_id]
    assert imp.unchanged


def test_a_registration_failing_after_the_encryption_publishes_nothing(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(monkeypatch)
    manager = SlowRegistration(backend.manager, gate.ended, ForbiddenError("HTTP 403"))
    imp = Import(tmp_path, os.urandom(100_000), make_conf(), using(manager))
    with pytest.raises(RuntimeError, match="403"):
        imp.run()
    assert manager.saw_encryption_running
    assert backend.keys() == {} and backend.all_consumers() == []
    assert imp.staging_files() == [imp.image_id]  # the encrypted file is gone
    assert imp.unchanged


class SlowCreation(SlowRegistration):
    """A key manager whose ``create_key`` waits for a signal (``until``) first."""

    def __init__(self, inner: KeyManager, until: threading.Event) -> None:
        super().__init__(inner, threading.Event())
        self.creation_until = until
        self.creating = threading.Event()
        self.saw_encryption_before_the_key = False

    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        self.inner.add_consumer(key_id, consumer)

    def create_key(self, name: str | None = None) -> str:
        self.creating.set()
        self.saw_encryption_before_the_key = self.creation_until.wait(WAIT)
        return self.inner.create_key(name)


def test_the_key_is_made_while_the_data_is_encrypted(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creating = threading.Event()
    gate = Gate(monkeypatch, wait_for=creating)
    manager = SlowCreation(backend.manager, gate.started)
    manager.creating = creating
    data = os.urandom(100_000)
    imp = Import(tmp_path, data, make_conf(), using(manager))
    imp.run()
    assert manager.saw_encryption_before_the_key
    [key_id] = backend.keys()
    assert backend.consumer_ids(key_id) == [imp.image_id]
    out = io.BytesIO()
    with open(imp.encrypted, "rb") as file:
        envelope.decrypt(file, out, lambda kind, kid: backend.manager.get_key(kid),
                         image_id=uuid.UUID(imp.image_id))
    assert out.getvalue() == data


# --- the upload events of an image the plugin just registered ---------------------------------

class Recording(SlowRegistration):
    """A key manager that records the name of every call and otherwise passes it on."""

    def __init__(self, inner: KeyManager) -> None:
        super().__init__(inner, threading.Event())
        self.calls: list[str] = []

    def list_consumers(self, key_id: str) -> list[Consumer]:
        self.calls.append("list_consumers")
        return self.inner.list_consumers(key_id)

    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        self.calls.append("add_consumer")
        self.inner.add_consumer(key_id, consumer)


def uploaded(imp: Import) -> dict[str, Any]:
    """Glance's image.upload payload of the imported image."""
    image = imp.image
    return {"id": imp.image_id, "owner": "p", "status": "active",
            "properties": dict(image.extra_properties)}


def test_the_upload_events_of_an_image_just_imported_ask_the_key_manager_nothing(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager))
    imp.run()
    [key_id] = backend.keys()
    for _event in uploads.UPLOAD_EVENTS:
        watched = Recording(backend.manager)
        done = uploads.register_image(uploaded(imp), watched, service="image")
        assert done == uploads.Registration(imp.image_id, (key_id,))
        assert watched.calls == []
    assert backend.consumer_ids(key_id) == [imp.image_id]


def test_after_a_revert_the_upload_events_ask_the_key_manager_again(
        backend: Backend, tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"data", make_conf(kek_id=kek_id), using(backend.manager))
    imp.run()
    image = uploaded(imp)
    imp.task.revert(result=None)
    watched = Recording(backend.manager)
    uploads.register_image(image, watched, service="image")
    assert watched.calls == ["list_consumers", "add_consumer"]


def test_a_registration_noted_longer_ago_than_the_ttl_is_checked_again(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager))
    imp.run()
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + recent.TTL)
    watched = Recording(backend.manager)
    uploads.register_image(uploaded(imp), watched, service="image")
    assert watched.calls == ["list_consumers"]  # found there: nothing to add


def test_the_noted_registrations_are_bounded_oldest_first() -> None:
    consumers = [Consumer("image", "image", str(uuid.uuid4())) for _ in range(recent.LIMIT + 1)]
    for consumer in consumers:
        recent.note("k", consumer)
    assert not recent.registered("k", consumers[0])
    assert recent.registered("k", consumers[1]) and recent.registered("k", consumers[-1])


# --- what each step cost, in the log ----------------------------------------------------------

def test_an_import_logs_the_seconds_of_each_step_at_debug(
        backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imp = Import(tmp_path, os.urandom(100_000), make_conf(), using(backend.manager))
    with caplog.at_level(logging.DEBUG, logger="img_crypt.glance.plugin"):
        imp.run()
    [line] = [r.getMessage() for r in caplog.records
              if r.levelno == logging.DEBUG and r.getMessage().startswith(f"image {imp.image_id}:")]
    steps = dict(part.rsplit(" ", 2)[:2] for part in line.split(": ", 1)[1].split(", "))
    assert list(steps) == ["inspect", "manager", "key", "get", "consumer", "encrypt", "wait",
                           "publish", "unlink", "total"]
    assert all(float(seconds) >= 0 for seconds in steps.values())


# --- the key's payload, one request for a key made just now -----------------------------------

def secret_requests(proxy: CountingProxy) -> list[str]:
    """``GET <id>`` or ``GET payload`` per request on a secret (version documents left out)."""
    return [f"{x.method} {x.path.split('?')[0].rsplit('/', 1)[-1]}" for x in proxy.log()
            if x.path.startswith("/v1/secrets/")]


def test_a_key_the_manager_created_is_fetched_in_one_request(proxy: CountingProxy) -> None:
    manager = glance_keys.for_request(glance_conf(proxy.url, key_manager_auth="noauth"),
                                      Context())
    key_id = manager.create_key("k")
    proxy.clear()
    assert len(manager.get_key(key_id)) == 32
    assert secret_requests(proxy) == ["GET payload"]


def test_a_key_made_elsewhere_is_checked_to_be_binary_before_its_payload_is_fetched(
        proxy: CountingProxy) -> None:
    conf = glance_conf(proxy.url, key_manager_auth="noauth")
    key_id = glance_keys.for_request(conf, Context()).create_key("shared")
    reader = glance_keys.for_request(conf, Context())
    proxy.clear()
    assert len(reader.get_key(key_id)) == 32
    assert secret_requests(proxy) == [f"GET {key_id}", "GET payload"]


# --- the benchmark reads the step line as oslo.log writes it ----------------------------------

def test_the_import_sweep_reads_the_step_line_oslo_log_writes(
        backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        sweep = importlib.import_module("import_sweep")
    finally:
        sys.path.pop(0)
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager))
    with caplog.at_level(logging.DEBUG, logger="img_crypt.glance.plugin"):
        imp.run()
    text = "\n".join(f"2026-12-03 14:05:44.171 1 DEBUG {r.name} [-] {r.getMessage()} "
                     f"_encrypt /x/plugin.py:183" for r in caplog.records)
    steps = sweep._steps(text, imp.image_id)
    assert list(steps) == ["inspect", "manager", "key", "get", "consumer", "encrypt", "wait",
                           "publish", "unlink", "total"]

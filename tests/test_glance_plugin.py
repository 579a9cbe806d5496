"""The Glance image-import plugin ``image_encryption``, driven as Glance 33 drives it.

``FakeActionWrapper`` reproduces glance.async_.flows.api_image_import.ImportActionWrapper and
_ImportActions (glance 33.0.0): each ``with`` fetches a fresh copy of the image, checks the
import task lock, and saves only when the block exits without an exception; only five image
attributes may be set, and ``os_glance*`` extra properties are dropped. Glance is not
installed here, so the plugin raises RuntimeError where Glance would get UploadException.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskflow import task as tf_task
from taskflow.patterns import linear_flow

from barbican_mock import Faults
from img_crypt import envelope
from img_crypt._cobblestone import CHUNK
from img_crypt._io import DEFAULT_READ_SIZE
from img_crypt.envelope import Kek
from img_crypt.errors import BindingError
from img_crypt.glance import plugin
from img_crypt.glance import properties as props
from img_crypt.keys import naming
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore
from tests.support.backends import PROJECT, Backend, open_backend
from tests.support.glance_import import (
    RESERVED,
    FakeActionWrapper,
    FakeImage,
    FakeImageRepo,
    Import,
    make_conf,
    never,
    using,
)


@pytest.fixture(params=["local", "2026.2", "yoga"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=["2026.2", "yoga"])
def barbican(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


def decrypt(path: Path, backend: Backend, image_id: str) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as source:
        envelope.decrypt(source, out, backend.lookup(), image_id=uuid.UUID(image_id))
    return out.getvalue()


ENCRYPTED_PROPERTIES = {props.FORMAT, props.CIPHER, props.KEY_ID, props.DELETION_POLICY,
                        props.DECRYPT_CONTAINER_FORMAT, props.DECRYPT_SIZE, props.HEADER_LENGTH}


# --- a new key per image ----------------------------------------------------------------------

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, DEFAULT_READ_SIZE - 1, DEFAULT_READ_SIZE,
         DEFAULT_READ_SIZE + 1, 3 * DEFAULT_READ_SIZE + CHUNK + 7]


@pytest.mark.parametrize("size", SIZES)
def test_a_per_image_key_encrypts_the_staged_data_of_any_size(
        backend: Backend, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    imp = Import(tmp_path, data, make_conf(), using(backend.manager))
    result = imp.run()
    assert result == f"file://{imp.encrypted}"
    assert imp.staging_files() == [imp.encrypted.name]  # the plaintext is gone
    assert decrypt(imp.encrypted, backend, imp.image_id) == data
    image = imp.image
    assert image.size == imp.encrypted.stat().st_size
    assert image.extra_properties[props.DECRYPT_SIZE] == str(size)


def test_the_encrypted_file_decrypts_only_for_its_own_image(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"plaintext", make_conf(), using(backend.manager))
    imp.run()
    with pytest.raises(BindingError):
        decrypt(imp.encrypted, backend, str(uuid.uuid4()))


def test_a_per_image_key_import_describes_the_encrypted_image(
        backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(5000)
    imp = Import(tmp_path, data, make_conf(), using(backend.manager))
    imp.run()
    image = imp.image
    assert image.container_format == "encrypted"
    assert image.disk_format == "raw"
    assert image.status == "importing"
    assert image.size == imp.encrypted.stat().st_size
    extra = image.extra_properties
    [key_id] = backend.keys()
    with open(imp.encrypted, "rb") as file:
        header_length = envelope.inspect(file, size=image.size).header_size
    assert {k: v for k, v in extra.items() if not k.startswith(RESERVED)} == {
        "os_encrypt_format": "img-crypt-v1",
        "os_encrypt_cipher": "AES-256-GCM",
        "os_encrypt_key_id": key_id,
        "os_encrypt_key_deletion_policy": "on_image_deletion",
        "os_decrypt_container_format": "bare",
        "os_decrypt_size": "5000",
        "img_crypt_header_length": str(header_length),
    }
    assert extra["os_glance_import_task"] == imp.task_id  # Glance's own keys untouched
    assert extra["os_glance_importing_to_stores"] == "fast"


def test_a_per_image_key_is_named_after_the_image_and_has_it_as_only_consumer(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager))
    imp.run()
    [(key_id, name)] = backend.keys().items()
    assert name is not None and name.startswith(f"img-crypt-image-{imp.image_id}")
    assert backend.consumers(key_id) == [
        {"service": "image", "resource_type": "image", "resource_id": imp.image_id}]


def test_the_original_container_format_is_kept_for_decryption(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager),
                 container_format="ova")
    imp.run()
    assert imp.image.container_format == "encrypted"
    assert imp.image.extra_properties[props.DECRYPT_CONTAINER_FORMAT] == "ova"


def test_a_per_image_key_with_policy_do_not_delete_is_kept_with_the_image(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(key_deletion_policy="do_not_delete"),
                 using(backend.manager))
    imp.run()
    [(key_id, name)] = backend.keys().items()
    assert imp.image.extra_properties[props.DELETION_POLICY] == "do_not_delete"
    assert imp.image.extra_properties[props.KEY_ID] == key_id
    assert name is not None and not name.startswith(naming.PER_IMAGE_KEY_PREFIX)
    assert len(backend.consumers(key_id)) == 1


# --- one shared KEK ---------------------------------------------------------------------------

def test_a_shared_kek_is_used_as_is_and_kept_by_default(backend: Backend,
                                                        tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"shared data", make_conf(kek_id=kek_id), using(backend.manager))
    imp.run()
    assert list(backend.keys()) == [kek_id]  # no key created
    extra = imp.image.extra_properties
    assert extra[props.KEY_ID] == kek_id
    assert extra[props.DELETION_POLICY] == "do_not_delete"
    assert backend.consumers(kek_id) == [
        {"service": "image", "resource_type": "image", "resource_id": imp.image_id}]
    assert decrypt(imp.encrypted, backend, imp.image_id) == b"shared data"


def test_a_shared_kek_follows_an_explicit_deletion_policy(backend: Backend,
                                                          tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    conf = make_conf(kek_id=kek_id, key_deletion_policy="on_image_deletion")
    imp = Import(tmp_path, b"data", conf, using(backend.manager))
    imp.run()
    assert list(backend.keys()) == [kek_id]
    assert imp.image.extra_properties[props.DELETION_POLICY] == "on_image_deletion"


def test_two_images_on_a_shared_kek_are_both_its_consumers(backend: Backend,
                                                           tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    conf = make_conf(kek_id=kek_id)
    first = Import(tmp_path, b"one", conf, using(backend.manager))
    second = Import(tmp_path, b"two", conf, using(backend.manager))
    first.run()
    second.run()
    assert sorted(c["resource_id"] for c in backend.consumers(kek_id)) == \
        sorted([first.image_id, second.image_id])


# --- images encrypted by the client -----------------------------------------------------------

def client_encrypted(tmp_path: Path, image_id: str,
                     plaintext: bytes = b"client plaintext" * 100) -> tuple[bytes, KeyManager]:
    """The client's file and the key store holding its one key."""
    store = LocalKeyStore(tmp_path / "client-keys")
    key_id = store.create_key("client")
    out = io.BytesIO()
    envelope.encrypt(io.BytesIO(plaintext), out,
                     [Kek(kind="local", key_id=key_id, key=store.get_key(key_id))],
                     image_id=uuid.UUID(image_id))
    return out.getvalue(), store


def client_properties(store: KeyManager | None = None) -> dict[str, str]:
    """What the client sets: our format and its key (the one key of ``store``)."""
    key_id = store.list_keys()[0].key_id if store is not None else str(uuid.uuid4())
    return {props.FORMAT: props.FORMAT_NAME, props.KEY_ID: key_id}


def test_a_client_encrypted_image_bound_to_it_is_stored_unchanged(tmp_path: Path) -> None:
    image_id = str(uuid.uuid4())
    data, store = client_encrypted(tmp_path, image_id)
    imp = Import(tmp_path, data, make_conf(), using(store), image_id=image_id,
                 extra=client_properties(store))
    assert imp.run() == imp.file_path
    assert imp.staged.read_bytes() == data
    assert imp.staging_files() == [image_id]
    assert imp.unchanged
    assert len(store.list_keys()) == 1 and store.list_consumers(store.list_keys()[0].key_id) == []


def test_a_client_encrypted_image_bound_to_another_image_is_refused(tmp_path: Path) -> None:
    other = str(uuid.uuid4())
    data, store = client_encrypted(tmp_path, other)
    imp = Import(tmp_path, data, make_conf(), using(store), extra=client_properties(store))
    with pytest.raises(RuntimeError) as caught:
        imp.run()
    assert imp.image_id in str(caught.value) and other in str(caught.value)
    assert imp.unchanged


@pytest.mark.parametrize("garbage", [b"", b"not an img-crypt file", os.urandom(70000)])
def test_client_encrypted_garbage_is_refused(tmp_path: Path, garbage: bytes) -> None:
    _, store = client_encrypted(tmp_path, str(uuid.uuid4()))
    imp = Import(tmp_path, garbage, make_conf(), using(store), extra=client_properties(store))
    with pytest.raises(RuntimeError, match="img-crypt-v1"):
        imp.run()
    assert imp.unchanged


def test_a_client_encrypted_image_of_impossible_length_is_refused(tmp_path: Path) -> None:
    # Without the key only the length can be checked: one byte off a whole chunk plus the
    # empty final chunk leaves a length no payload has. (A cut inside the final chunk looks
    # like a shorter plaintext and is only caught when the image is decrypted.)
    image_id = str(uuid.uuid4())
    data, store = client_encrypted(tmp_path, image_id, os.urandom(CHUNK))
    imp = Import(tmp_path, data[:-1], make_conf(), using(store), image_id=image_id,
                 extra=client_properties(store))
    with pytest.raises(RuntimeError, match=image_id):
        imp.run()


def test_without_require_encryption_another_format_passes_through_without_reading_the_data(
        tmp_path: Path) -> None:
    imp = Import(tmp_path, b"LUKS\xba\xbe", make_conf(require_encryption=False), never,
                 extra={props.FORMAT: "LUKS", props.KEY_ID: str(uuid.uuid4())})
    imp.staged.unlink()  # nothing to read: the plugin must not try
    assert imp.run() == imp.file_path
    assert imp.unchanged


@pytest.mark.parametrize("stray", [props.KEY_ID, props.CIPHER, props.DELETION_POLICY])
def test_encryption_properties_without_a_format_are_refused_as_ambiguous(
        tmp_path: Path, stray: str) -> None:
    imp = Import(tmp_path, b"plaintext or not?", make_conf(), never, extra={stray: "x"})
    with pytest.raises(RuntimeError) as caught:
        imp.run()
    assert stray in str(caught.value) and props.FORMAT in str(caught.value)
    assert imp.unchanged


# --- failures and what they leave -------------------------------------------------------------

def test_a_refused_consumer_registration_fails_the_import_and_leaves_nothing(
        barbican: Backend, tmp_path: Path) -> None:
    assert barbican.mock is not None
    barbican.mock.faults.consumers_fail = 403
    data = os.urandom(3000)
    imp = Import(tmp_path, data, make_conf(), using(barbican.manager))
    with pytest.raises(RuntimeError, match="403"):
        imp.run()
    assert barbican.keys() == {}
    assert barbican.mock.counts()["consumers"] == 0
    assert imp.staging_files() == [imp.image_id]  # no .img-crypt file, plaintext still staged
    assert imp.unchanged


def test_revert_after_a_failed_import_requeues_the_image_and_clears_staging(
        barbican: Backend, tmp_path: Path) -> None:
    assert barbican.mock is not None
    barbican.mock.faults = Faults(consumers_fail=403)
    imp = Import(tmp_path, b"data", make_conf(), using(barbican.manager))
    with pytest.raises(RuntimeError):
        imp.run()
    imp.task.revert(result=None)
    image = imp.image
    assert image.status == "queued"
    assert image.container_format == "bare"
    assert image.extra_properties["os_glance_importing_to_stores"] == ""
    assert image.extra_properties["os_glance_failed_import"] == "fast"
    assert not set(image.extra_properties) & ENCRYPTED_PROPERTIES
    assert imp.staging_files() == []
    assert barbican.keys() == {} and barbican.mock.counts()["consumers"] == 0


def test_a_barbican_that_is_down_fails_the_import_with_one_clear_error(
        tmp_path: Path, down_url: str) -> None:
    manager = connect(url=down_url, project_id=PROJECT, backoff=0)
    imp = Import(tmp_path, b"data", make_conf(), using(manager))
    with pytest.raises(RuntimeError) as caught:
        imp.run()
    message = str(caught.value)
    assert message.startswith(f"image {imp.image_id} could not be encrypted: ")
    assert "cannot reach Barbican" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert imp.staging_files() == [imp.image_id]
    assert imp.unchanged


def test_a_missing_staged_file_fails_the_import_and_leaves_nothing(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager))
    imp.staged.unlink()
    with pytest.raises(Exception):  # noqa: B017 - whatever it is, the import must fail
        imp.run()
    assert backend.keys() == {}
    assert backend.all_consumers() == []
    assert imp.staging_files() == []
    assert imp.unchanged


def test_an_encryption_failing_midway_leaves_no_partial_file_key_or_consumer(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, source: Any, sink: Any, **kwargs: Any) -> Any:
        sink.write(b"half a payload")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envelope.Deferred, "encrypt", broken)
    imp = Import(tmp_path, os.urandom(100_000), make_conf(), using(backend.manager))
    with pytest.raises(OSError, match="No space left"):
        imp.run()
    assert imp.staging_files() == [imp.image_id]
    assert backend.keys() == {}
    assert backend.all_consumers() == []
    assert imp.unchanged


def test_an_encryption_failing_midway_under_a_shared_kek_keeps_the_kek_and_drops_the_consumer(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek_id = backend.manager.create_key("shared")

    def broken(self: Any, source: Any, sink: Any, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(envelope.Deferred, "encrypt", broken)
    imp = Import(tmp_path, b"data", make_conf(kek_id=kek_id), using(backend.manager))
    with pytest.raises(OSError):
        imp.run()
    assert list(backend.keys()) == [kek_id]
    assert backend.consumers(kek_id) == []
    assert imp.staging_files() == [imp.image_id]


def test_a_failed_import_keeps_a_consumer_that_was_on_the_shared_kek_before(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"data", make_conf(kek_id=kek_id), using(backend.manager))
    before = Consumer(service="image", resource_type="image", resource_id=imp.image_id)
    backend.manager.add_consumer(kek_id, before)  # an earlier import of the same image

    def broken(self: Any, source: Any, sink: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envelope.Deferred, "encrypt", broken)
    with pytest.raises(OSError):
        imp.run()
    imp.task.revert(result=None)
    assert backend.consumers(kek_id) == [before.to_dict()]
    assert list(backend.keys()) == [kek_id]


def test_revert_after_success_keeps_a_consumer_that_was_on_the_shared_kek_before(
        backend: Backend, tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"data", make_conf(kek_id=kek_id), using(backend.manager))
    before = Consumer(service="image", resource_type="image", resource_id=imp.image_id)
    backend.manager.add_consumer(kek_id, before)
    imp.task.revert(result=imp.run())
    assert backend.consumers(kek_id) == [before.to_dict()]


def test_a_consumer_service_too_long_fails_the_import_before_any_key_is_made(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(consumer_service="s" * 300),
                 using(backend.manager))
    with pytest.raises(RuntimeError, match="consumer service must be a string") as caught:
        imp.run()
    assert "\n" not in str(caught.value)
    assert backend.keys() == {}
    assert imp.staging_files() == [imp.image_id]
    assert imp.unchanged


def test_an_unknown_shared_kek_fails_the_import(backend: Backend, tmp_path: Path) -> None:
    missing = str(uuid.uuid4())
    imp = Import(tmp_path, b"data", make_conf(kek_id=missing), using(backend.manager))
    with pytest.raises(RuntimeError, match=missing):
        imp.run()
    assert backend.keys() == {}
    assert imp.staging_files() == [imp.image_id]


# --- revert after success (a later task of the import failed) ---------------------------------

def test_revert_after_success_undoes_the_per_image_key_and_the_image_changes(
        backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(), using(backend.manager))
    result = imp.run()
    imp.task.revert(result=result)
    image = imp.image
    assert backend.keys() == {}
    assert backend.all_consumers() == []
    assert not set(image.extra_properties) & ENCRYPTED_PROPERTIES
    assert image.container_format == "bare"
    assert image.status == "queued"
    assert image.extra_properties["os_glance_importing_to_stores"] == ""
    assert image.extra_properties["os_glance_failed_import"] == "fast"
    assert imp.staging_files() == []


def test_revert_after_success_keeps_a_shared_kek_but_removes_the_consumer(
        backend: Backend, tmp_path: Path) -> None:
    kek_id = backend.manager.create_key("shared")
    imp = Import(tmp_path, b"data", make_conf(kek_id=kek_id), using(backend.manager),
                 container_format="ovf")
    result = imp.run()
    imp.task.revert(result=result)
    assert list(backend.keys()) == [kek_id]
    assert backend.consumers(kek_id) == []
    assert imp.image.container_format == "ovf"
    assert not set(imp.image.extra_properties) & ENCRYPTED_PROPERTIES
    assert imp.image.status == "queued"
    assert imp.staging_files() == []


def test_revert_of_a_client_encrypted_passthrough_only_requeues(tmp_path: Path) -> None:
    image_id = str(uuid.uuid4())
    data, store = client_encrypted(tmp_path, image_id)
    imp = Import(tmp_path, data, make_conf(), using(store), image_id=image_id,
                 extra=client_properties(store))
    imp.task.revert(result=imp.run())
    assert imp.image.status == "queued"
    assert imp.image.extra_properties[props.FORMAT] == props.FORMAT_NAME  # the client's own
    assert imp.staging_files() == []


# --- configuration ----------------------------------------------------------------------------

def test_without_require_encryption_an_unreachable_barbican_stores_plaintext_with_a_warning(
        tmp_path: Path, down_url: str, caplog: pytest.LogCaptureFixture) -> None:
    manager = connect(url=down_url, project_id=PROJECT, backoff=0)
    imp = Import(tmp_path, b"plain", make_conf(require_encryption=False), using(manager))
    caplog.set_level(logging.WARNING, logger="img_crypt.glance.plugin")
    assert imp.run() == imp.file_path
    assert imp.staged.read_bytes() == b"plain"
    assert imp.staging_files() == [imp.image_id]
    assert imp.unchanged
    warnings = [r for r in caplog.records
                if r.name == "img_crypt.glance.plugin" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert imp.image_id in warnings[0].getMessage()
    assert "plaintext" in warnings[0].getMessage()


def test_without_require_encryption_a_refused_consumer_leaves_no_key(
        barbican: Backend, tmp_path: Path) -> None:
    assert barbican.mock is not None
    barbican.mock.faults.consumers_fail = 403
    imp = Import(tmp_path, b"plain", make_conf(require_encryption=False),
                 using(barbican.manager))
    assert imp.run() == imp.file_path
    assert barbican.keys() == {}
    assert imp.staging_files() == [imp.image_id]


@pytest.mark.parametrize("container_format", ["bare", "vhd-encrypted"])
def test_a_misconfigured_container_format_fails_naming_the_option(
        tmp_path: Path, container_format: str) -> None:
    imp = Import(tmp_path, b"data", make_conf(container_format=container_format), never)
    with pytest.raises(RuntimeError, match=r"\[image_encryption\] container_format"):
        imp.run()
    assert imp.staging_files() == [imp.image_id]
    assert imp.unchanged


def test_another_allowed_container_format_is_used(backend: Backend, tmp_path: Path) -> None:
    imp = Import(tmp_path, b"data", make_conf(container_format="compressed"),
                 using(backend.manager))
    imp.run()
    assert imp.image.container_format == "compressed"


def test_get_flow_returns_a_flow_with_one_encrypt_task(tmp_path: Path) -> None:
    repo = FakeImageRepo(FakeImage("00000000-0000-4000-8000-000000000001"))
    wrapper = FakeActionWrapper(repo, "00000000-0000-4000-8000-000000000001", "t1")
    flow = plugin.get_flow(task_id="t1", task_type="api_image_import", action_wrapper=wrapper,
                           context=None, backend=["fast"])
    assert isinstance(flow, linear_flow.Flow)
    [atom] = list(flow)
    assert isinstance(atom, plugin.EncryptImage) and isinstance(atom, tf_task.Task)
    assert atom.stores == ["fast"]
    assert atom.image_id == "00000000-0000-4000-8000-000000000001"
    assert "file_path" in atom.provides and "file_path" in atom.requires


# --- secrets hygiene --------------------------------------------------------------------------

class SecretSpy:
    """Records every KEK handed out and every 32-byte random value (the DEK is one)."""

    def __init__(self, manager: KeyManager, monkeypatch: pytest.MonkeyPatch) -> None:
        self.secrets: list[bytes] = []
        real_get, real_urandom = manager.get_key, os.urandom

        def get_key(key_id: str) -> bytes:
            key = real_get(key_id)
            self.secrets.append(key)
            return key

        def urandom(n: int) -> bytes:
            value = real_urandom(n)
            if n == 32:
                self.secrets.append(value)
            return value

        monkeypatch.setattr(manager, "get_key", get_key)
        monkeypatch.setattr(os, "urandom", urandom)

    def forms(self) -> list[str]:
        found = []
        for secret in self.secrets:
            found += [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
                      base64.urlsafe_b64encode(secret).decode(), repr(secret)[2:-1],
                      secret.decode("latin-1")]
        return found


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def assert_no_secret_logged(spy: SecretSpy, caplog: pytest.LogCaptureFixture) -> None:
    text = logged_text(caplog)
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for form in spy.forms():
        assert form not in text


def test_no_key_material_is_logged_during_a_successful_import(
        backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SecretSpy(backend.manager, monkeypatch)
    imp = Import(tmp_path, os.urandom(40_000), make_conf(), using(backend.manager))
    caplog.set_level(logging.DEBUG)
    imp.run()
    [key_id] = backend.keys()
    assert backend.manager.get_key(key_id) in spy.secrets  # the KEK is among the checked
    assert len(spy.secrets) >= 2  # and the DEK too
    if backend.mock is not None:  # the HTTP traffic was logged and looked at
        assert any(r.name == "keystoneauth.session" for r in caplog.records)
    assert_no_secret_logged(spy, caplog)


def test_no_key_material_is_logged_during_a_failing_import(
        barbican: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert barbican.mock is not None
    spy = SecretSpy(barbican.manager, monkeypatch)
    real_encrypt = envelope.Deferred.encrypt

    def failing(self: Any, source: Any, sink: Any, **kwargs: Any) -> Any:
        real_encrypt(self, source, sink, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envelope.Deferred, "encrypt", failing)
    imp = Import(tmp_path, os.urandom(40_000), make_conf(), using(barbican.manager))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OSError):
        imp.run()
    imp.task.revert(result=None)
    assert any(len(s) == 32 for s in spy.secrets) and len(spy.secrets) >= 2
    assert_no_secret_logged(spy, caplog)

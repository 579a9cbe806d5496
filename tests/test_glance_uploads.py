"""Every upload route: the keys an active image names get it as consumer; its delete and
reconcile treat it like an image the plugin encrypted; ``PUT /file`` claims are checked.

Fast: a local key store and barbican_mock eras, the in-Glance driver and the listener endpoint
called directly, the claim rules, the policy check and the paste filter with a stub Glance.
The same behaviours through a real Glance and Barbican: tests/test_e2e_glance_uploads.py.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import oslo_messaging
import pytest

from barbican_mock import MockBarbican
from img_crypt import envelope, luks, reconcile
from img_crypt.errors import ForbiddenError
from img_crypt.format import MAC_SIZE, WRAP_NONCE_SIZE, WRAPPED_DEK_SIZE, Header, KeySlot
from img_crypt.glance import claims, lifecycle, listener, notifier, upload_guard, uploads
from img_crypt.glance import properties as props
from img_crypt.glance.upload_policy import UploadCheck
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from tests.support.backends import PROJECT, Backend, open_backend
from tests.support.glance_import import glance_conf, make_conf

SERVICE = "image"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=30)


@pytest.fixture(params=["local", "2026.2", "yoga"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def mock() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2") as server:
        yield server


def consumer(image_id: str) -> Consumer:
    return Consumer(service=SERVICE, resource_type="image", resource_id=image_id)


def payload(status: str = "active", **properties: str) -> dict[str, Any]:
    """Glance's image notification payload (glance.notifier.format_image_notification)."""
    return {"id": str(uuid.uuid4()), "owner": PROJECT, "status": status,
            "disk_format": "raw", "container_format": "bare", "properties": properties}


def upload(backend: Backend, image: object) -> uploads.Registration | None:
    return uploads.on_image_upload(image, backend.manager_for, service=SERVICE)


# --- properties.key_claims --------------------------------------------------------------------

def test_key_claims_name_both_keys_each_under_its_own_policy() -> None:
    claimed = props.key_claims({props.KEY_ID: "a", props.DELETION_POLICY: "True",
                                props.CINDER_KEY_ID: "b"})
    assert claimed == {"a": props.ON_IMAGE_DELETION, "b": props.DO_NOT_DELETE}


def test_a_key_named_twice_is_deleted_only_when_both_policies_say_so() -> None:
    both = {props.KEY_ID: "k", props.CINDER_KEY_ID: "k"}
    assert props.key_claims({**both, props.DELETION_POLICY: "on_image_deletion"}) == \
        {"k": props.DO_NOT_DELETE}
    assert props.key_claims({**both, props.DELETION_POLICY: "on_image_deletion",
                             props.CINDER_DELETION_POLICY: "on_image_deletion"}) == \
        {"k": props.ON_IMAGE_DELETION}


@pytest.mark.parametrize("value", ["", "  ", None, 7])
def test_an_empty_or_non_text_key_id_is_no_claim(value: object) -> None:
    assert props.key_claims({props.KEY_ID: value, props.CINDER_KEY_ID: value}) == {}


# --- uploads.on_image_upload ------------------------------------------------------------------

def test_an_uploaded_image_with_os_encrypt_key_id_becomes_its_consumer(backend: Backend) -> None:
    key_id = backend.manager.create_key("client")
    image = payload(os_encrypt_format="LUKSv1", os_encrypt_key_id=key_id)
    done = upload(backend, image)
    assert done == uploads.Registration(image["id"], (key_id,))
    assert backend.consumer_ids(key_id) == [image["id"]]


def test_a_cinder_upload_becomes_a_consumer_of_cinder_encryption_key_id(
        backend: Backend) -> None:
    key_id = backend.manager.create_key("cinder")
    image = payload(cinder_encryption_key_id=key_id,
                    cinder_encryption_key_deletion_policy="on_image_deletion")
    assert upload(backend, image) == uploads.Registration(image["id"], (key_id,))
    assert backend.consumer_ids(key_id) == [image["id"]]


def test_a_repeated_event_registers_nothing_more(backend: Backend) -> None:
    key_id = backend.manager.create_key("again")
    image = payload(os_encrypt_format="img-crypt-v1", os_encrypt_key_id=key_id)
    upload(backend, image)
    upload(backend, {**image})  # image.activate after image.upload, or a redelivery
    assert backend.consumer_ids(key_id) == [image["id"]]


@pytest.mark.parametrize("image", [
    payload("saving", os_encrypt_key_id="k"), payload("queued", cinder_encryption_key_id="k"),
    payload(), "Image storage media is full: disk", None, {"status": "active"}],
    ids=["saving", "queued", "no-key", "error-text", "none", "no-properties"])
def test_nothing_is_asked_of_the_key_manager_for_images_without_a_claim_or_not_active(
        image: object) -> None:
    def manager_for(owner: str | None) -> KeyManager:
        raise AssertionError("the key manager must not be asked")

    assert uploads.on_image_upload(image, manager_for, service=SERVICE) is None


def test_a_missing_key_is_reported_and_the_other_key_still_registered(backend: Backend) -> None:
    key_id = backend.manager.create_key("present")
    gone = str(uuid.uuid4())
    image = payload(os_encrypt_key_id=gone, cinder_encryption_key_id=key_id)
    done = upload(backend, image)
    assert done == uploads.Registration(image["id"], (key_id,), (gone,))
    assert backend.consumer_ids(key_id) == [image["id"]]



def test_a_key_the_credentials_may_not_use_is_reported_as_refused_not_as_missing(
        backend: Backend, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """What img-crypt-listener's service user meets under Barbican's default policies: 403 on
    a key that exists (measured in tests/test_e2e_realauth_listener.py)."""
    key_id = backend.manager.create_key("theirs")

    def refuse(*_: object) -> None:
        raise ForbiddenError("list consumers of key: HTTP 403: Forbidden")

    for method in ("list_consumers", "add_consumer"):
        monkeypatch.setattr(backend.manager, method, refuse)
    image = payload(os_encrypt_key_id=key_id)
    with caplog.at_level("ERROR", logger="img_crypt.glance.uploads"):
        done = upload(backend, image)
    assert done == uploads.Registration(image["id"], (), (), (key_id,))
    assert uploads.MISSING_KEY not in caplog.text
    assert f"names key {key_id}: Barbican refused these credentials (HTTP 403)" in caplog.text

# --- the in-Glance driver and the listener dispatch upload events -----------------------------

def notify(driver: notifier.ImageDeleteDriver, event_type: str, body: object,
           priority: str = "INFO") -> None:
    driver.notify(ctxt={}, msg={"event_type": event_type, "payload": body},
                  priority=priority, retry=None)


@pytest.mark.parametrize("event", ["image.upload", "image.activate"])
def test_the_notifier_driver_registers_on_upload_events(mock: MockBarbican, event: str) -> None:
    key_id = connect(url=mock.url, project_id=PROJECT, backoff=0).create_key("client")
    image = payload(os_encrypt_format="LUKSv1", os_encrypt_key_id=key_id)
    driver = notifier.ImageDeleteDriver(glance_conf(mock.url, key_manager_auth="noauth"),
                                        ["notifications"], None)
    notify(driver, event, image)
    assert [c["resource_id"] for c in mock.consumers(key_id)] == [image["id"]]


def test_the_notifier_driver_ignores_glance_error_notifications(mock: MockBarbican) -> None:
    driver = notifier.ImageDeleteDriver(glance_conf(mock.url, key_manager_auth="noauth"),
                                        ["notifications"], None)
    before = mock.counts()["requests"]
    notify(driver, "image.upload", "Image storage media is full", priority="ERROR")
    notify(driver, "image.upload", payload(os_encrypt_key_id="k"), priority="ERROR")
    assert mock.counts()["requests"] == before


def test_the_listener_registers_on_image_activate(mock: MockBarbican) -> None:
    key_id = connect(url=mock.url, project_id=PROJECT, backoff=0).create_key("client")
    image = payload(cinder_encryption_key_id=key_id)
    endpoint = listener.DeleteEndpoint(glance_conf(mock.url, key_manager_auth="noauth"))
    assert endpoint.info({}, "image.host", "image.activate", image, {}) == \
        oslo_messaging.NotificationResult.HANDLED
    assert [c["resource_id"] for c in mock.consumers(key_id)] == [image["id"]]


def test_the_listener_filter_takes_upload_events() -> None:
    rule = listener.DeleteEndpoint.filter_rule
    assert [e for e in ("image.upload", "image.activate", "image.delete", "image.update")
            if rule.match({}, "image.host", e, {}, {})] == \
        ["image.upload", "image.activate", "image.delete"]


# --- delete: Cinder's key, under Cinder's policy ----------------------------------------------

def registered(backend: Backend, **properties: str) -> dict[str, Any]:
    image = payload(**properties)
    upload(backend, image)
    return {**image, "status": "deleted"}


def test_deleting_a_cinder_image_deletes_its_key_under_cinders_policy(backend: Backend) -> None:
    key_id = backend.manager.create_key("cinder")
    image = registered(backend, cinder_encryption_key_id=key_id,
                       cinder_encryption_key_deletion_policy="on_image_deletion")
    outcome = lifecycle.on_image_delete(image, backend.manager_for, service=SERVICE)
    assert outcome is not None and outcome.consumer_removed
    if backend.name == "yoga":  # below microversion 1.2 only a per-image key may go
        assert outcome.note == "kept: a shared key cannot be deleted safely below Barbican " \
                               "microversion 1.2" and backend.key_exists(key_id)
    else:
        assert outcome.key_deleted and not backend.key_exists(key_id)


def test_a_cinder_image_without_its_policy_keeps_its_key(backend: Backend) -> None:
    key_id = backend.manager.create_key("cinder")
    image = registered(backend, cinder_encryption_key_id=key_id,
                       os_encrypt_key_deletion_policy="on_image_deletion")  # not Cinder's
    outcome = lifecycle.on_image_delete(image, backend.manager_for, service=SERVICE)
    assert outcome is not None and outcome.consumer_removed and not outcome.key_deleted
    assert backend.key_exists(key_id) and backend.consumer_ids(key_id) == []


def test_an_image_with_two_keys_releases_both(backend: Backend) -> None:
    ours, cinder = backend.manager.create_key("ours"), backend.manager.create_key("cinder")
    image = registered(backend, os_encrypt_key_id=ours, os_encrypt_format="LUKSv1",
                       os_encrypt_key_deletion_policy="do_not_delete",
                       cinder_encryption_key_id=cinder)
    outcome = lifecycle.on_image_delete(image, backend.manager_for, service=SERVICE)
    assert outcome is not None and len(outcome.more) == 1
    assert [(o.key_id, o.consumer_removed, o.key_deleted) for o in (outcome, *outcome.more)] \
        == [(ours, True, False), (cinder, True, False)]
    assert backend.consumer_ids(ours) == backend.consumer_ids(cinder) == []


def test_a_cinder_key_never_registered_for_the_image_is_not_deleted(backend: Backend) -> None:
    """Properties are claims: without the consumer record, no proof the image used the key."""
    key_id = backend.manager.create_key("someone-elses")
    image = {**payload(cinder_encryption_key_id=key_id,
                       cinder_encryption_key_deletion_policy="on_image_deletion"),
             "status": "deleted"}
    outcome = lifecycle.on_image_delete(image, backend.manager_for, service=SERVICE)
    assert outcome is not None and not outcome.key_deleted and backend.key_exists(key_id)


# --- reconcile adds what an active image lacks ------------------------------------------------

def active(image_id: str, *key_ids: str, updated: datetime | None = OLD) -> reconcile.ActiveImage:
    return reconcile.ActiveImage(image_id, key_ids, updated)


def run_reconcile(backend: Backend, images: Iterable[reconcile.ActiveImage],
                  dry_run: bool = False) -> reconcile.Report:
    return reconcile.reconcile(backend.manager, lambda image_id: reconcile.ImageState.EXISTS,
                               service=SERVICE, dry_run=dry_run, now=NOW, active=images)


def test_reconcile_adds_the_missing_consumer_of_an_old_active_image(backend: Backend) -> None:
    key_id = backend.manager.create_key("lost")
    image_id = str(uuid.uuid4())
    report = run_reconcile(backend, [active(image_id, key_id)])
    assert report.added == [reconcile.AddedConsumer(key_id, image_id)]
    assert backend.consumer_ids(key_id) == [image_id]
    assert run_reconcile(backend, [active(image_id, key_id)]).added == []


@pytest.mark.parametrize("updated", [NOW - timedelta(hours=1), None], ids=["young", "unknown"])
def test_reconcile_leaves_an_image_within_the_grace_period(backend: Backend,
                                                           updated: datetime | None) -> None:
    key_id = backend.manager.create_key("young")
    report = run_reconcile(backend, [active(str(uuid.uuid4()), key_id, updated=updated)])
    assert report.added == [] and backend.consumer_ids(key_id) == []


def test_reconcile_dry_run_only_says_what_it_would_add(backend: Backend) -> None:
    key_id = backend.manager.create_key("dry")
    image_id = str(uuid.uuid4())
    report = run_reconcile(backend, [active(image_id, key_id)], dry_run=True)
    assert report.added == [reconcile.AddedConsumer(key_id, image_id)]
    assert backend.consumer_ids(key_id) == []


def test_reconcile_reports_a_key_an_active_image_names_but_the_project_lacks(
        backend: Backend) -> None:
    gone = str(uuid.uuid4())
    report = run_reconcile(backend, [active(str(uuid.uuid4()), gone)])
    assert report.added == []
    assert [k.key_id for k in report.kept] == [gone]
    assert "not found in this project" in report.kept[0].reason


# --- claims: which PUT /file may store its data -----------------------------------------------

IMAGE = str(uuid.uuid4())


@pytest.mark.parametrize(("properties", "accepted", "expected"), [
    ({}, (), "is not encrypted (no os_encrypt_format)"),
    ({"os_encrypt_format": ""}, (), "is not encrypted"),
    ({"os_encrypt_format": "img-crypt-v1", "os_encrypt_key_id": "k"}, (), None),
    ({"os_encrypt_format": "LUKSv1", "os_encrypt_key_id": "k"}, (), None),
    ({"cinder_encryption_key_id": "k"}, (), None),
    ({"os_encrypt_format": "LUKSv1"}, (), "needs os_encrypt_key_id"),
    ({"os_encrypt_format": "luks", "os_encrypt_key_id": "k"}, (), None),  # Nova's prototype
    ({"os_encrypt_format": "luks ", "os_encrypt_key_id": "k"}, (), "not accepted"),
    ({"os_encrypt_format": "Luks", "os_encrypt_key_id": "k"}, (), "not accepted"),
    ({"os_encrypt_format": "LUKSV1", "os_encrypt_key_id": "k"}, (), "not accepted"),
    ({"os_encrypt_format": "img-crypt-v1\n", "os_encrypt_key_id": "k"}, (), "not accepted"),
])
def test_property_rule(properties: dict[str, str], accepted: tuple[str, ...],
                       expected: str | None) -> None:
    refusal = claims.property_refusal(IMAGE, properties, accepted)
    assert refusal is None if expected is None else expected in (refusal or "")


def ours(backend: Backend, key_id: str, image_id: str, data: bytes = b"x" * 5000) -> bytes:
    out = io.BytesIO()
    kek = envelope.Kek(backend.manager.kind, key_id, backend.manager.get_key(key_id))
    envelope.encrypt(data, out, [kek], image_id=uuid.UUID(image_id))
    return out.getvalue()


def forged(kind: str, key_id: str, image_id: str) -> bytes:
    slot = KeySlot(kind=kind, key_id=key_id, nonce=os.urandom(WRAP_NONCE_SIZE),
                   wrapped_dek=os.urandom(WRAPPED_DEK_SIZE))
    header = Header(slots=(slot,), image_id=uuid.UUID(image_id))
    return replace(header, mac=os.urandom(MAC_SIZE)).encode()


def data_refusal(backend: Backend, head: bytes, **properties: str) -> str | None:
    return claims.data_refusal(IMAGE, properties, head[:claims.HEAD_SIZE], backend.manager)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("local", tmp_path) as opened:
        yield opened


def test_our_file_bound_to_the_image_with_its_key_passes(local: Backend) -> None:
    key_id = local.manager.create_key("k")
    assert data_refusal(local, ours(local, key_id, IMAGE), os_encrypt_format="img-crypt-v1",
                        os_encrypt_key_id=key_id) is None


@pytest.mark.parametrize("case", ["forged", "other-image", "other-key", "plaintext", "short"])
def test_our_claim_fails_without_a_header_that_opens_with_its_key(local: Backend,
                                                                   case: str) -> None:
    key_id, other = local.manager.create_key("k"), local.manager.create_key("other")
    head = {"forged": forged(local.manager.kind, key_id, IMAGE) + b"plain" * 2000,
            "other-image": ours(local, key_id, str(uuid.uuid4())),
            "other-key": ours(local, other, IMAGE),
            "plaintext": b"plain" * 2000,
            "short": ours(local, key_id, IMAGE)[:100]}[case]
    refusal = data_refusal(local, head, os_encrypt_format="img-crypt-v1",
                           os_encrypt_key_id=key_id)
    assert refusal is not None and "does not start with a valid header" in refusal


def luks1(local: Backend, key_id: str) -> bytes:
    out = io.BytesIO()
    luks.encrypt(b"disk" * 300, out, luks.passphrase(local.manager.get_key(key_id), key_id))
    return out.getvalue()


@pytest.mark.parametrize("claim", ["os", "cinder"])
def test_a_luks1_header_with_an_existing_key_passes(local: Backend, claim: str) -> None:
    key_id = local.manager.create_key("k")
    properties = {"os_encrypt_format": "LUKSv1", "os_encrypt_key_id": key_id} \
        if claim == "os" else {"cinder_encryption_key_id": key_id}
    assert data_refusal(local, luks1(local, key_id), **properties) is None


@pytest.mark.parametrize(("head", "reason"), [
    (b"\0" * 4096, "does not start with a LUKS header"),
    (b"LUKS\xba\xbe\x00\x02" + b"\0" * 4096, "is not LUKS version 1"),
    (b"LUKS\xba\xbe\x00\x01", "does not start with a LUKS header"),
], ids=["plaintext", "luks2", "truncated"])
def test_a_luks_claim_needs_a_luks1_header(local: Backend, head: bytes, reason: str) -> None:
    key_id = local.manager.create_key("k")
    refusal = data_refusal(local, head, cinder_encryption_key_id=key_id)
    assert refusal is not None and reason in refusal


def test_a_luks_claim_needs_an_existing_key(local: Backend) -> None:
    key_id = local.manager.create_key("k")
    refusal = data_refusal(local, luks1(local, key_id), os_encrypt_format="LUKSv1",
                           os_encrypt_key_id=str(uuid.uuid4()))
    assert refusal is not None and "cannot be used" in refusal


# --- the img_crypt:upload policy check --------------------------------------------------------

def check(target: dict[str, str], **options: Any) -> bool:
    enforcer = SimpleNamespace(conf=make_conf(**options))
    return UploadCheck("img_crypt", "upload")(target, {}, enforcer, "upload_image")


def test_the_policy_check_refuses_plaintext_and_allows_claims() -> None:
    assert not check({"id": IMAGE})
    assert check({"id": IMAGE, "os_encrypt_format": "LUKSv1", "os_encrypt_key_id": "k"})
    assert check({"id": IMAGE, "os_encrypt_format": "luks", "os_encrypt_key_id": "k"})
    assert not check({"id": IMAGE, "os_encrypt_format": "vendor-x", "os_encrypt_key_id": "k"})
    assert check({"id": IMAGE, "os_encrypt_format": "vendor-x", "os_encrypt_key_id": "k"},
                 accepted_formats=["vendor-x"])


def test_the_policy_check_allows_everything_without_require_encryption() -> None:
    assert check({"id": IMAGE}, require_encryption=False)


def test_an_unknown_policy_check_name_refuses() -> None:
    enforcer = SimpleNamespace(conf=make_conf())
    assert not UploadCheck("img_crypt", "uploads")({"id": IMAGE, "os_encrypt_format": "LUKSv1",
                                                    "os_encrypt_key_id": "k"}, {}, enforcer)


# --- the paste filter, in front of a stub Glance ----------------------------------------------

class StubGlance:
    """Answers GET /v2/images/{id} with ``image`` and records what a PUT delivered."""

    def __init__(self, image: dict[str, Any]) -> None:
        self.image, self.received = image, b""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(self.image).encode()]
        stream, left = environ["wsgi.input"], int(environ["CONTENT_LENGTH"])
        while left:  # as webob does: a short read means a disconnection
            part = stream.read(min(left, 1000))
            assert len(part) == min(left, 1000)
            self.received += part
            left -= len(part)
        start_response("204 No Content", [])
        return []


def put(app: Any, image_id: str, body: bytes) -> tuple[str, bytes]:
    status: list[str] = []
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": f"/v2/images/{image_id}/file",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    out = b"".join(app(environ, lambda code, headers, exc=None: status.append(code)))
    return status[0], out


def test_the_filter_refuses_plaintext_and_glance_never_sees_the_data() -> None:
    stub = StubGlance({"id": IMAGE, "status": "queued"})
    status, body = put(upload_guard.UploadGuard(stub, make_conf()), IMAGE, b"plain" * 5000)
    assert status.startswith("400")
    assert "img-crypt: upload refused: image " + IMAGE in json.loads(body)["error"]["message"]
    assert stub.received == b""


def test_the_filter_passes_an_accepted_body_to_glance_unchanged(
        local: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    key_id = local.manager.create_key("k")
    monkeypatch.setattr(upload_guard, "for_request", lambda conf, context: local.manager)
    data = ours(local, key_id, IMAGE, os.urandom(50_000))
    stub = StubGlance({"id": IMAGE, "os_encrypt_format": "img-crypt-v1",
                       "os_encrypt_key_id": key_id})
    status, _ = put(upload_guard.UploadGuard(stub, make_conf()), IMAGE, data)
    assert status.startswith("204") and stub.received == data


def test_the_filter_lets_everything_through_without_require_encryption() -> None:
    stub = StubGlance({"id": IMAGE})
    status, _ = put(upload_guard.UploadGuard(stub, make_conf(require_encryption=False)),
                    IMAGE, b"plain")
    assert status.startswith("204") and stub.received == b"plain"

"""What happens to an encrypted image's key when the image goes, and the Glance-side plumbing.

``lifecycle.on_image_delete`` against the local store and barbican_mock eras; the in-Glance
notifier driver; img-crypt-listener over oslo.messaging's in-process ``fake://`` transport;
the option list; and the key managers built from Glance's configuration.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
from keystoneauth1 import noauth as ks_noauth
from oslo_config import cfg
from oslo_context.context import RequestContext

from barbican_mock import MockBarbican
from img_crypt.errors import KeyManagerError, UnavailableError
from img_crypt.glance import keys as glance_keys
from img_crypt.glance import lifecycle, listener, notifier, opts, retry_worker
from img_crypt.glance import properties as props
from img_crypt.glance.context_auth import ContextAuth
from img_crypt.glance.retry_worker import RetryWorker
from img_crypt.keys import naming
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from tests.support.backends import PROJECT, Backend, open_backend
from tests.support.glance_import import glance_conf

SERVICE = "image"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Managers built from Glance's configuration retry without sleeping (same attempts)."""
    monkeypatch.setattr(glance_keys, "BarbicanKeyManager",
                        functools.partial(BarbicanKeyManager, backoff=0))


# --- lifecycle.on_image_delete ----------------------------------------------------------------

@pytest.fixture(params=["local", "2026.2", "zed", "yoga"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as opened:
        yield opened


def consumer(image_id: str, service: str = SERVICE) -> Consumer:
    return Consumer(service=service, resource_type="image", resource_id=image_id)


def encrypted_image(manager: KeyManager, policy: str | None = "on_image_deletion", *,
                    key_id: str | None = None, register: bool = True) -> dict[str, Any]:
    """An image.delete payload of an image the plugin encrypted (its consumer registered)."""
    image_id = str(uuid.uuid4())
    key_id = key_id or manager.create_key(f"{naming.PER_IMAGE_KEY_PREFIX}{image_id}")
    if register:
        manager.add_consumer(key_id, consumer(image_id))
    properties = {props.FORMAT: props.FORMAT_NAME, props.KEY_ID: key_id}
    if policy is not None:
        properties[props.DELETION_POLICY] = policy
    return {"id": image_id, "owner": PROJECT, "status": "deleted", "deleted": True,
            "container_format": "encrypted", "disk_format": "raw", "properties": properties}


def delete(backend: Backend, image: dict[str, Any]) -> lifecycle.Outcome | None:
    return lifecycle.on_image_delete(image, backend.manager_for, service=SERVICE)


def test_deleting_an_image_removes_its_consumer_and_its_per_image_key(backend: Backend) -> None:
    image = encrypted_image(backend.manager)
    key_id = image["properties"][props.KEY_ID]
    outcome = delete(backend, image)
    assert outcome == lifecycle.Outcome(image["id"], key_id, consumer_removed=True,
                                        key_deleted=True)
    assert not backend.key_exists(key_id)


def test_policy_do_not_delete_removes_the_consumer_and_keeps_the_key(backend: Backend) -> None:
    image = encrypted_image(backend.manager, "do_not_delete")
    key_id = image["properties"][props.KEY_ID]
    outcome = delete(backend, image)
    assert outcome is not None
    assert outcome.consumer_removed and not outcome.key_deleted
    assert backend.key_exists(key_id)
    assert backend.consumer_ids(key_id) == []


@pytest.mark.parametrize("policy", ["True", "true", " On_Image_Deletion "])
def test_policy_true_means_on_image_deletion(backend: Backend, policy: str) -> None:
    image = encrypted_image(backend.manager, policy)
    outcome = delete(backend, image)
    assert outcome is not None and outcome.key_deleted
    assert not backend.key_exists(image["properties"][props.KEY_ID])


@pytest.mark.parametrize("policy", ["maybe", "False", "", None])
def test_an_unknown_or_missing_policy_keeps_the_key(backend: Backend,
                                                    policy: str | None) -> None:
    image = encrypted_image(backend.manager, policy)
    key_id = image["properties"][props.KEY_ID]
    outcome = delete(backend, image)
    assert outcome is not None and outcome.consumer_removed and not outcome.key_deleted
    assert backend.key_exists(key_id)
    assert backend.consumer_ids(key_id) == []


def test_a_key_shared_by_two_images_goes_with_the_last_of_them(backend: Backend) -> None:
    first = encrypted_image(backend.manager)
    key_id = first["properties"][props.KEY_ID]
    second = encrypted_image(backend.manager, key_id=key_id)
    outcome = delete(backend, first)
    assert outcome is not None
    assert outcome.consumer_removed and not outcome.key_deleted
    assert "other consumers remain" in outcome.note
    assert backend.key_exists(key_id)
    assert backend.consumer_ids(key_id) == [second["id"]]
    outcome = delete(backend, second)
    assert outcome is not None and outcome.consumer_removed and outcome.key_deleted
    assert not backend.key_exists(key_id)


def test_a_repeated_notification_is_harmless(backend: Backend) -> None:
    image = encrypted_image(backend.manager, "do_not_delete")
    key_id = image["properties"][props.KEY_ID]
    delete(backend, image)
    outcome = delete(backend, image)
    assert outcome is not None
    assert not outcome.consumer_removed and not outcome.key_deleted
    assert backend.key_exists(key_id)


def test_a_repeated_notification_deletes_the_images_own_per_image_key(backend: Backend) -> None:
    """The first delivery removed the consumer but its answer (or its key delete) was lost."""
    image = encrypted_image(backend.manager)
    key_id = image["properties"][props.KEY_ID]
    backend.manager.remove_consumer(key_id, consumer(image["id"]))  # the first delivery
    outcome = delete(backend, image)
    assert outcome is not None and outcome.key_deleted and not outcome.consumer_removed
    assert not backend.key_exists(key_id)


@pytest.mark.parametrize("name", ["shared", f"{naming.PER_IMAGE_KEY_PREFIX}{uuid.UUID(int=1)}",
                                  "img-crypt-kept-{image}", "{image}"])
def test_a_repeated_notification_never_deletes_a_key_not_made_for_this_image(
        backend: Backend, name: str) -> None:
    """A shared key, another image's key, a key made to be kept: only a consumer proves use."""
    image_id = str(uuid.uuid4())
    key_id = backend.manager.create_key(name.format(image=image_id))
    image = encrypted_image(backend.manager, key_id=key_id, register=False)
    image["id"] = image_id
    outcome = delete(backend, image)
    assert outcome is not None and not outcome.key_deleted
    assert "not a consumer" in outcome.note
    assert backend.key_exists(key_id)


def test_an_image_naming_a_key_it_never_used_cannot_get_that_key_deleted(
        backend: Backend) -> None:
    victim = encrypted_image(backend.manager, "do_not_delete")
    key_id = victim["properties"][props.KEY_ID]
    unused = backend.manager.create_key("someone else's")
    for target in (key_id, unused):  # a key with consumers, and one without any
        attacker = encrypted_image(backend.manager, key_id=target, register=False)
        outcome = delete(backend, attacker)
        assert outcome is not None and not outcome.key_deleted
        assert "not a consumer" in outcome.note
        assert backend.key_exists(target)
    assert backend.consumer_ids(key_id) == [victim["id"]]


def test_a_key_already_deleted_is_an_outcome_not_an_error(backend: Backend) -> None:
    image = encrypted_image(backend.manager)
    key_id = image["properties"][props.KEY_ID]
    backend.manager.delete_key(key_id, force=True)
    outcome = delete(backend, image)
    assert outcome is not None
    assert not outcome.consumer_removed and not outcome.key_deleted
    assert "already deleted" in outcome.note


def test_an_image_without_a_key_id_is_ignored_without_a_key_manager() -> None:
    def manager_for(owner: str | None) -> KeyManager:
        raise AssertionError("no key manager is needed for an unencrypted image")

    for properties in ({}, {props.FORMAT: "LUKS"}, {props.KEY_ID: ""}, None):
        image = {"id": str(uuid.uuid4()), "owner": PROJECT, "properties": properties}
        assert lifecycle.on_image_delete(image, manager_for, service=SERVICE) is None
    assert lifecycle.on_image_delete({"id": "x"}, manager_for, service=SERVICE) is None


def test_the_consumer_service_name_is_the_callers(backend: Backend) -> None:
    image = encrypted_image(backend.manager, "do_not_delete", register=False)
    key_id = image["properties"][props.KEY_ID]
    backend.manager.add_consumer(key_id, consumer(image["id"], service="glance"))
    outcome = lifecycle.on_image_delete(image, backend.manager_for, service="glance")
    assert outcome is not None and outcome.consumer_removed
    assert backend.consumer_ids(key_id) == []


@pytest.mark.parametrize("era", ["2026.2", "zed", "yoga"])
def test_a_barbican_failing_longer_than_the_retries_propagates_unavailable(era: str) -> None:
    with MockBarbican(era=era) as mock:
        backend = Backend(era, connect(url=mock.url, project_id=PROJECT, backoff=0), mock)
        image = encrypted_image(backend.manager)
        key_id = image["properties"][props.KEY_ID]
        mock.faults.error_burst = 20
        with pytest.raises(UnavailableError):
            delete(backend, image)
        mock.faults.error_burst = 0
        assert backend.key_exists(key_id)
        assert backend.consumer_ids(key_id) == [image["id"]]  # a retry will find it all


def test_a_barbican_that_is_down_propagates_unavailable(down_url: str) -> None:
    manager = connect(url=down_url, project_id=PROJECT, backoff=0)
    image = {"id": str(uuid.uuid4()), "owner": PROJECT,
             "properties": {props.KEY_ID: str(uuid.uuid4()),
                            props.DELETION_POLICY: "on_image_deletion"}}
    with pytest.raises(UnavailableError):
        lifecycle.on_image_delete(image, lambda owner: manager, service=SERVICE)


# --- configuration helpers --------------------------------------------------------------------

# --- the in-Glance notifier driver ------------------------------------------------------------

@pytest.fixture
def mock() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2") as server:
        yield server


def barbican_image(mock: MockBarbican, policy: str = "on_image_deletion") -> dict[str, Any]:
    return encrypted_image(connect(url=mock.url, project_id=PROJECT, backoff=0), policy)


def notify(driver: notifier.ImageDeleteDriver, event_type: str,
           payload: dict[str, Any]) -> None:
    driver.notify(ctxt={}, msg={"event_type": event_type, "payload": payload},
                  priority="INFO", retry=None)


def test_the_notifier_driver_cleans_up_after_an_image_delete(mock: MockBarbican) -> None:
    image = barbican_image(mock)
    key_id = image["properties"][props.KEY_ID]
    driver = notifier.ImageDeleteDriver(glance_conf(mock.url, key_manager_auth="noauth"),
                                        ["notifications"], None)
    notify(driver, "image.delete", image)
    assert mock.consumers(key_id) == []
    assert mock.secrets() == []


def test_the_notifier_driver_ignores_other_events(mock: MockBarbican) -> None:
    image = barbican_image(mock)
    driver = notifier.ImageDeleteDriver(glance_conf(mock.url, key_manager_auth="noauth"),
                                        ["notifications"], None)
    before = mock.counts()["requests"]
    for event in ("image.update", "image.create", "image.upload", "image.deleted"):
        notify(driver, event, image)
    assert mock.counts()["requests"] == before
    assert len(mock.consumers(image["properties"][props.KEY_ID])) == 1


def test_the_notifier_driver_logs_an_unreachable_barbican_does_not_raise_and_retries_later(
        down_url: str, caplog: pytest.LogCaptureFixture, fast_retries: None,
        own_retry_worker: RetryWorker) -> None:
    driver = notifier.ImageDeleteDriver(glance_conf(down_url, key_manager_auth="noauth"),
                                        ["notifications"], None)
    image_id = str(uuid.uuid4())
    payload = {"id": image_id, "owner": PROJECT,
               "properties": {props.KEY_ID: str(uuid.uuid4())}}
    with caplog.at_level(logging.WARNING, logger=retry_worker.LOG.name):
        notify(driver, "image.delete", payload)
    warnings = [r.getMessage() for r in caplog.records if r.name == retry_worker.LOG.name]
    assert len(warnings) == 1
    assert image_id in warnings[0] and "cannot reach Barbican" in warnings[0]
    assert "attempt 2 of 6 in 10.0 s" in warnings[0]  # the defaults: 5 retries from 10 s
    assert own_retry_worker.pending() == [f"key cleanup of deleted image {image_id}"]


def test_the_default_delete_hook_budget_is_at_most_two_seconds() -> None:
    assert 0 < glance_conf()[opts.GROUP].delete_hook_budget <= 2.0


def test_the_notifier_driver_holds_glance_no_longer_than_its_budget(
        mock: MockBarbican, monkeypatch: pytest.MonkeyPatch,
        own_retry_worker: RetryWorker) -> None:
    """A cleanup that hangs goes on in the background; Glance's DELETE is not held."""
    release, finished = threading.Event(), threading.Event()

    def hanging_cleanup(conf: cfg.ConfigOpts, payload: dict[str, Any], context: Any) -> None:
        release.wait(10)
        finished.set()

    monkeypatch.setitem(notifier.HANDLERS, "image.delete",
                        (hanging_cleanup, "key cleanup of deleted image"))
    driver = notifier.ImageDeleteDriver(
        glance_conf(mock.url, key_manager_auth="noauth", delete_hook_budget=0.3),
        ["notifications"], None)
    began = time.monotonic()
    notify(driver, "image.delete", barbican_image(mock))
    assert 0.3 <= time.monotonic() - began < 1.5
    assert not finished.is_set()
    release.set()
    assert finished.wait(5)


def test_the_notifier_driver_finishes_the_cleanup_in_the_background_once_barbican_is_back(
        mock: MockBarbican, fast_retries: None, own_retry_worker: RetryWorker) -> None:
    image = barbican_image(mock)
    key_id = image["properties"][props.KEY_ID]
    driver = notifier.ImageDeleteDriver(
        glance_conf(mock.url, key_manager_auth="noauth", delete_hook_budget=0.5,
                    delete_hook_retry_delay=0.2), ["notifications"], None)
    mock.stop()
    try:
        notify(driver, "image.delete", image)
        assert len(own_retry_worker.pending()) == 1
    finally:
        mock.start()  # same port, same state
    deadline = time.monotonic() + 10
    while mock.secrets() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock.secrets() == [] and mock.consumers(key_id) == []


def test_the_notifier_driver_swallows_even_unexpected_errors(
        mock: MockBarbican, caplog: pytest.LogCaptureFixture,
        own_retry_worker: RetryWorker) -> None:
    driver = notifier.ImageDeleteDriver(glance_conf(mock.url, key_manager_auth="noauth"),
                                        ["notifications"], None)
    with caplog.at_level(logging.ERROR, logger=retry_worker.LOG.name):
        notify(driver, "image.delete", {"properties": {props.KEY_ID: str(uuid.uuid4())}})
    assert any(r.name == retry_worker.LOG.name and r.exc_info
               and "img-crypt reconcile" in r.getMessage() for r in caplog.records)
    assert own_retry_worker.pending() == []  # not retried


@pytest.mark.parametrize("policy", ["on_image_deletion", "True", "do_not_delete"])
def test_the_notifier_driver_never_deletes_the_configured_kek_whatever_the_image_claims(
        mock: MockBarbican, policy: str) -> None:
    """Properties are claims, configuration is authority: the shared kek_id stays."""
    manager = connect(url=mock.url, project_id=PROJECT, backoff=0)
    kek = manager.create_key("shared")
    image = encrypted_image(manager, policy, key_id=kek)
    driver = notifier.ImageDeleteDriver(
        glance_conf(mock.url, key_manager_auth="noauth", kek_id=kek), ["notifications"], None)
    notify(driver, "image.delete", image)
    assert mock.consumers(kek) == []  # the consumer still goes
    assert [s["id"] for s in mock.secrets()] == [kek]


def test_the_configured_kek_survives_even_when_named_like_the_images_own_key(
        backend: Backend) -> None:
    """Neither a first delivery nor a redelivery deletes a configured key."""
    image = encrypted_image(backend.manager)
    kek = image["properties"][props.KEY_ID]
    for _ in range(2):
        outcome = lifecycle.on_image_delete(image, backend.manager_for, service=SERVICE,
                                            configured=[kek])
        assert outcome is not None and not outcome.key_deleted
        assert "kek_id" in outcome.note
    assert backend.key_exists(kek) and backend.consumer_ids(kek) == []


def test_the_listener_never_deletes_the_configured_kek(mock: MockBarbican) -> None:
    manager = connect(url=mock.url, project_id=PROJECT, backoff=0)
    kek = manager.create_key("shared")
    image = encrypted_image(manager, "on_image_deletion", key_id=kek)
    endpoint = listener.DeleteEndpoint(glance_conf(mock.url, key_manager_auth="noauth",
                                                   kek_id=kek))
    assert endpoint.info({}, "image.host", "image.delete", image, {}) == \
        oslo_messaging.NotificationResult.HANDLED
    assert mock.consumers(kek) == [] and [s["id"] for s in mock.secrets()] == [kek]


# --- img-crypt-listener -----------------------------------------------------------------------

def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_listener_cleans_up_after_an_image_delete_notification(mock: MockBarbican) -> None:
    conf = glance_conf(mock.url, key_manager_auth="noauth")
    oslo_messaging.get_notification_transport(conf, url="fake://").cleanup()  # its options
    conf.set_override("control_exchange", "glance")  # Glance's exchange, as Glance sets it
    transport = oslo_messaging.get_notification_transport(conf, url="fake://")
    updated, deleted = barbican_image(mock), barbican_image(mock)
    server = listener.build(conf, transport)
    server.start()
    try:
        sender = oslo_messaging.Notifier(transport, driver="messaging", topics=["notifications"],
                                         publisher_id="image.host")
        sender.info({}, "image.update", updated)
        sender.info({}, "image.delete", deleted)
        deleted_key = deleted["properties"][props.KEY_ID]
        assert wait_for(lambda: deleted_key not in {s["id"] for s in mock.secrets()})
    finally:
        server.stop()
        server.wait()
        transport.cleanup()
    updated_key = updated["properties"][props.KEY_ID]
    assert [c["resource_id"] for c in mock.consumers(updated_key)] == [updated["id"]]
    assert {s["id"] for s in mock.secrets()} == {updated_key}


def test_the_listener_listens_on_the_glance_exchange_with_its_own_pool() -> None:
    conf = glance_conf(None, listener_pool="pool-x", listener_topics=["a", "b"])
    transport = oslo_messaging.get_notification_transport(conf, url="fake://")
    try:
        server = listener.build(conf, transport)
        assert listener.EXCHANGE == "glance"
        assert server.dispatcher is not None
        targets = [(t.topic, t.exchange) for t, _ in server._targets_priorities]
        assert sorted(set(targets)) == [("a", "glance"), ("b", "glance")]
        assert server._pool == "pool-x"
    finally:
        transport.cleanup()


def test_the_delete_endpoint_handles_a_delete(mock: MockBarbican) -> None:
    image = barbican_image(mock)
    endpoint = listener.DeleteEndpoint(glance_conf(mock.url, key_manager_auth="noauth"))
    result = endpoint.info({}, "image.host", "image.delete", image, {})
    assert result == oslo_messaging.NotificationResult.HANDLED
    assert mock.secrets() == []


def test_the_delete_endpoint_handles_other_events_by_ignoring_them(mock: MockBarbican) -> None:
    image = barbican_image(mock)
    endpoint = listener.DeleteEndpoint(glance_conf(mock.url, key_manager_auth="noauth"))
    result = endpoint.info({}, "image.host", "image.update", image, {})
    assert result == oslo_messaging.NotificationResult.HANDLED
    assert len(mock.secrets()) == 1


def test_the_delete_endpoint_requeues_while_barbican_is_unavailable(
        down_url: str, fast_retries: None) -> None:
    endpoint = listener.DeleteEndpoint(glance_conf(down_url, key_manager_auth="noauth"))
    payload = {"id": str(uuid.uuid4()), "owner": PROJECT,
               "properties": {props.KEY_ID: str(uuid.uuid4())}}
    result = endpoint.info({}, "image.host", "image.delete", payload, {})
    assert result == oslo_messaging.NotificationResult.REQUEUE


def test_the_delete_endpoint_does_not_requeue_a_delete_that_cannot_succeed(
        mock: MockBarbican) -> None:
    endpoint = listener.DeleteEndpoint(glance_conf(mock.url, key_manager_auth="noauth"))
    payload = {"id": str(uuid.uuid4()), "owner": None,  # noauth needs the owner's project
               "properties": {props.KEY_ID: str(uuid.uuid4())}}
    result = endpoint.info({}, "image.host", "image.delete", payload, {})
    assert result == oslo_messaging.NotificationResult.HANDLED


# --- options ----------------------------------------------------------------------------------

def test_list_opts_returns_both_groups_and_every_option_has_help() -> None:
    listed = dict(opts.list_opts())
    assert set(listed) == {"image_encryption", "image_encryption_auth"}
    for group, options in listed.items():
        assert options, group
        for opt in options:
            assert (opt.help or "").strip(), f"[{group}] {opt.name} has no help text"


def test_list_opts_covers_every_registered_plugin_option() -> None:
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    listed = dict(opts.list_opts())
    assert {o.name for o in listed["image_encryption"]} == set(conf["image_encryption"])
    auth = {o.dest for o in listed["image_encryption_auth"]}
    assert {"auth_type", "auth_url", "username", "password", "timeout", "cafile"} <= auth


def test_register_opts_is_idempotent() -> None:
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    opts.register_opts(conf)
    conf([])
    assert conf.image_encryption.require_encryption is True
    assert conf.image_encryption.container_format == "encrypted"


# --- key managers from Glance's configuration -------------------------------------------------

ENDPOINT = "http://barbican.example:9311"


def test_for_request_acts_with_the_request_token_at_the_configured_endpoint() -> None:
    conf = glance_conf(ENDPOINT + "/")
    manager = glance_keys.for_request(conf, RequestContext(auth_token="tok", project_id="p"))
    auth = manager.http.session.auth
    assert isinstance(auth, ContextAuth)
    assert auth.get_token(manager.http.session) == "tok"  # the user's token, not rescoped
    assert manager.http.root == ENDPOINT
    assert manager.http.project_id is None  # Keystone scopes the token, no X-Project-Id


def test_for_request_without_a_token_is_a_key_manager_error() -> None:
    conf = glance_conf(ENDPOINT)
    for context in (RequestContext(project_id="p"), None):
        with pytest.raises(KeyManagerError, match="token"):
            glance_keys.for_request(conf, context)


def test_for_request_with_noauth_sends_the_users_project() -> None:
    conf = glance_conf(ENDPOINT, key_manager_auth="noauth")
    manager = glance_keys.for_request(conf, RequestContext(project_id="p9"))
    assert manager.http.project_id == "p9"
    assert manager.http.root == ENDPOINT


@pytest.mark.parametrize("backend_name", ["vault", "kmip", "nonexistent.KeyManager"])
def test_a_key_manager_backend_other_than_barbican_is_refused_by_name(
        backend_name: str) -> None:
    conf = glance_conf(ENDPOINT)
    conf.set_override("backend", backend_name, group="key_manager")
    context = RequestContext(auth_token="tok", project_id="p")
    with pytest.raises(KeyManagerError, match=backend_name):
        glance_keys.for_request(conf, context)
    with pytest.raises(KeyManagerError, match=backend_name):
        glance_keys.for_owner(conf, "p")


def test_for_owner_without_service_credentials_is_a_key_manager_error() -> None:
    with pytest.raises(KeyManagerError, match=r"\[image_encryption_auth\]"):
        glance_keys.for_owner(glance_conf(ENDPOINT), "p")


def test_for_owner_with_auth_type_none_uses_the_configured_endpoint() -> None:
    conf = glance_conf(ENDPOINT + "/v1")
    conf.set_override("auth_type", "none", group="image_encryption_auth")
    manager = glance_keys.for_owner(conf, "p")
    assert isinstance(manager.http.session.auth, ks_noauth.NoAuth)
    assert manager.http.root == ENDPOINT
    assert manager.http.session.timeout == conf.image_encryption.timeout


def test_for_owner_with_noauth_needs_the_owner() -> None:
    conf = glance_conf(ENDPOINT, key_manager_auth="noauth")
    assert glance_keys.for_owner(conf, "p3").http.project_id == "p3"
    with pytest.raises(KeyManagerError, match="owner"):
        glance_keys.for_owner(conf, None)


def test_a_missing_barbican_endpoint_is_a_key_manager_error() -> None:
    with pytest.raises(KeyManagerError, match="endpoint"):
        glance_keys.for_owner(glance_conf(None, key_manager_auth="noauth"), "p")

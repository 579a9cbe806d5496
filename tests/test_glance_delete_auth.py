"""Who the delete hook acts as: the deleting user's token, else the service credentials.

Under Barbican's default policies only the key's project may remove the consumer its member
registered (tests/test_e2e_realauth.py shows it on a real Barbican), so the in-Glance driver
uses the request context Glance put in oslo.context's thread-local (Glance notifies with
``{}``), and falls back to ``[image_encryption_auth]`` only when that user is refused or there
is no context. Here barbican_mock sits behind a token gate (token -> project).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from oslo_config import cfg
from oslo_context.context import RequestContext

from barbican_mock import MockBarbican
from img_crypt.glance import context_auth, notifier
from img_crypt.glance import properties as props
from img_crypt.keys import naming
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from tests.support.glance_import import glance_conf
from tests.support.token_gate import TokenGate

PROJECT = "p1"
USER_TOKEN = "token-of-the-deleting-member"
OUTSIDER_TOKEN = "token-of-another-projects-admin"


@dataclass
class FakeContext:
    """What the hook reads from Glance's RequestContext."""

    auth_token: str | None = USER_TOKEN
    service_catalog: list[dict[str, Any]] | None = None


@dataclass
class Cloud:
    mock: MockBarbican
    gate: TokenGate
    owner: BarbicanKeyManager  # the image owner's project, straight to the mock
    service_calls: list[str | None]

    def conf(self, auth: str = "context") -> cfg.ConfigOpts:
        return glance_conf(self.gate.url, key_manager_auth=auth)

    def user_tokens(self) -> set[str | None]:
        return {token for _, path, token in self.gate.seen if path.startswith("/v1/")}


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """The service credentials are a no-auth manager of the owner's project (recorded)."""
    with MockBarbican(era="2026.2") as mock, \
            TokenGate(mock.url, {USER_TOKEN: PROJECT, OUTSIDER_TOKEN: "p-admin"}) as gate:
        owner = connect(url=mock.url, project_id=PROJECT, backoff=0)
        calls: list[str | None] = []

        def service(conf: cfg.ConfigOpts, image_owner: str | None) -> KeyManager:
            calls.append(image_owner)
            return owner

        monkeypatch.setattr(notifier, "for_owner", service)
        yield Cloud(mock, gate, owner, calls)


@pytest.fixture
def no_current_context() -> Iterator[None]:
    """oslo.context's thread-local holds a context without a token, before and after."""
    RequestContext()
    yield
    RequestContext()


def encrypted_image(manager: KeyManager) -> dict[str, Any]:
    """An image.delete payload of an image the plugin encrypted in ``PROJECT``."""
    image_id = str(uuid.uuid4())
    key_id = manager.create_key(f"{naming.PER_IMAGE_KEY_PREFIX}{image_id}")
    manager.add_consumer(key_id, Consumer(service="image", resource_type="image",
                                          resource_id=image_id))
    return {"id": image_id, "owner": PROJECT, "properties": {
        props.FORMAT: props.FORMAT_NAME, props.KEY_ID: key_id,
        props.DELETION_POLICY: props.ON_IMAGE_DELETION}}


def cleaned_up(cloud: Cloud) -> bool:
    return cloud.mock.secrets(PROJECT) == []


# --- handle_delete ----------------------------------------------------------------------------


def test_the_hook_acts_with_the_deleting_users_token_as_it_is(cloud: Cloud) -> None:
    notifier.handle_delete(cloud.conf(), encrypted_image(cloud.owner), context=FakeContext())
    assert cleaned_up(cloud)
    assert cloud.user_tokens() == {USER_TOKEN}
    assert cloud.service_calls == []


@pytest.mark.parametrize("token", [OUTSIDER_TOKEN, "expired"], ids=["403", "401"])
def test_a_refused_user_falls_back_to_the_service_credentials(
        cloud: Cloud, token: str, caplog: pytest.LogCaptureFixture) -> None:
    image = encrypted_image(cloud.owner)
    with caplog.at_level(logging.WARNING, logger="img_crypt.glance.notifier"):
        notifier.handle_delete(cloud.conf(), image, context=FakeContext(auth_token=token))
    assert cleaned_up(cloud)
    assert cloud.service_calls == [PROJECT]
    assert (f"image {image['id']}: the request's user cannot update its key's consumers"
            in caplog.text)


def test_without_a_context_the_service_credentials_do_it(cloud: Cloud) -> None:
    notifier.handle_delete(cloud.conf(), encrypted_image(cloud.owner))
    assert cleaned_up(cloud)
    assert cloud.service_calls == [PROJECT]
    assert cloud.user_tokens() == set()


def test_with_key_manager_auth_noauth_the_context_is_not_used(cloud: Cloud) -> None:
    notifier.handle_delete(cloud.conf("noauth"), encrypted_image(cloud.owner),
                           context=FakeContext())
    assert cleaned_up(cloud)
    assert cloud.service_calls == [PROJECT]
    assert cloud.user_tokens() == set()


# --- the driver finds the request context Glance did not pass ---------------------------------


def test_the_driver_uses_the_request_context_of_its_thread_when_glance_passes_none(
        cloud: Cloud, no_current_context: None) -> None:
    """Glance's notifier sends ``{}``; its ContextMiddleware made the request's context the
    thread's current one, as RequestContext() does by default."""
    image = encrypted_image(cloud.owner)
    RequestContext(auth_token=USER_TOKEN, project_id=PROJECT)
    driver = notifier.ImageDeleteDriver(cloud.conf(), ["notifications"], None)
    driver.notify({}, {"event_type": "image.delete", "payload": image}, "INFO", None)
    assert cleaned_up(cloud)
    assert cloud.user_tokens() == {USER_TOKEN}
    assert cloud.service_calls == []


def test_request_context_prefers_a_given_context_that_carries_a_token(
        no_current_context: None) -> None:
    RequestContext(auth_token="thread")
    given = FakeContext(auth_token="given")
    assert context_auth.request_context(given) is given
    serialized = {"auth_token": "serialized"}
    assert context_auth.request_context(serialized) is serialized


def test_request_context_falls_back_to_the_threads_current_context(
        no_current_context: None) -> None:
    current = RequestContext(auth_token="thread")
    assert context_auth.request_context({}) is current
    assert context_auth.request_context(None) is current


def test_request_context_is_none_when_no_context_has_a_token(no_current_context: None) -> None:
    assert context_auth.request_context({}) is None
    assert context_auth.request_context(FakeContext(auth_token=None)) is None

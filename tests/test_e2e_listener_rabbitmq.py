"""End to end through a real broker: Glance 33 (``driver = messagingv2``) -> RabbitMQ ->
``img-crypt-listener`` (a real process) -> Barbican.

The broker is a private Debian ``rabbitmq-server`` node (tests/servers/rabbitmq.py); the key
manager is barbican_mock, so that it can be stopped ("Barbican down": connections refused) and
started again on the same port with its state. Glance and the listener read the same
configuration, as the README tells operators (the listener with Glance's config file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from barbican_mock import MockBarbican
from tests.servers.glance import GlanceClient, RealGlance
from tests.servers.rabbitmq import RealRabbitMQ
from tests.support.e2e_glance import (
    CONTAINER_FORMATS,
    PROJECT,
    MiB,
    encrypted_image,
    glance_conf,
    plaintext,
)
from tests.support.listener_proc import ListenerProcess, wait_for

POOL = "img-crypt"  # [image_encryption] listener_pool: the listener's own queue
CLEANUP_TIMEOUT = 60.0


def broker_conf(barbican_url: str, transport_url: str) -> str:
    """The README's Glance configuration, notifying through the broker."""
    return (glance_conf(barbican_url)
            + f"\n[oslo_messaging_notifications]\ntransport_url = {transport_url}\n")


@pytest.fixture(scope="module")
def barbican() -> Iterator[MockBarbican]:
    with MockBarbican(era="2026.2") as mock:
        yield mock


@pytest.fixture(scope="module")
def glance(barbican: MockBarbican, rabbitmq: RealRabbitMQ) -> Iterator[RealGlance]:
    server = RealGlance(plugins=["image_encryption"], notification_drivers=["messagingv2"],
                        container_formats=CONTAINER_FORMATS,
                        extra_conf=broker_conf(barbican.url, rabbitmq.transport_url)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def listener(barbican: MockBarbican, rabbitmq: RealRabbitMQ,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    folder = tmp_path_factory.mktemp("listener")
    conf = folder / "glance-api.conf"
    conf.write_text(broker_conf(barbican.url, rabbitmq.transport_url))
    with ListenerProcess(conf, folder / "listener.log") as proc:
        wait_for("the listener's queue on the broker", lambda: POOL in rabbitmq.queues(),
                 30.0, proc.log_text)
        yield proc


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(plaintext(MiB + 5))
    return path


def key_ids(barbican: MockBarbican) -> set[str]:
    return {str(s["id"]) for s in barbican.secrets(PROJECT)}


def consumers(barbican: MockBarbican, key_id: str) -> list[Any]:
    return [c["resource_id"] for c in barbican.consumers(key_id)]


def test_an_image_delete_through_rabbitmq_reaches_the_listener_which_removes_consumer_and_key(
        glance: RealGlance, barbican: MockBarbican, listener: ListenerProcess,
        data_file: Path) -> None:
    image_id, key_id = encrypted_image(glance, data_file)
    assert consumers(barbican, key_id) == [image_id]
    with GlanceClient(glance.url, PROJECT) as client:
        client.delete_image(image_id)
    wait_for("the listener deleted the key", lambda: key_id not in key_ids(barbican),
             CLEANUP_TIMEOUT, listener.log_text)
    assert consumers(barbican, key_id) == []
    assert f"deleted key {key_id} with image {image_id}" in listener.log_text()


def test_with_barbican_down_the_listener_requeues_and_finishes_once_barbican_is_back(
        glance: RealGlance, barbican: MockBarbican, listener: ListenerProcess,
        rabbitmq: RealRabbitMQ, data_file: Path) -> None:
    image_id, key_id = encrypted_image(glance, data_file)
    barbican.stop()  # connections refused from here on
    try:
        with GlanceClient(glance.url, PROJECT) as client:
            client.delete_image(image_id)
        requeued = f"image {image_id}: key manager unavailable"
        wait_for("the listener requeued the delete", lambda: requeued in listener.log_text(),
                 CLEANUP_TIMEOUT, listener.log_text)
        assert key_id in key_ids(barbican)
        assert consumers(barbican, key_id) == [image_id]
    finally:
        barbican.start()  # same port, same state
    wait_for("the redelivered delete cleaned up", lambda: key_id not in key_ids(barbican),
             CLEANUP_TIMEOUT, listener.log_text)
    assert consumers(barbican, key_id) == []
    assert listener.log_text().count(f"deleted key {key_id}") == 1
    wait_for("the listener's queue is empty", lambda: rabbitmq.queues().get(POOL) == 0,
             30.0, lambda: str(rabbitmq.queues()))

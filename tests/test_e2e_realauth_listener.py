"""``img-crypt-listener`` under real authentication, and what Barbican 23's shipped default
policies let the Glance service user do (measured, status by status).

Glance 33 behind keystonemiddleware, configured with README.md's Glance block except that it
notifies only through the broker (``driver = messagingv2`` and a ``transport_url`` to the
session's RabbitMQ; no in-Glance ``img_crypt`` driver, so the listener is the only hook);
``img-crypt-listener`` reads the same file and acts with its ``[image_encryption_auth]``
service credentials (``glance``, role ``service`` in project ``service``): notifications carry
no user token. alice, a member of project A, imports (her per-image key and its consumer are
made with her token) and deletes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from img_crypt.glance.uploads import MISSING_KEY
from tests.servers.cloud import Cloud
from tests.servers.glance import GlanceClient, RealGlance
from tests.servers.keystone import password_token
from tests.servers.rabbitmq import RealRabbitMQ
from tests.support.e2e_glance import MiB, import_image, plaintext
from tests.support.listener_proc import ListenerProcess, wait_for
from tests.support.realauth import (
    barbican_as,
    barbican_status,
    image_consumer,
    key_gone,
)

POOL = "img-crypt"  # [image_encryption] listener_pool
TIMEOUT = 60.0


def broker_only(conf: str, transport_url: str) -> str:
    """The README's block notifying through the broker only."""
    conf, count = re.subn(r"^driver = img_crypt\n", "", conf, flags=re.M)
    assert count == 1, "the README's Glance block enables the img_crypt driver once"
    return re.sub(r"^\[oslo_messaging_notifications\]\n",
                  f"[oslo_messaging_notifications]\ntransport_url = {transport_url}\n",
                  conf, count=1, flags=re.M)


@pytest.fixture(scope="module")
def broker_conf(real_cloud: Cloud, rabbitmq: RealRabbitMQ) -> str:
    conf = broker_only(real_cloud.glance_conf, rabbitmq.transport_url)
    assert "driver = messagingv2" in conf and "driver = img_crypt" not in conf
    return conf


@pytest.fixture(scope="module")
def glance(real_cloud: Cloud, broker_conf: str) -> Iterator[RealGlance]:
    with RealGlance(notification_drivers=(), extra_conf=broker_conf,
                    keystone=real_cloud.glance_user) as server:
        yield server


@pytest.fixture(scope="module")
def listener(broker_conf: str, rabbitmq: RealRabbitMQ,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    folder = tmp_path_factory.mktemp("listener")
    conf = folder / "glance-api.conf"
    conf.write_text(broker_conf)
    with ListenerProcess(conf, folder / "listener.log") as proc:
        wait_for("the listener's queue on the broker", lambda: POOL in rabbitmq.queues(),
                 30.0, proc.log_text)
        yield proc


def test_the_listener_with_service_credentials_is_refused_a_members_consumer_and_logs_it(
        real_cloud: Cloud, glance: RealGlance, listener: ListenerProcess,
        tmp_path: Path) -> None:
    """Measured: the image.delete reaches the listener through RabbitMQ; Barbican answers its
    consumer DELETE 403 (policy ``secret_consumers:delete``: not a member of the key's
    project, not on its read ACL); the listener logs the failure once and acknowledges the
    message (a refusal is not retried); key and consumer stay for ``img-crypt reconcile``
    run as a member of project A (tests/test_e2e_realauth_reconcile.py)."""
    cloud = real_cloud
    data = tmp_path / "disk.raw"
    data.write_bytes(plaintext(MiB + 5))
    with GlanceClient(glance.url, cloud.a.project_id, token=cloud.a.token()) as client:
        image_id, result = import_image(client, data)
        assert result.task_status == "success", result.task_message
        key_id = str(result.image["os_encrypt_key_id"])
        client.delete_image(image_id)
    failed = f"key cleanup of deleted image {image_id} failed"
    wait_for("the listener gave up on the delete", lambda: failed in listener.log_text(),
             TIMEOUT, listener.log_text)
    line = next(x for x in listener.log_text().splitlines() if failed in x)
    assert "forbidden" in line.lower() or "403" in line, line
    assert not key_gone(cloud, key_id)
    assert barbican_as(cloud, cloud.a.token()).list_consumers(key_id) == \
        [image_consumer(image_id)]
    assert listener.log_text().count(failed) == 1
    # its image.upload / image.activate handling, as the service user, is refused too: said
    # so, not claimed missing (the key exists; alice's import registered the consumer)
    log = listener.log_text()
    assert f"image {image_id} names key {key_id}: Barbican refused these credentials" in log
    assert f"names key {key_id}: {MISSING_KEY}" not in log


# --- measured: a design within the default policies (not implemented) -----------------------


def test_measured_a_consumer_the_glance_user_registers_on_the_read_acl_it_may_remove_not_the_key(
        real_cloud: Cloud) -> None:
    """Each request of the design "the plugin, as the importing user, puts the Glance service
    user on the new per-image key's read ACL and registers the image's consumer as the Glance
    service user", with the status Barbican 23 answers under its shipped policies
    (``barbican/common/policies/{consumers,secrets}.py``; the consumer's owner check in
    ``controllers/consumers.py``). The consumer then belongs to project ``service``: the
    listener may remove it (and so may a member of the key's project, the in-Glance hook as
    the deleting user); an admin of another project may not; the key itself stays undeletable
    by a Glance user with role ``service`` only (``secret:delete`` has no ACL clause) and is
    deletable by one that also has role ``admin`` (``role:admin`` in any project)."""
    cloud = real_cloud
    alice = cloud.a.token()
    glance, body = password_token(cloud.glance_user.auth_url, cloud.glance_user.name,
                                  cloud.glance_user.password, cloud.glance_user.project)
    glance_id = body["token"]["user"]["id"]
    glance_admin = password_token(cloud.glance_admin.auth_url, cloud.glance_admin.name,
                                  cloud.glance_admin.password, cloud.glance_admin.project)[0]
    admin = cloud.admin.token()
    image_id = str(uuid.uuid4())
    key_id = barbican_as(cloud, alice).create_key(f"img-crypt-image-{image_id}")
    secret, consumers = f"/v1/secrets/{key_id}", f"/v1/secrets/{key_id}/consumers"
    consumer = {"service": "image", "resource_type": "image", "resource_id": image_id}

    def status(token: str, method: str, path: str, json: dict[str, Any] | None = None) -> int:
        return barbican_status(cloud, token, method, path, json)

    measured = [
        ("glance POST consumer, no ACL", status(glance, "POST", consumers, consumer)),
        ("alice PUT read ACL [glance]",
         status(alice, "PUT", f"{secret}/acl", {"read": {"users": [glance_id]}})),
        ("glance POST consumer", status(glance, "POST", consumers, consumer)),
        ("alice DELETE that consumer", status(alice, "DELETE", consumers, consumer)),
        ("glance POST consumer again", status(glance, "POST", consumers, consumer)),
        ("admin of another project DELETE it", status(admin, "DELETE", consumers, consumer)),
        ("glance DELETE it", status(glance, "DELETE", consumers, consumer)),
        ("glance GET payload", status(glance, "GET", f"{secret}/payload")),
        ("glance DELETE secret", status(glance, "DELETE", secret)),
        ("glance (role admin too) DELETE secret", status(glance_admin, "DELETE", secret)),
    ]
    print("\n" + "\n".join(f"{what}: {code}" for what, code in measured))
    assert measured == [
        ("glance POST consumer, no ACL", 403),
        ("alice PUT read ACL [glance]", 200),
        ("glance POST consumer", 200),
        ("alice DELETE that consumer", 200),
        ("glance POST consumer again", 200),
        ("admin of another project DELETE it", 403),
        ("glance DELETE it", 200),
        ("glance GET payload", 200),  # the price: Glance may read every such key
        ("glance DELETE secret", 403),
        ("glance (role admin too) DELETE secret", 204),
    ]
    assert key_gone(cloud, key_id)

"""``img-crypt reconcile`` under real authentication, with the credentials README.md's
"### Reconcile" section gives: those of a member of the images' project, from clouds.yaml
(``OS_CLOUD``, the README's cron line) or from ``OS_*`` variables; Glance and Barbican come
from that user's service catalog. The cloud is tests/servers/cloud.py (Keystone 30, Barbican
23 with its shipped default policies, Glance 33 configured with the README's Glance block).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from img_crypt.errors import KeyNotFoundError
from tests.servers.cloud import Cloud, Member
from tests.support.cli import Run, cli
from tests.support.listener_proc import wait_for
from tests.support.realauth import (
    barbican_as,
    clouds_yaml_of,
    glance_as,
    image_consumer,
    import_as_alice,
    key_gone,
    use_credentials_of,
)

Credentials = Callable[[pytest.MonkeyPatch, Member, Path], None]
HOW: dict[str, Credentials] = {
    "clouds.yaml": clouds_yaml_of,
    "OS_* variables": lambda monkeypatch, user, _: use_credentials_of(monkeypatch, user),
}


def reconcile_as(monkeypatch: pytest.MonkeyPatch, how: str, user: Member, tmp: Path) -> Run:
    """The README's command, with ``user``'s credentials; no grace: the records are seconds
    old."""
    HOW[how](monkeypatch, user, tmp)
    return cli("reconcile", "--key-manager", "barbican", "--grace-period", "0")


@pytest.mark.parametrize("how", HOW)
def test_after_an_admin_of_another_project_deleted_an_image_reconcile_as_a_member_cleans_up(
        real_cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The delete hook, as that admin and then as the Glance service user, is refused the
    consumer's removal (Barbican's default policy); a member of the image's project running
    reconcile removes the consumer, then deletes the per-image key."""
    cloud, (image_id, key_id) = real_cloud, import_as_alice(real_cloud, tmp_path)
    with glance_as(cloud, cloud.admin.token(), cloud.admin.project_id) as admin:
        admin.delete_image(image_id)
    wait_for("the delete hook gave up", lambda: f"key cleanup of deleted image {image_id} "
             "failed" in cloud.glance.log_text(), 30.0, cloud.glance.log_text)
    alice = barbican_as(cloud, cloud.a.token())
    assert alice.list_consumers(key_id) == [image_consumer(image_id)]

    run = reconcile_as(monkeypatch, how, cloud.a, tmp_path)
    assert run.code == 0, run.out + run.err
    assert f"removed consumer image/{image_id} from key {key_id}" in run.out
    assert f"deleted key {key_id}" in run.out
    with pytest.raises(KeyNotFoundError):
        alice.key_info(key_id)


@pytest.mark.parametrize("how", HOW)
def test_reconcile_as_a_member_adds_the_consumer_an_active_encrypted_image_lacks(
        real_cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The consumer it adds belongs to the project (registered as its member), so the image's
    delete by that member then removes it and deletes the key as usual."""
    cloud, (image_id, key_id) = real_cloud, import_as_alice(real_cloud, tmp_path)
    alice = barbican_as(cloud, cloud.a.token())
    alice.remove_consumer(key_id, image_consumer(image_id))  # a lost registration

    run = reconcile_as(monkeypatch, how, cloud.a, tmp_path)
    assert run.code == 0, run.out + run.err
    assert f"added consumer image/{image_id} to key {key_id}" in run.out
    assert alice.list_consumers(key_id) == [image_consumer(image_id)]
    assert alice.key_info(key_id).name == f"img-crypt-image-{image_id}"

    with glance_as(cloud, cloud.a.token(), cloud.a.project_id) as client:
        client.delete_image(image_id)
    wait_for("the delete hook deleted the key", lambda: key_gone(cloud, key_id), 30.0,
             cloud.glance.log_text)


def test_reconcile_as_a_member_of_another_project_changes_nothing_of_the_first_projects_keys(
        real_cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bob's reconcile lists bob's keys only; alice's image, consumer-less or not, is not his."""
    cloud, (image_id, key_id) = real_cloud, import_as_alice(real_cloud, tmp_path)
    alice = barbican_as(cloud, cloud.a.token())
    alice.remove_consumer(key_id, image_consumer(image_id))
    run = reconcile_as(monkeypatch, "OS_* variables", cloud.b, tmp_path)
    assert run.code == 0, run.out + run.err
    assert key_id not in run.out and image_id not in run.out
    assert alice.list_consumers(key_id) == []
    alice.add_consumer(key_id, image_consumer(image_id))  # leave it as an import would


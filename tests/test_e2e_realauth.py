"""End to end under real authentication: Keystone 30, Barbican 23 with its shipped default
policies (secure RBAC, scope enforced), Glance 33 behind keystonemiddleware, configured exactly
as README.md's Glance block says (tests/servers/cloud.py). alice is a member of project A, bob
of project B; alice also imports with an application credential, whose token Keystone
refuses to re-scope. One stack for the module's whole session.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from img_crypt.errors import ConsumerNotFoundError, ForbiddenError, KeyNotFoundError
from tests.servers.cloud import Cloud
from tests.servers.glance import GlanceClient, RealGlance
from tests.servers.keystone import password_token
from tests.support.cli import cli
from tests.support.e2e_glance import MiB, import_image, plaintext
from tests.support.realauth import (
    barbican_acl,
    barbican_as,
    encrypted_import,
    glance_as,
    image_consumer,
    import_as_alice,
    use_credentials_of,
)

HOW: dict[str, Callable[[Cloud], str]] = {
    "password": lambda cloud: cloud.a.token(),
    "application credential": lambda cloud: cloud.app_a.token(),
}


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(plaintext(MiB + 5))
    return path


@pytest.fixture(scope="module")
def alices_image(real_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An image of alice's that the tests of this module leave in place."""
    return import_as_alice(real_cloud, tmp_path_factory.mktemp("alice"))


def decrypt_as(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, who: str, image_id: str,
               encrypted: Path, clear: Path) -> int:
    """``img-crypt decrypt`` with the OS_* variables of ``who`` (``a`` or ``b``)."""
    use_credentials_of(monkeypatch, cloud.a if who == "a" else cloud.b)
    return cli("decrypt", str(encrypted), str(clear), "--key-manager", "barbican",
               "--image-id", image_id).code


# --- a member's import and delete -------------------------------------------------------------


@pytest.mark.parametrize("how", HOW)
def test_a_members_import_and_delete_create_then_remove_key_and_consumer_in_their_project(
        real_cloud: Cloud, data_file: Path, tmp_path: Path, how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cloud, token = real_cloud, HOW[how](real_cloud)
    image_id, result = encrypted_import(cloud, token, cloud.a.project_id, data_file)
    assert result.task_status == "success", result.task_message
    key_id = result.image["os_encrypt_key_id"]
    alice = barbican_as(cloud, cloud.a.token())
    assert alice.key_info(key_id).name == f"img-crypt-image-{image_id}"  # in A's project
    assert alice.list_consumers(key_id) == [image_consumer(image_id)]

    encrypted, clear = tmp_path / "image.enc", tmp_path / "image.raw"
    with glance_as(cloud, token, cloud.a.project_id) as client:
        client.download(image_id, encrypted)
    assert decrypt_as(cloud, monkeypatch, "a", image_id, encrypted, clear) == 0
    assert clear.read_bytes() == data_file.read_bytes()

    with glance_as(cloud, token, cloud.a.project_id) as client:
        client.delete_image(image_id)
    with pytest.raises(KeyNotFoundError):  # the consumer went first: Barbican 1.2 refuses else
        alice.key_info(key_id)
    # this image's hook acted as the user (the log is the session's: other tests' images
    # may have fallen back, by design)
    assert f"image {image_id}: the request's user cannot update" not in cloud.glance.log_text()


def test_with_barbican_endpoint_unset_import_and_delete_find_barbican_in_the_catalog(
        real_cloud: Cloud, data_file: Path) -> None:
    """The README's other choice: no ``barbican_endpoint``, the request's service catalog."""
    cloud = real_cloud
    conf = re.sub(r"^barbican_endpoint = .*\n", "", cloud.glance_conf, flags=re.M)
    assert "barbican_endpoint" not in conf
    with RealGlance(notification_drivers=(), extra_conf=conf,
                    keystone=cloud.glance_user) as glance:
        with GlanceClient(glance.url, cloud.a.project_id, token=cloud.a.token()) as client:
            image_id, result = import_image(client, data_file)
            assert result.task_status == "success", result.task_message
            key_id = result.image["os_encrypt_key_id"]
            alice = barbican_as(cloud, cloud.a.token())
            assert alice.list_consumers(key_id) == [image_consumer(image_id)]
            client.delete_image(image_id)
        with pytest.raises(KeyNotFoundError):
            alice.key_info(key_id)


# --- another project --------------------------------------------------------------------------


def test_a_user_of_another_project_can_neither_fetch_the_key_nor_decrypt_the_image(
        real_cloud: Cloud, alices_image: tuple[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cloud, (image_id, key_id) = real_cloud, alices_image
    with pytest.raises(ForbiddenError):
        barbican_as(cloud, cloud.b.token()).get_key(key_id)
    encrypted, clear = tmp_path / "image.enc", tmp_path / "image.raw"
    with glance_as(cloud, cloud.a.token(), cloud.a.project_id) as client:
        client.download(image_id, encrypted)  # even with the ciphertext in hand
    assert decrypt_as(cloud, monkeypatch, "b", image_id, encrypted, clear) != 0
    assert not clear.exists()


@pytest.mark.parametrize("claims", [
    {},
    {"os_encrypt_format": "img-crypt-v1", "os_encrypt_cipher": "AES-256-GCM"},
], ids=["key id only", "claims client-side encryption"])
def test_an_import_naming_another_projects_key_is_refused_and_registers_nothing(
        real_cloud: Cloud, alices_image: tuple[str, str], data_file: Path,
        claims: dict[str, str]) -> None:
    cloud, (image_id, key_id) = real_cloud, alices_image
    bobs_id, result = encrypted_import(cloud, cloud.b.token(), cloud.b.project_id, data_file,
                                       os_encrypt_key_id=key_id, **claims)
    assert result.task_status == "failure"
    assert result.status == "queued"
    alice = barbican_as(cloud, cloud.a.token())
    assert alice.list_consumers(key_id) == [image_consumer(image_id)]
    bobs_keys = {key.name for key in barbican_as(cloud, cloud.b.token()).list_keys()}
    assert f"img-crypt-image-{bobs_id}" not in bobs_keys


def test_deleting_an_image_that_names_another_projects_key_leaves_that_key_alone(
        real_cloud: Cloud, alices_image: tuple[str, str]) -> None:
    cloud, (image_id, key_id) = real_cloud, alices_image
    with glance_as(cloud, cloud.b.token(), cloud.b.project_id) as bob:
        image = bob.create_image(name="claims", disk_format="raw", container_format="bare",
                                 os_encrypt_key_id=key_id,
                                 os_encrypt_key_deletion_policy="on_image_deletion")
        bob.delete_image(image["id"])
    alice = barbican_as(cloud, cloud.a.token())
    assert alice.key_info(key_id).name == f"img-crypt-image-{image_id}"
    assert alice.list_consumers(key_id) == [image_consumer(image_id)]


# --- what the shipped default policies leave to the operator ---------------------------------


def test_an_admin_of_another_project_deleting_the_image_leaves_key_and_consumer_logged(
        real_cloud: Cloud, tmp_path: Path) -> None:
    """Barbican lets only the key's project remove the consumer its member registered: the
    hook falls back to the service credentials, is refused too, and says so; ``reconcile``
    run with the project's credentials cleans up (README)."""
    cloud, (image_id, key_id) = real_cloud, import_as_alice(real_cloud, tmp_path)
    with glance_as(cloud, cloud.admin.token(), cloud.admin.project_id) as admin:
        admin.delete_image(image_id)
    alice = barbican_as(cloud, cloud.a.token())
    assert alice.list_consumers(key_id) == [image_consumer(image_id)]
    log = cloud.glance.log_text()
    assert f"image {image_id}: the request's user cannot update its key's consumers" in log
    assert f"key cleanup of deleted image {image_id} failed" in log


@pytest.mark.parametrize("grant", ["role service", "role admin too", "on the key's read ACL"])
def test_no_role_or_acl_lets_the_glance_user_remove_a_consumer_a_member_registered(
        real_cloud: Cloud, alices_image: tuple[str, str], grant: str) -> None:
    """Why the hook acts as the deleting user: Barbican lets only the consumer's or the
    secret's project remove a consumer (its code, not a policy rule; cloud-use.md §5)."""
    cloud, (image_id, key_id) = real_cloud, alices_image
    user = cloud.glance_admin if grant == "role admin too" else cloud.glance_user
    token, body = password_token(user.auth_url, user.name, user.password, user.project)
    acl = barbican_acl(cloud, key_id, cloud.a.token())
    refused: tuple[type[Exception], ...] = (ForbiddenError,)  # the policy refuses
    if grant == "on the key's read ACL":
        acl.put(json={"read": {"users": [body["token"]["user"]["id"]]}})
        # the policy lets it through; the ownership check answers 403, or 404 when the
        # caller's project never stored anything in Barbican
        refused = (ForbiddenError, ConsumerNotFoundError)
    try:
        with pytest.raises(refused):
            barbican_as(cloud, token).remove_consumer(key_id, image_consumer(image_id))
    finally:
        acl.delete()
    assert barbican_as(cloud, cloud.a.token()).list_consumers(key_id) == \
        [image_consumer(image_id)]

"""oslo.config options of the Glance integration, and ``list_opts`` for oslo-config-generator.

``[image_encryption]`` configures the import plugin, the delete hook and the listener;
``[image_encryption_auth]`` holds the service credentials (keystoneauth loading) the listener
and the delete hook fall back to when they have no user token Barbican accepts.
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = "image_encryption"
AUTH_GROUP = "image_encryption_auth"



def _help(text: str) -> str:
    """One paragraph: the generator and ``--help`` wrap it themselves."""
    return " ".join(text.split())


OPTS = [
    cfg.StrOpt("format", default="img-crypt-v1", choices=(
        ("img-crypt-v1", "img-crypt's authenticated format (AES-256-GCM); container_format "
                         "encrypted"),
        ("luks", "a raw LUKS1 container (aes-xts-plain64) Cinder turns into an encrypted "
                 "volume; disk_format raw, container_format bare")), help=_help("""
What the plugin writes. 'luks' needs a 256-bit KEK, accepts disk_format raw and qcow2
(converted to raw with qemu-img) and sets cinder_encryption_key_id too; it authenticates
nothing but the key (see specs/LUKS1.md).""")),
    cfg.IntOpt("luks_max_virtual_size", default=1 << 40, min=0, help=_help("""
format luks: the largest virtual size, in bytes, of a qcow2 image the plugin converts to raw
(0: no fixed cap). A small qcow2 can claim a huge virtual size; its raw disk and LUKS1
container would fill the staging area. The default is Glance's own image_size_cap default
(1 TiB): Glance would refuse to store a larger result anyway. Whatever this says, an image
whose virtual size does not fit twice in the staging area's free space is refused. Both are
checked before qemu-img runs or a key is created.""")),
    cfg.StrOpt("kek_id", help=_help("""
Barbican secret id of one key-encryption key (KEK) shared by every image this Glance
encrypts. Unset (the default): a new KEK is created for each image, in the importing
user's project. The delete hook never deletes this key, whatever an image's
os_encrypt_key_deletion_policy says: configuration is authority, image properties are
claims.""")),
    cfg.StrOpt("key_deletion_policy", choices=(
        ("on_image_deletion", "delete the key with its last image"),
        ("do_not_delete", "keep the key")), help=_help("""
The os_encrypt_key_deletion_policy given to encrypted images. Unset: on_image_deletion for
a KEK created per image, do_not_delete for the shared kek_id (which the delete hook keeps
whatever this says).""")),
    cfg.BoolOpt("require_encryption", default=True, help=_help("""
Refuse an import that cannot be encrypted (key manager down, key refused, ...): the image
goes back to 'queued'. When false such an image is stored in plaintext with a warning. With
the img_crypt_upload paste filter and the img_crypt:upload policy check, a PUT
/v2/images/{id}/file is also refused unless the image says it is encrypted and its data
backs the claim.""")),
    cfg.ListOpt("accepted_formats", default=[], help=_help("""
With require_encryption, the os_encrypt_format values besides img-crypt-v1 and LUKSv1 that a
PUT /v2/images/{id}/file may claim (exact, case-sensitive match). Their data is not checked:
list only formats your clients really write.""")),
    cfg.StrOpt("container_format", default="encrypted", help=_help("""
container_format of an encrypted image; the plaintext's is kept in
os_decrypt_container_format and disk_format is left as it was. It must be one of
[image_format] container_formats, and must not be 'bare' (Glance would inspect the
ciphertext as a disk image).""")),
    cfg.StrOpt("consumer_service", default="image", help=_help("""
The 'service' of the secret-consumer records naming images (resource_type 'image',
resource_id the image id). The img-crypt CLI uses the same default.""")),
    cfg.StrOpt("consumers", default="required", choices=(
        ("required", "no consumer API: refuse to encrypt"),
        ("best_effort", "no consumer API: encrypt without registering")), help=_help("""
On a Barbican without the secret-consumer API (Train or older): 'required' refuses to
encrypt, 'best_effort' encrypts without registering the image as a consumer.""")),
    cfg.StrOpt("key_manager_auth", default="context", choices=(
        ("context", "the user's request context: the importing or deleting user's token"),
        ("noauth", "no Keystone: X-Project-Id of the image owner")), help=_help("""
How the plugin reaches Barbican. 'context': with the token of the request as it is
([key_manager] and [barbican] options): the importing user's, and in the delete hook the
deleting user's; the [image_encryption_auth] service credentials only when there is no such
token (img-crypt-listener) or Barbican refuses it. 'noauth': deployments without Keystone;
both send X-Project-Id (the image owner) to [barbican] barbican_endpoint.""")),
    cfg.FloatOpt("timeout", default=30.0, min=1.0, help=_help("""
Seconds to wait for one Barbican request.""")),
    cfg.FloatOpt("delete_hook_budget", default=2.0, min=0.0, help=_help("""
Seconds the in-Glance delete hook may hold a user's image DELETE. The key cleanup runs in
a background thread of the Glance process; what it has not finished by then goes on there
after the DELETE has answered.""")),
    cfg.IntOpt("delete_hook_retries", default=5, min=0, help=_help("""
How many times the background thread retries a key cleanup while Barbican is unavailable
before it gives up and leaves the key to img-crypt reconcile.""")),
    cfg.FloatOpt("delete_hook_retry_delay", default=10.0, min=0.1, help=_help("""
Seconds before the first retry of a key cleanup; each further retry waits twice as long
(at most 600 s).""")),
    cfg.ListOpt("listener_topics", default=["notifications"], help=_help("""
Notification topics img-crypt-listener consumes (Glance's
[oslo_messaging_notifications] topics).""")),
    cfg.StrOpt("listener_pool", default="img-crypt", help=_help("""
Listener pool (queue) name, so img-crypt-listener gets its own copy of each
notification.""")),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register both groups on ``conf`` (idempotent)."""
    conf.register_opts(OPTS, group=GROUP)
    ks_loading.register_auth_conf_options(conf, AUTH_GROUP)
    ks_loading.register_session_conf_options(conf, AUTH_GROUP)


def list_opts() -> list[tuple[str, list[Any]]]:
    """Options for oslo-config-generator (entry point ``oslo.config.opts``)."""
    auth = (ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options()
            + ks_loading.get_auth_plugin_conf_options("password"))
    return [(GROUP, list(OPTS)), (AUTH_GROUP, auth)]

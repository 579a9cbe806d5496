"""``img-crypt upload`` and ``download``: client-side encryption straight into and out of Glance.

upload creates the image first, with every property known then, so its id exists before any
key or consumer (nothing for ``reconcile`` to wait for); then it makes the image's own KEK
(``img-crypt-image-<id>``, as the Glance plugin names it) or uses ``--kek``, registers the
image as the key's consumer through :class:`~img_crypt.enrollment.Enrollment`, records the key
id (and header length), and encrypts while the data is sent (``PUT /file``, a chunked body: no
ciphertext file, constant memory), as img-crypt-v1 or (``--format luks``) a raw LUKS1 image
with the properties the plugin's ``format = luks`` sets. Any failure undoes what it made: the
new key, the consumer record, then the image.

download streams the image data through the decryptor into OUTPUT, which is published only
once the whole payload is authenticated (a wrong key or tampered data leaves nothing there).
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from img_crypt import envelope, luks
from img_crypt._io import Input
from img_crypt._text import printable
from img_crypt.cli.files import open_input, open_output
from img_crypt.cli.image_api import ImageApi
from img_crypt.cli.managers import Managers
from img_crypt.cli.progress import progress
from img_crypt.enrollment import Enrollment, NewKey
from img_crypt.errors import FormatError, ImgCryptError, UsageError
from img_crypt.glance import properties as props
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.naming import per_image_key_name

Report = Callable[[str], None]
READ_SIZE = 256 * 1024
"""Plaintext per chunk sent, and ciphertext per chunk read: small, since imports already take
about 56 MiB of the 64 MiB budget (openstacksdk, keystoneauth, the Barbican client)."""


def image_api(args: argparse.Namespace) -> ImageApi:
    """Glance at --glance-url without Keystone (needs --project-id), else from clouds.yaml."""
    if args.glance_url:
        if not args.project_id:
            raise UsageError("--glance-url needs --project-id (or OS_PROJECT_ID)")
        return ImageApi.noauth(args.glance_url, args.project_id)
    return ImageApi.from_cloud(args.os_cloud)


class _Body:
    """The request body: ``chunks``, counted and drawn on the progress bar as they are sent."""

    def __init__(self, chunks: Iterator[bytes], bar: Callable[[int], None] | None) -> None:
        self.chunks, self.bar, self.sent = chunks, bar, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            yield chunk
            self.sent += len(chunk)
            if self.bar is not None:
                self.bar(len(chunk))


def _created(args: argparse.Namespace, policy: props.Policy,
             total: int) -> tuple[str, str, dict[str, str]]:
    """(container_format, disk_format, properties) of the image, known before any key."""
    if args.format == "luks":
        return "bare", "raw", {props.FORMAT: props.LUKS_FORMAT_NAME,
                               props.DELETION_POLICY: policy,
                               props.CINDER_DELETION_POLICY: policy,
                               props.DECRYPT_SIZE: str(total)}
    return props.ENCRYPTED_CONTAINER_FORMAT, args.disk_format, {
        props.FORMAT: props.FORMAT_NAME, props.CIPHER: props.CIPHER_NAME,
        props.DELETION_POLICY: policy, props.DECRYPT_CONTAINER_FORMAT: args.container_format,
        props.DECRYPT_SIZE: str(total)}


def upload(args: argparse.Namespace, warn: Report) -> tuple[str, str, bool]:
    """Create an encrypted image from IMAGE_FILE; return (image id, key id, key is new)."""
    if args.format == "luks" and (args.disk_format, args.container_format) != ("raw", "bare"):
        raise UsageError("--format luks stores a raw disk: convert the image first "
                         "(qemu-img convert -O raw) and give --disk-format raw")
    policy = props.DO_NOT_DELETE if args.kek else props.ON_IMAGE_DELETION
    api = image_api(args)
    km = Managers(args).selected()
    with open_input(args.input) as (src, total):
        if total is None:
            raise UsageError("upload needs a regular file: its size is recorded before the "
                             "data is sent")
        container_format, disk_format, properties = _created(args, policy, total)
        image_id = api.create(name=args.name, disk_format=disk_format,
                              container_format=container_format, properties=properties)
        try:
            key_id, new = _encrypt_into(args, km, api, image_id, src=src, total=total,
                                        policy=policy, warn=warn)
        except BaseException:
            try:
                api.delete(image_id)
            except ImgCryptError as e:
                warn(f"could not delete image {image_id}: {e}")
            raise
    return image_id, key_id, new


def _encrypt_into(args: argparse.Namespace, km: KeyManager, api: ImageApi, image_id: str,
                  *, src: Input, total: int, policy: props.Policy,
                  warn: Report) -> tuple[str, bool]:
    """Key, consumer, the properties naming the key, then the data; undone by the enrollment."""
    consumer = Consumer(service=args.consumer_service, resource_type="image",
                        resource_id=image_id)
    with Enrollment(km, report=warn) as enrolled:
        key_id = enrolled.key(args.kek or NewKey(per_image_key_name(
            image_id, delete_with_image=policy == props.ON_IMAGE_DELETION)))
        key = km.get_key(key_id)
        if args.format == "luks":
            secret = luks.passphrase(key, key_id)  # a KEK Cinder cannot use: before register
            enrolled.register(consumer, [key_id])
            api.update(image_id, {props.KEY_ID: key_id, props.CINDER_KEY_ID: key_id})
            chunks = luks.encrypted_chunks(src, secret, read_size=READ_SIZE)
            expected = luks.image_size(total)
        else:
            enrolled.register(consumer, [key_id])
            sealed = envelope.Sealed([envelope.Kek(km.kind, key_id, key)],
                                     image_id=uuid.UUID(image_id))
            api.update(image_id, {props.KEY_ID: key_id,
                                  props.HEADER_LENGTH: str(len(sealed.raw_header))})
            chunks = sealed.chunks(src, read_size=READ_SIZE)
            expected = sealed.file_size(total)
        with progress(expected, "upload") as bar:
            body = _Body(chunks, bar)
            api.upload(image_id, iter(body))
        if body.sent != expected:  # the file grew or shrank: os_decrypt_size would be wrong
            raise ImgCryptError(f"{args.input} changed while it was uploaded")
        return key_id, key_id in enrolled.created_keys


def download(args: argparse.Namespace) -> tuple[str, int]:
    """Decrypt image IMAGE_ID into OUTPUT; return (its os_encrypt_format, plaintext bytes)."""
    api = image_api(args)
    image = api.get(str(args.image_id))
    fmt = str(image.get(props.FORMAT) or "")
    if not props.is_encrypted(image):
        raise ImgCryptError(f"image {args.image_id} is not encrypted (no {props.FORMAT}): "
                            f"download it with 'openstack image save'")
    if props.is_luks(image):
        return fmt, _download_luks(args, api, image)
    if fmt != props.FORMAT_NAME:
        raise FormatError(f"image {args.image_id} has {props.FORMAT} {printable(fmt)!r}: "
                          f"img-crypt reads {props.FORMAT_NAME} and LUKSv1")
    lookup = Managers(args).lookup()
    with api.data(str(args.image_id)) as chunks, \
            open_output(args.output, force=args.force) as dst, \
            progress(_size(image.get("size")), "download") as bar:
        summary = envelope.decrypt(chunks, dst, lookup, image_id=args.image_id,
                                   read_size=READ_SIZE, progress=bar)
    return fmt, summary.plaintext_size


def _size(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _download_luks(args: argparse.Namespace, api: ImageApi, image: dict[str, Any]) -> int:
    """A LUKS1 image: its passphrase from --kek, else os_encrypt_key_id; os_decrypt_size cut."""
    key_id = args.kek or image.get(props.KEY_ID)
    if not key_id:
        raise UsageError(f"image {args.image_id} names no key ({props.KEY_ID}): give --kek")
    size_text = str(image.get(props.DECRYPT_SIZE) or "")
    size = int(size_text) if size_text.isdigit() else None
    secret = luks.passphrase(Managers(args).selected().get_key(str(key_id)), str(key_id))
    with api.data(str(args.image_id)) as chunks, \
            open_output(args.output, force=args.force) as dst:
        return luks.decrypt(chunks, dst, secret, size=size, read_size=READ_SIZE)

"""The staged file of an import: encrypt it into a sibling file, or check a client's file.

Only paths, keys and bytes: no Glance, no key manager.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from img_crypt import envelope
from img_crypt._atomic import atomic_file
from img_crypt.envelope import Inspection, Kek, Summary
from img_crypt.errors import BindingError, FormatError

SUFFIX = ".img-crypt"


def path_of(file_uri: str) -> Path:
    """The local path of Glance's ``file://`` staging URI."""
    if not file_uri.startswith("file://"):
        raise FormatError(f"only file:// staging is supported, not {file_uri.partition(':')[0]}")
    return Path(file_uri.removeprefix("file://"))


def encrypt_file(src: Path, image_id: uuid.UUID, slot: tuple[str, str],
                 kek: Callable[[], Kek], *,
                 check: Callable[[], None] | None = None) -> tuple[Path, Summary]:
    """Encrypt ``src`` into ``src`` + SUFFIX (bound to ``image_id``, mode 0600), all or nothing.

    The payload is encrypted first, while the caller makes the key (``slot``: its kind and
    key id, or a placeholder id of the same length); ``kek()`` then waits for the key and
    the header is written in front. A key id of another length costs a second encryption.
    ``check()`` runs after every read and may raise to stop early (the key failed).

    The file is not fsynced: Glance fsyncs neither its staging area nor the filesystem
    store, so a power loss costs the import either way, and an fsync doubled the time
    of this step (specs/THREAT_MODEL.md, power loss).
    """
    dest = src.with_name(src.name + SUFFIX)
    deferred = envelope.Deferred([slot], image_id=image_id)
    progress = None if check is None else lambda _n: check()
    # "<image id>.img-crypt.<hex>.tmp": left by a killed glance-api, Glance's staging cleaner
    # reaps it with the image (it ignores names that do not start with an image id)
    with open(src, "rb") as source, atomic_file(dest, hidden=False) as sink:
        deferred.encrypt(source, sink, progress=progress)
        keks = [kek()]
        summary = deferred.seal(sink, keks)
        if summary is None:  # the key id is not the length foreseen: start again with it
            sink.seek(0)
            sink.truncate()
            source.seek(0)
            summary = envelope.encrypt(source, sink, keks, image_id=image_id)
    return dest, summary


def check_client_encrypted(path: Path, image_id: uuid.UUID) -> Inspection:
    """Check that a client-side encrypted upload is our format and bound to this image."""
    with open(path, "rb") as file:
        summary = envelope.inspect(file, size=os.fstat(file.fileno()).st_size)
    if summary.header.image_id != image_id:
        raise BindingError(f"the data was encrypted for image {summary.header.image_id}, "
                           f"not {image_id} (use img-crypt encrypt --image-id {image_id})")
    if summary.plaintext_size is None or summary.plaintext_size < 0:
        raise FormatError("the payload is truncated or has trailing bytes")
    return summary

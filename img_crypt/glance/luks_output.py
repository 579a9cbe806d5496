"""The ``luks`` output of the import plugin: the staged disk becomes a raw LUKS1 container.

Only paths, keys and bytes (and ``qemu-img`` for a qcow2 input): no Glance, no key manager.
Cinder copies an image's bytes onto the volume, so the container's payload must be the raw
disk: a qcow2 is first converted to raw, as Glance's own image_conversion plugin does.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from img_crypt import luks
from img_crypt._atomic import atomic_file
from img_crypt.errors import FormatError, UsageError

SUFFIX = ".luks"
DISK_FORMATS = ("raw", "qcow2")
QEMU_IMG_TIMEOUT = 600.0


@dataclass(frozen=True)
class Result:
    """The LUKS1 file and the sizes the image's properties record."""

    path: Path
    plaintext_size: int  # the raw disk's size (its virtual size): os_decrypt_size
    file_size: int


def check_disk_format(disk_format: str | None) -> None:
    """Refuse a disk format we cannot turn into the raw disk a volume receives."""
    if disk_format not in DISK_FORMATS:
        raise UsageError(f"format luks needs disk_format raw or qcow2, not {disk_format!r}: "
                         f"Cinder copies the image's bytes onto the volume, so they must be a "
                         f"raw disk")


def encrypt_file(src: Path, disk_format: str | None, secret: bytes, *,
                 timeout: float | None = None) -> Result:
    """Write ``src`` (raw or qcow2) as a raw LUKS1 file ``src`` + SUFFIX, all or nothing.

    ``secret`` is the passphrase, from :func:`img_crypt.luks.passphrase`.
    """
    check_disk_format(disk_format)
    dest = src.with_name(src.name + SUFFIX)
    with _raw(src, disk_format, timeout or QEMU_IMG_TIMEOUT) as raw, open(raw, "rb") as source, \
            atomic_file(dest, durable=True, hidden=False) as sink:
        size = luks.encrypt(source, sink, secret)
    return Result(dest, size, dest.stat().st_size)


@contextlib.contextmanager
def _raw(src: Path, disk_format: str | None, timeout: float) -> Iterator[Path]:
    """``src`` itself if raw, else a temporary raw conversion next to it (removed after)."""
    if disk_format == "raw":
        yield src
        return
    # "<image id>.raw.<random>.tmp": Glance's staging cleaner reaps it if we are killed
    fd, name = tempfile.mkstemp(prefix=f"{src.name}.raw.", suffix=".tmp", dir=src.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _convert(src, tmp, timeout)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _convert(src: Path, dest: Path, timeout: float) -> None:
    """``qemu-img convert -f qcow2 -O raw src dest``, after refusing external files.

    A qcow2 may name a backing file or an external data file: converting it would copy files
    of the Glance host into the image (Glance's image_conversion refuses them too).
    """
    info = json.loads(_qemu_img(["info", "-f", "qcow2", "--output=json", str(src)],
                                timeout, "read"))
    data_file = (info.get("format-specific") or {}).get("data", {}).get("data-file")
    if info.get("backing-filename") or data_file:
        raise FormatError("the qcow2 image refers to another file (backing or data file): "
                          "refused, converting it would read files of the Glance host")
    _qemu_img(["convert", "-f", "qcow2", "-O", "raw", str(src), str(dest)], timeout, "convert")


def _qemu_img(args: list[str], timeout: float, what: str) -> str:
    """Run qemu-img (list argv, no shell, bounded); its stdout, or a one-line error."""
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UsageError("format luks needs qemu-img to convert a qcow2 image to raw, "
                         "and it is not installed") from None
    except subprocess.TimeoutExpired:
        raise FormatError(f"qemu-img {what} of the qcow2 image took more than "
                          f"{timeout:g} s") from None
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout or "").split())[:300]
        raise FormatError(f"qemu-img could not {what} the qcow2 image "
                          f"(exit {done.returncode}): {why}")
    return done.stdout

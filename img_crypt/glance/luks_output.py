"""The ``luks`` output of the import plugin: the staged disk becomes a raw LUKS1 container.

Only paths, keys and bytes (and ``qemu-img`` for a qcow2 input): no Glance, no key manager.
Cinder copies an image's bytes onto the volume, so the container's payload must be the raw
disk: a qcow2 is first converted to raw, as Glance's own image_conversion plugin does.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
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
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_SIZE = struct.Struct(">Q")  # the virtual size, bytes 24-31 of a qcow2 header
QCOW2_SIZE_OFFSET = 24


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


def check_input(src: Path, disk_format: str | None, max_virtual_size: int) -> None:
    """Refuse, before any key or file exists, an input we cannot or must not convert.

    A qcow2 of a few KiB can claim a virtual size of petabytes; its raw disk, then its LUKS1
    container, would fill the staging area. Its header's virtual size must be at most
    ``max_virtual_size`` (0: no fixed cap) and, in the worst case (a raw temporary without
    holes, then the container), fit twice in the staging area's free space.
    """
    check_disk_format(disk_format)
    if disk_format != "qcow2":
        return  # a raw disk is already in staging at its full size
    size = qcow2_virtual_size(src)
    if max_virtual_size and size > max_virtual_size:
        raise UsageError(f"the qcow2 image's virtual size, {size} bytes, is above [image_"
                         f"encryption] luks_max_virtual_size ({max_virtual_size} bytes)")
    fs = os.statvfs(src.parent)
    free, needed = fs.f_bavail * fs.f_frsize, 2 * size + luks.PAYLOAD_OFFSET * 512
    if needed > free:
        raise UsageError(f"the qcow2 image's virtual size, {size} bytes, needs up to {needed} "
                         f"bytes of staging space to convert and encrypt; {free} are free")


def qcow2_virtual_size(src: Path) -> int:
    """The virtual size a qcow2 header claims (qemu-img reads the same field)."""
    with open(src, "rb") as f:
        header = f.read(QCOW2_SIZE_OFFSET + QCOW2_SIZE.size)
    if len(header) < QCOW2_SIZE_OFFSET + QCOW2_SIZE.size or not header.startswith(QCOW2_MAGIC):
        raise FormatError("the image's data is not qcow2, but its disk_format is qcow2")
    return int(QCOW2_SIZE.unpack_from(header, QCOW2_SIZE_OFFSET)[0])


def encrypt_file(src: Path, disk_format: str | None, secret: bytes, *,
                 timeout: float | None = None) -> Result:
    """Write ``src`` (raw or qcow2) as a raw LUKS1 file ``src`` + SUFFIX, all or nothing.

    ``secret`` is the passphrase, from :func:`img_crypt.luks.passphrase`.
    """
    check_disk_format(disk_format)
    dest = src.with_name(src.name + SUFFIX)
    with _raw(src, disk_format, timeout or QEMU_IMG_TIMEOUT) as raw, open(raw, "rb") as source, \
            atomic_file(dest, hidden=False) as sink:  # not fsynced: see staged.encrypt_file
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
    if info.get("virtual-size") != qcow2_virtual_size(src):  # what check_input allowed
        raise FormatError(f"qemu-img reads a virtual size of {info.get('virtual-size')} "
                          f"bytes, not the qcow2 header's: refused")
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

"""Publishing a file whole or not at all: a temporary file beside it, then link or rename.

The one rule every writer of a final file follows (CLI outputs, Glance staging, the local key
store): the data goes to ``.<name>.<8 hex><suffix>`` in the target's directory (without the
leading dot when ``hidden=False``), created
``O_EXCL | O_NOFOLLOW`` with mode 0600 and then given its final mode before the first byte;
on success it is linked into place (``replace=False``: an existing target is
``FileExistsError``) or renamed over the target (``replace=True``); on any failure it is
removed. ``durable=True`` also fsyncs the file before and its directory after publishing.
Raises plain ``OSError``: callers say what failed in their own words.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_ATTEMPTS = 16  # fresh random names to try before giving up on FileExistsError


def umask_mode() -> int:
    """The mode a newly created file gets here: 0666 without the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(target: Path, suffix: str, hidden: bool) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    dot = "." if hidden else ""
    for attempt in range(_ATTEMPTS):
        # os.urandom(4).hex() is secrets.token_hex(4) without importing random at start-up
        tmp = target.with_name(f"{dot}{target.name}.{os.urandom(4).hex()}{suffix}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def atomic_file(target: Path, *, mode: int = 0o600, replace: bool = True,
                durable: bool = False, suffix: str = ".tmp",
                hidden: bool = True) -> Iterator[BinaryIO]:
    """Yield an unbuffered file that becomes ``target`` only if the block succeeds."""
    fd, tmp = _create_temp(target, suffix, hidden)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            os.fchmod(fd, mode)
            yield out
            if durable:
                os.fsync(fd)
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # FileExistsError if someone created target meanwhile
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(target.parent)


def write_file(target: Path, data: bytes, *, mode: int = 0o600, replace: bool = True,
               durable: bool = True) -> None:
    """Publish ``data`` as ``target`` whole (see :func:`atomic_file`)."""
    with atomic_file(target, mode=mode, replace=replace, durable=durable) as out:
        view = memoryview(data)
        while view:
            written = out.write(view)
            if not written:
                raise OSError(errno.EIO, "nothing written", str(target))
            view = view[written:]

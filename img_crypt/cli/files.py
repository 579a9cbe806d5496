"""Opening CLI inputs and outputs the Unix way, and never leaving a partial output behind.

``-`` (and ``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``) is stdin/stdout. A new or
(with ``--force``) existing regular-file OUTPUT is published whole by :mod:`img_crypt._atomic`.
A symlink is never replaced: the file it leads to is; a dangling one is refused. ``/dev/null``,
FIFOs and terminals are written in place; another device needs ``--force`` and is then written
in place; a socket or a directory is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from img_crypt._atomic import atomic_file, umask_mode
from img_crypt._io import DEFAULT_READ_SIZE, Input
from img_crypt._sniff import LUKS_MAGIC
from img_crypt.cli.args import output_path
from img_crypt.errors import ImgCryptError


def _os_error(action: str, path: str, error: OSError) -> ImgCryptError:
    return ImgCryptError(f"cannot {action} {path}: {error.strerror or error}")


@contextlib.contextmanager
def open_input(path: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """Yield the input stream and its size when it is a regular file (else None)."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as e:
        raise _os_error("read", path, e) from None
    with file:
        st = os.fstat(file.fileno())
        yield file, st.st_size if stat.S_ISREG(st.st_mode) else None


def peek(src: BinaryIO, total: int | None) -> tuple[bytes, Input]:
    """The first bytes of ``src`` (enough to sniff its format) and an input still at byte 0.

    A regular file is read again from the start; a pipe's prefix is chained before the rest.
    """
    prefix = b""
    while len(prefix) < len(LUKS_MAGIC) and (data := src.read(len(LUKS_MAGIC) - len(prefix))):
        prefix += data  # a raw pipe may return fewer bytes than asked
    if total is not None:
        src.seek(0)
        return prefix, src

    def chained() -> Iterator[bytes]:
        yield prefix
        while data := src.read(DEFAULT_READ_SIZE):
            yield data
    return prefix, chained()


def refuse_terminal(path: str, force: bool) -> None:
    """Refuse to write binary ciphertext to a terminal unless forced (as age does)."""
    if output_path(path) == "-" and sys.stdout.isatty() and not force:
        raise ImgCryptError("refusing to write encrypted data to a terminal "
                            "(redirect stdout or use --force)")


@contextlib.contextmanager
def open_output(path: str, *, force: bool) -> Iterator[BinaryIO]:
    """Yield a writable stream for ``path``; a file is published only if the block succeeds."""
    if output_path(path) == "-":
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _os_error("write", path, e) from None
    if st is None:
        if os.path.islink(path):
            raise ImgCryptError(f"not writing through dangling symlink {path}")
        opened = atomic_file(Path(path), mode=umask_mode(), replace=False, suffix=".part")
    elif stat.S_ISREG(st.st_mode):
        if not force:
            raise ImgCryptError(f"{path} already exists (use --force to overwrite it)")
        opened = atomic_file(_file_behind(path, st), mode=umask_mode(), suffix=".part")
    else:
        opened = _in_place(path, st, force=force)
    with _reported(path, opened) as out:
        yield out


def _file_behind(path: str, st: os.stat_result) -> Path:
    """The regular file ``path`` names, symlinks followed: what ``--force`` replaces."""
    real = Path(os.path.realpath(path))
    try:
        same = os.path.samestat(os.stat(real), st)
    except OSError:
        same = False
    if not same:  # e.g. /dev/fd/N of a deleted file: there is no name to replace
        raise ImgCryptError(f"{path} does not lead to a file that can be replaced; "
                            "name the file itself")
    return real


_KINDS = {stat.S_IFBLK: "a block device", stat.S_IFCHR: "a character device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


@contextlib.contextmanager
def _in_place(path: str, st: os.stat_result, *, force: bool) -> Iterator[BinaryIO]:
    """A FIFO, terminal, /dev/null, or (forced) another device, opened without truncating."""
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
    if stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode):
        raise ImgCryptError(f"cannot write {path}: it is {kind}")
    refusal = ImgCryptError(f"{path} is {kind} (use --force to write to it in place)")
    if stat.S_ISBLK(st.st_mode) and not force:
        raise refusal
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "wb", buffering=0) as out:
        if not os.path.samestat(os.fstat(fd), st):
            raise ImgCryptError(f"{path} changed while it was being opened")
        documented = stat.S_ISFIFO(st.st_mode) or os.isatty(fd) or (
            stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev)
        if not documented and not force:
            raise refusal
        yield out


@contextlib.contextmanager
def _reported(path: str, opened: AbstractContextManager[BinaryIO]) -> Iterator[BinaryIO]:
    """``opened``'s stream; its own failures (open, publish) as one-line errors naming ``path``.

    What the block raises passes through unchanged.
    """
    in_block = False
    try:
        with opened as out:
            in_block = True
            yield out
            in_block = False
    except FileExistsError:
        if in_block:
            raise
        raise ImgCryptError(f"{path} already exists (use --force to overwrite it)") from None
    except OSError as e:
        if in_block:
            raise
        raise _os_error("write", path, e) from None

"""Opening CLI inputs and outputs the Unix way, and never leaving a partial output behind.

``-`` is stdin/stdout. A regular-file OUTPUT is written to a temporary file in the same
directory and linked into place only on success; an OUTPUT that is not a regular file
(``/dev/null``, a FIFO, a terminal) is written in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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


def refuse_terminal(path: str, force: bool) -> None:
    """Refuse to write binary ciphertext to a terminal unless forced (as age does)."""
    if path == "-" and sys.stdout.isatty() and not force:
        raise ImgCryptError("refusing to write encrypted data to a terminal "
                            "(redirect stdout or use --force)")


@contextlib.contextmanager
def open_output(path: str, *, force: bool) -> Iterator[BinaryIO]:
    """Yield a writable stream for ``path``; publish it only if the block succeeds."""
    if path == "-":
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    target = Path(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _os_error("write", path, e) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with _in_place(path) as out:
            yield out
        return
    if st is not None and not force:
        raise ImgCryptError(f"{path} already exists (use --force to overwrite it)")
    with _atomic(target, replace=force) as out:
        yield out


@contextlib.contextmanager
def _in_place(path: str) -> Iterator[BinaryIO]:
    try:
        out = open(path, "wb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as e:
        raise _os_error("write", path, e) from None
    with out:
        yield out


@contextlib.contextmanager
def _atomic(target: Path, *, replace: bool) -> Iterator[BinaryIO]:
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.",
                                   suffix=".part")
    except OSError as e:
        raise _os_error("write", str(target), e) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb", buffering=0) as out:
            yield out
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if someone created target meanwhile
            os.unlink(tmp)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, FileExistsError):
            raise ImgCryptError(f"{target} already exists (use --force to overwrite it)") \
                from None
        raise

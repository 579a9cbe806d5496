"""``--threads N`` and ``IMG_CRYPT_THREADS``: how many workers cipher chunks in parallel."""

from __future__ import annotations

import argparse
import os
import re

from img_crypt._text import printable
from img_crypt._threads import DEFAULT_MAX_THREADS, MAX_THREADS
from img_crypt.errors import UsageError

ENV = "IMG_CRYPT_THREADS"
HELP = (f"cipher chunks on N threads, 1 to {MAX_THREADS}, or 'auto' (the usable cores, at "
        f"most {DEFAULT_MAX_THREADS}); default: ${ENV}, else 1, the one-thread streaming path")


def add_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` (checked by :func:`threads`, so a bad value is one error line)."""
    parser.add_argument("--threads", metavar="N", help=HELP)


def threads(args: argparse.Namespace) -> int | None:
    """The workers asked for by ``--threads`` or ``$IMG_CRYPT_THREADS``; None: the default.

    A value that is not a whole number from 1 to 256 is a :class:`UsageError` naming where it
    came from.
    """
    text, where = args.threads, "--threads"
    if text is None:
        text, where = os.environ.get(ENV), ENV
        if not text:
            return None
    if text == "auto":
        from img_crypt._payload_parallel import default_threads  # the parser must stay light

        return default_threads()
    if re.fullmatch(r"[0-9]{1,4}", text) is None or not 1 <= int(text) <= MAX_THREADS:
        raise UsageError(f"{where} must be 'auto' or a whole number from 1 to {MAX_THREADS}, not "
                         f"{printable(repr(text))}")
    return int(text)

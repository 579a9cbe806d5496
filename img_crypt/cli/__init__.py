"""The ``img-crypt`` command line: ``main(argv) -> int``, testable in process.

Exit codes: 0 success; 1 failure, with one line ``img-crypt: error: ...`` on stderr and no
traceback; 2 usage errors. ``--debug`` (before the command) logs at DEBUG level to stderr for
the run, the libraries' HTTP traces included, and the failure's traceback; key material is
never logged (requests and responses carrying keys are sent with keystoneauth's ``log=False``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from img_crypt._text import printable
from img_crypt.cli.parser import PROG, build, command
from img_crypt.errors import ImgCryptError, UsageError

if TYPE_CHECKING:
    import argparse


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = _parse(argv)
    return args if isinstance(args, int) else _execute(args)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of ``--help``, ``--version`` or a usage error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # only the command argv names gets its arguments
        return build(argv).parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2)
        return int(e.code or 0)


def _execute(args: argparse.Namespace) -> int:
    """Run the parsed command; its failures become one error line and an exit code."""
    with _debug_logging(args.debug):
        try:
            return int(command(args.func)(args))
        except (ImgCryptError, OSError, KeyboardInterrupt) as e:
            if args.debug:
                import logging

                logging.getLogger("img_crypt.cli").debug("%s failed", args.command, exc_info=e)
            return _fail(e)


@contextlib.contextmanager
def _debug_logging(enabled: bool) -> Iterator[None]:
    """With ``--debug``: every logger's DEBUG records go to stderr while the command runs."""
    if not enabled:
        yield
        return
    import logging

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _fail(error: BaseException) -> int:
    """Print the one-line error for ``error`` and return its exit code."""
    code, message = 1, str(error)
    if isinstance(error, UsageError):
        code = 2
    elif isinstance(error, KeyboardInterrupt):
        code, message = 130, "interrupted"
    elif isinstance(error, BrokenPipeError):
        # the reader went away (``img-crypt decrypt x - | head``): no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        message = "the output was closed early"
    elif isinstance(error, OSError):
        message = error.strerror or message
    print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
    return code


def run() -> None:
    """Console-script entry point."""
    args = _parse(None)
    if isinstance(args, int):
        sys.exit(args)
    # Library log records (retry warnings, python-barbicanclient's "4xx Client error" lines)
    # are for --debug: without a handler, logging's last resort would print them raw on
    # stderr around the one error line. Installed once parsed: --help, --version and usage
    # errors log nothing, and need not import logging (about 9 ms).
    import logging

    logging.getLogger().addHandler(logging.NullHandler())
    sys.exit(_execute(args))

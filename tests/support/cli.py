"""Run the ``img-crypt`` command line in-process and capture what it printed."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from img_crypt.cli import main


@dataclass
class Run:
    """Exit code, stdout and stderr of one command."""

    code: int
    out: str
    err: str


def cli(*argv: str) -> Run:
    """``img-crypt *argv``, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return Run(code, out.getvalue(), err.getvalue())

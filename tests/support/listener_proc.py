"""``img-crypt-listener`` as a real process (the console script of this venv), for e2e tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.servers._process import clean_env, tail, terminate

LISTENER = Path(sys.executable).parent / "img-crypt-listener"
READY_LINE = "listening for image.delete"


def wait_for(what: str, check: Callable[[], bool], timeout: float,
             detail: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` until true; AssertionError naming ``what`` (and ``detail()``) otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{detail()}")
        time.sleep(0.2)


class ListenerProcess:
    """``img-crypt-listener --config-file CONF``; its stdout and stderr go to ``log_file``."""

    def __init__(self, conf_file: Path, log_file: Path) -> None:
        self.conf_file, self.log_file = conf_file, log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        """Everything the listener logged so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> Self:
        """Start it and wait for its ready line; RuntimeError with the log if it exits first."""
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([str(LISTENER), "--config-file", str(self.conf_file)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=clean_env({"PYTHONUNBUFFERED": "1"}),
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"img-crypt-listener did not start:\n{tail(self.log_file)}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """SIGTERM (the listener stops cleanly on it), SIGKILL after a grace period."""
        proc, self.proc = self.proc, None
        terminate(proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

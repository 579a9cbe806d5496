"""Process plumbing shared by the real-server fixtures (Barbican, Glance): install, launch,
wait until ready, stop by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

POLL_INTERVAL = 0.1
STOP_GRACE = 10.0


def base_python() -> str:
    """The interpreter running the tests, outside any virtualenv (``venv`` builds from it)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def run(cmd: list[str], what: str, env: Mapping[str, str] | None = None) -> None:
    """Run an install step; RuntimeError with the output's tail if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=None if env is None else dict(env))
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without OS_*, Python path or virtualenv settings, plus extra."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not k.startswith("OS_")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the caller retries if it is taken before bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, limit: int = 4000) -> str:
    """The end of a log file, for failure messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return "(missing)"
    return data[-limit:].decode("utf-8", "replace")


def wait_ready(proc: subprocess.Popen[bytes], ready: Callable[[], bool], began: float,
               timeout: float) -> float | None:
    """Seconds from ``began`` until ``ready()``; None if the process exited first.

    TimeoutError when neither happens within ``timeout``.
    """
    deadline = began + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if ready():
            return time.monotonic() - began
        time.sleep(POLL_INTERVAL)
    raise TimeoutError


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process we started (by pid), SIGKILL after a grace period."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE)

"""Process plumbing shared by the real-server fixtures (Barbican, Glance): install steps, and
:class:`GunicornServer`, which launches one server, waits until it is ready and stops it."""

from __future__ import annotations

import abc
import contextlib
import fcntl
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Self

REPO = Path(__file__).resolve().parents[2]
SERVERS_DIR = REPO / ".servers"
"""Where the real servers' virtual environments are installed (ignored by git)."""
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


class GunicornServer(abc.ABC):
    """One real server under gunicorn on 127.0.0.1, in its own temp dir, stopped by pid.

    Subclasses say what to run and how to tell it is up: :attr:`name`, :attr:`ready_path`,
    :attr:`ready_status`, :meth:`_ensure_venv`, :meth:`_prepare` (write the configuration into
    :attr:`tmpdir`), :meth:`_app_args` (gunicorn's arguments after the bind address),
    :meth:`_env` and :attr:`log_file`. A server that cannot start raises RuntimeError with the
    tails of its log and of gunicorn's stderr: the tests using it fail, never skip.
    """

    name: ClassVar[str]
    ready_path: ClassVar[str]
    ready_status: ClassVar[int]

    def __init__(self, venv: Path | None, start_timeout: float) -> None:
        self.venv = venv
        self.start_timeout = start_timeout
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.start_seconds: float | None = None

    # --- subclass hooks ----------------------------------------------------------------------

    @abc.abstractmethod
    def _ensure_venv(self) -> Path:
        """Subclass hook."""

    @abc.abstractmethod
    def _prepare(self, venv: Path) -> None:
        """Subclass hook."""

    @abc.abstractmethod
    def _app_args(self, venv: Path) -> list[str]:
        """Subclass hook."""

    @abc.abstractmethod
    def _env(self) -> dict[str, str]:
        """Subclass hook."""

    def _ready_headers(self) -> dict[str, str]:
        return {}

    def _command(self, venv: Path, port: int) -> list[str]:
        """The command line: gunicorn bound to ``port``, then :meth:`_app_args`."""
        return [str(venv / "bin" / "gunicorn"), "-b", f"127.0.0.1:{port}",
                *self._app_args(venv)]

    @property
    @abc.abstractmethod
    def log_file(self) -> Path:
        """The server's own log."""

    # --- shared --------------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self.tmpdir

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr_file(self) -> Path:
        """gunicorn's stderr (where a bad config's traceback ends up)."""
        return self._dir() / "gunicorn.stderr"

    def _ready(self) -> bool:
        assert self.port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", self.ready_path, headers=self._ready_headers())
            return conn.getresponse().status == self.ready_status
        except OSError:
            return False
        finally:
            conn.close()

    def _failure(self, why: str) -> RuntimeError:
        log = self.log_file if self.tmpdir else Path("(no tmpdir)")
        err = self.stderr_file if self.tmpdir else Path("(no tmpdir)")
        return RuntimeError(f"real {self.name} did not start: {why}\n"
                            f"--- {log} (tail) ---\n{tail(log)}\n"
                            f"--- gunicorn stderr (tail) ---\n{tail(err)}")

    def start(self) -> Self:
        """Launch gunicorn and wait until the server answers; RuntimeError if it does not."""
        if self.proc is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        venv = self.venv or self._ensure_venv()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"img-crypt-{type(self).__name__.lower()}-"))
        try:
            self._prepare(venv)
            for attempt in range(3):  # the free port can be taken between probe and bind
                if self._launch(venv):
                    return self
                stderr = tail(self.stderr_file)
                in_use = "Address already in use" in stderr or "Connection in use" in stderr
                if not in_use or attempt == 2:
                    code = self.proc.returncode if self.proc else "?"
                    raise self._failure(f"the process exited with code {code}")
                self.proc = None
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def _launch(self, venv: Path) -> bool:
        """One attempt: True when ready, False when the process exited first."""
        tmp = self._dir()
        self.port = free_port()
        cmd = self._command(venv, self.port)
        began = time.monotonic()
        with open(self.stderr_file, "ab") as err, open(tmp / "gunicorn.stdout", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=self._env(), cwd=tmp, start_new_session=True)
        try:
            self.start_seconds = wait_ready(self.proc, self._ready, began, self.start_timeout)
        except TimeoutError:
            why = (f"GET {self.ready_path} did not answer {self.ready_status} within "
                   f"{self.start_timeout:.0f} s")
            raise self._failure(why) from None
        return self.start_seconds is not None

    def stop(self) -> None:
        """Terminate the process this instance started (by pid) and remove the temp dir."""
        proc, self.proc = self.proc, None
        terminate(proc)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        self.port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def install_once(venv: Path, lock_file: Path, requirements: Sequence[str], what: str,
                 stamp_name: str = ".img-crypt-install-complete",
                 check: tuple[Sequence[str], str] | None = None) -> Path:
    """Create ``venv`` with ``requirements`` (pip arguments) once (file lock; stamp file
    written last).

    A venv whose stamp differs (other requirements, another base interpreter) or that lacks
    the stamp (a broken half-install) is rebuilt. ``check`` (arguments to the venv's python,
    and what a failure means) runs before the stamp is written.
    """
    stamp = "\n".join((*requirements, base_python())) + "\n"

    def complete() -> bool:
        try:
            return (venv / stamp_name).read_text() == stamp and (venv / "bin" / "python").exists()
        except OSError:
            return False

    if complete():
        return venv
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if complete():  # another process finished it while we waited
                return venv
            if venv.exists() or venv.is_symlink():
                shutil.rmtree(venv)
            run([base_python(), "-m", "venv", str(venv)], f"creating the {what} venv")
            run([str(venv / "bin" / "python"), "-m", "pip", "install",
                 "--disable-pip-version-check", "--quiet", *requirements],
                "pip install " + " ".join(requirements))
            if check is not None:
                run([str(venv / "bin" / "python"), *check[0]], check[1])
            tmp = venv / (stamp_name + ".tmp")
            tmp.write_text(stamp)
            os.replace(tmp, venv / stamp_name)
            return venv
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

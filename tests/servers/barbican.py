"""A real Barbican 23.0.0 (from PyPI) on 127.0.0.1, for contract tests.

``ensure_venv()`` installs ``barbican==23.0.0`` and gunicorn once into ``<repo>/.servers/`` (git
ignored); ``RealBarbican`` runs one keystone-less server per instance in its own temp dir.
See /work/shared/notes/real-servers.md for the configuration and the ``request_id`` bug.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.servers._process import (
    base_python,
    clean_env,
    free_port,
    run,
    tail,
    terminate,
    wait_ready,
)

BARBICAN_VERSION = "23.0.0"
REQUIREMENTS = (f"barbican=={BARBICAN_VERSION}", "gunicorn")

REPO = Path(__file__).resolve().parents[2]
SERVERS_DIR = REPO / ".servers"
VENV_DIR = SERVERS_DIR / f"barbican-{BARBICAN_VERSION}"
LOCK_FILE = SERVERS_DIR / "barbican.lock"
STAMP_NAME = ".img-crypt-install-complete"
SHIM_FILE = Path(__file__).resolve().with_name("barbican_shim.py")

START_TIMEOUT = 60.0


def _stamp_text() -> str:
    return "\n".join((*REQUIREMENTS, base_python())) + "\n"


def _venv_complete(venv: Path) -> bool:
    stamp = venv / STAMP_NAME
    try:
        text = stamp.read_text()
    except OSError:
        return False
    return (
        text == _stamp_text()
        and (venv / "bin" / "python").exists()
        and (venv / "bin" / "gunicorn").exists()
    )


def ensure_venv() -> Path:
    """Return the Barbican virtualenv, creating it once (file lock; stamp file written last)."""
    if _venv_complete(VENV_DIR):
        return VENV_DIR
    SERVERS_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _venv_complete(VENV_DIR):  # another process finished it while we waited
                return VENV_DIR
            if VENV_DIR.exists() or VENV_DIR.is_symlink():  # a broken half-install
                shutil.rmtree(VENV_DIR)
            run([base_python(), "-m", "venv", str(VENV_DIR)], "creating the Barbican venv")
            run(
                [
                    str(VENV_DIR / "bin" / "python"), "-m", "pip", "install",
                    "--disable-pip-version-check", "--quiet", *REQUIREMENTS,
                ],
                "pip install " + " ".join(REQUIREMENTS),
            )
            tmp = VENV_DIR / (STAMP_NAME + ".tmp")
            tmp.write_text(_stamp_text())
            os.replace(tmp, VENV_DIR / STAMP_NAME)
            return VENV_DIR
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


BARBICAN_CONF = """\
[DEFAULT]
db_auto_create = True
log_file = {log_file}

[database]
connection = sqlite:///{sqlite}

[secretstore]
enabled_secretstore_plugins = store_crypto

[crypto]
enabled_crypto_plugins = simple_crypto

[simple_crypto_plugin]
kek = {kek}

[oslo_policy]
enforce_new_defaults = False
"""

PASTE_INI = """\
[composite:main]
use = egg:Paste#urlmap
/: barbican_version
/v1: barbican_api

[pipeline:barbican_version]
pipeline = request_id http_proxy_to_wsgi microversion versionapp

[pipeline:barbican_api]
pipeline = request_id request_id_shim http_proxy_to_wsgi unauthenticated-context microversion apiapp

[app:apiapp]
paste.app_factory = barbican.api.app:create_main_app

[app:versionapp]
paste.app_factory = barbican.api.app:create_version_app

[filter:request_id]
paste.filter_factory = oslo_middleware.request_id:RequestId.factory

[filter:request_id_shim]
paste.filter_factory = barbican_shim:filter_factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory

[filter:unauthenticated-context]
paste.filter_factory = barbican.api.middleware.context:UnauthenticatedContextMiddleware.factory

[filter:microversion]
paste.filter_factory = barbican.api.middleware.microversion:MicroversionMiddleware.factory
"""


class RealBarbican:
    """One real Barbican API server (gunicorn, one sync worker, SQLite) on 127.0.0.1."""

    def __init__(self, venv: Path | None = None, start_timeout: float = START_TIMEOUT) -> None:
        self.venv = venv
        self.start_timeout = start_timeout
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("RealBarbican is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "barbican-api.log"

    @property
    def stderr_file(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "gunicorn.stderr"

    def _write_config(self) -> Path:
        assert self.tmpdir is not None
        conf_dir = self.tmpdir / "home" / ".barbican"
        conf_dir.mkdir(parents=True)
        kek = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
        (conf_dir / "barbican.conf").write_text(
            BARBICAN_CONF.format(
                log_file=self.log_file, sqlite=self.tmpdir / "barbican.sqlite", kek=kek
            )
        )
        # The shim must be importable as a top-level module, but tests/servers itself cannot go
        # on the server's PYTHONPATH: tests/servers/barbican.py (this file) would shadow the
        # real ``barbican`` package. So the server gets a directory holding only the shim.
        shim_dir = self.tmpdir / "pythonpath"
        shim_dir.mkdir()
        shutil.copyfile(SHIM_FILE, shim_dir / "barbican_shim.py")
        paste = self.tmpdir / "barbican-api-paste.ini"
        paste.write_text(PASTE_INI)
        return paste

    def _env(self) -> dict[str, str]:
        assert self.tmpdir is not None
        return clean_env({"HOME": str(self.tmpdir / "home"),
                          "PYTHONPATH": str(self.tmpdir / "pythonpath")})

    def _ready(self) -> bool:
        assert self.port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 300
        except OSError:
            return False
        finally:
            conn.close()

    def _failure(self, why: str) -> RuntimeError:
        return RuntimeError(
            f"real Barbican {BARBICAN_VERSION} did not start: {why}\n"
            f"--- {self.log_file} (tail) ---\n{tail(self.log_file)}\n"
            f"--- gunicorn stderr (tail) ---\n{tail(self.stderr_file)}"
        )

    def start(self) -> RealBarbican:
        """Launch gunicorn and wait until ``GET /`` answers 300; RuntimeError otherwise."""
        if self.proc is not None:
            raise RuntimeError("RealBarbican already started")
        venv = self.venv or ensure_venv()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="img-crypt-barbican-"))
        try:
            paste = self._write_config()
            for attempt in range(3):  # the free port can be taken between probe and bind
                if self._launch(venv, paste):
                    return self
                stderr = tail(self.stderr_file)
                in_use = "Address already in use" in stderr or "Connection in use" in stderr
                if not in_use or attempt == 2:
                    raise self._failure(
                        f"the process exited with code {self.proc.returncode if self.proc else '?'}"
                    )
                self.proc = None
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def _launch(self, venv: Path, paste: Path) -> bool:
        assert self.tmpdir is not None
        self.port = free_port()
        cmd = [
            str(venv / "bin" / "gunicorn"), "--paste", str(paste.resolve()),
            "-b", f"127.0.0.1:{self.port}", "-w", "1", "--timeout", "120",
            "--graceful-timeout", "5",
        ]
        began = time.monotonic()
        out_file = self.tmpdir / "gunicorn.stdout"
        with open(self.stderr_file, "ab") as err, open(out_file, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self._env(),
                cwd=self.tmpdir, start_new_session=True,
            )
        try:
            self.start_seconds = wait_ready(self.proc, self._ready, began, self.start_timeout)
        except TimeoutError:
            why = f"GET / did not answer 300 within {self.start_timeout:.0f} s"
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

    def __enter__(self) -> RealBarbican:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":  # manual use: python tests/servers/barbican.py
    t0 = time.monotonic()
    ensure_venv()
    print(f"venv ready in {time.monotonic() - t0:.1f} s: {VENV_DIR}")
    with RealBarbican() as server:
        print(f"{server.url} started in {server.start_seconds:.2f} s; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()

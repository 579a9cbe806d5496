"""A real Barbican 23.0.0 (from PyPI) on 127.0.0.1, for contract tests.

``ensure_venv()`` installs ``barbican==23.0.0`` and gunicorn once into ``<repo>/.servers/`` (git
ignored); ``RealBarbican`` runs one keystone-less server per instance in its own temp dir.
See /work/shared/notes/real-servers.md for the configuration and the ``request_id`` bug.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from tests.servers._process import (
    SERVERS_DIR,
    GunicornServer,
    clean_env,
    install_once,
)
from tests.servers.keystone import ServiceUser

BARBICAN_VERSION = "23.0.0"
REQUIREMENTS = (f"barbican=={BARBICAN_VERSION}", "gunicorn")

VENV_DIR = SERVERS_DIR / f"barbican-{BARBICAN_VERSION}"
LOCK_FILE = SERVERS_DIR / "barbican.lock"
STAMP_NAME = ".img-crypt-install-complete"
SHIM_FILE = Path(__file__).resolve().with_name("barbican_shim.py")

START_TIMEOUT = 60.0


def ensure_venv() -> Path:
    """Return the Barbican virtualenv, creating it once (file lock; stamp file written last)."""
    return install_once(VENV_DIR, LOCK_FILE, REQUIREMENTS, "Barbican", STAMP_NAME)


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

"""

NOAUTH_POLICY = """
[oslo_policy]
# noauth only: without Keystone no role implies another; the real-auth mode keeps the defaults
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

# keystone mode: Barbican's own keystone pipeline (authtoken, then its ContextMiddleware)
KEYSTONE_PIPELINE = (
    "request_id request_id_shim http_proxy_to_wsgi unauthenticated-context microversion apiapp",
    "request_id request_id_shim http_proxy_to_wsgi authtoken context microversion apiapp",
)
KEYSTONE_FILTERS = """
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory

[filter:context]
paste.filter_factory = barbican.api.middleware.context:ContextMiddleware.factory
"""


class RealBarbican(GunicornServer):
    """One real Barbican API server (gunicorn, one sync worker, SQLite) on 127.0.0.1."""

    name = f"Barbican {BARBICAN_VERSION}"
    ready_path, ready_status = "/", 300

    def __init__(self, venv: Path | None = None, start_timeout: float = START_TIMEOUT,
                 keystone: ServiceUser | None = None) -> None:
        """``keystone``: Barbican's own service user; the server then runs behind
        keystonemiddleware with its shipped default policies (secure RBAC, scope enforced)."""
        super().__init__(venv, start_timeout)
        self.keystone = keystone

    @property
    def log_file(self) -> Path:
        return self._dir() / "barbican-api.log"

    def _ensure_venv(self) -> Path:
        return ensure_venv()

    def _prepare(self, venv: Path) -> None:
        tmp = self._dir()
        conf_dir = tmp / "home" / ".barbican"
        conf_dir.mkdir(parents=True)
        kek = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
        conf = BARBICAN_CONF.format(log_file=self.log_file, sqlite=tmp / "barbican.sqlite",
                                    kek=kek)
        paste = PASTE_INI
        if self.keystone is None:
            conf += NOAUTH_POLICY
        else:
            conf += "\n" + self.keystone.authtoken_conf()
            paste = paste.replace(*KEYSTONE_PIPELINE) + KEYSTONE_FILTERS
        (conf_dir / "barbican.conf").write_text(conf)
        # The shim must be importable as a top-level module, but tests/servers itself cannot go
        # on the server's PYTHONPATH: tests/servers/barbican.py (this file) would shadow the
        # real ``barbican`` package. So the server gets a directory holding only the shim.
        shim_dir = tmp / "pythonpath"
        shim_dir.mkdir()
        shutil.copyfile(SHIM_FILE, shim_dir / "barbican_shim.py")
        (tmp / "barbican-api-paste.ini").write_text(paste)

    def _app_args(self, venv: Path) -> list[str]:
        paste = self._dir() / "barbican-api-paste.ini"
        return ["--paste", str(paste.resolve()), "-w", "1", "--timeout", "120",
                "--graceful-timeout", "5"]

    def _env(self) -> dict[str, str]:
        tmp = self._dir()
        return clean_env({"HOME": str(tmp / "home"), "PYTHONPATH": str(tmp / "pythonpath")})


if __name__ == "__main__":  # manual use: python tests/servers/barbican.py
    t0 = time.monotonic()
    ensure_venv()
    print(f"venv ready in {time.monotonic() - t0:.1f} s: {VENV_DIR}")
    with RealBarbican() as server:
        print(f"{server.url} started in {server.start_seconds:.2f} s; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()

"""os-brick 7.1.1 (from PyPI) in a virtualenv of its own, as an oracle for the LUKS1 passphrase.

``ensure_venv()`` installs os-brick, castellan (only for its key objects) and just the modules
``os_brick.utils`` and ``os_brick.encryptors.luks`` import, all with ``--no-deps`` (about
23 small packages and 10 s instead of 63 packages and 30 s for the full dependency tree), once
into ``<repo>/.servers/`` under a file lock; the stamp file is written last. ``brick_open``
runs ``os_brick_attach.py`` in that venv. An install that fails raises RuntimeError: the
tests fail, never skip.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.servers._process import SERVERS_DIR, clean_env, install_once

OS_BRICK_VERSION = "7.1.1"
REQUIREMENTS = (
    f"os-brick=={OS_BRICK_VERSION}", "castellan==5.8.0",
    # what os_brick.utils and os_brick.encryptors.luks import, found by importing them
    "oslo.concurrency", "oslo.config", "oslo.context", "oslo.i18n", "oslo.log", "oslo.privsep",
    "oslo.serialization", "oslo.utils", "cffi", "debtcollector", "iso8601", "msgpack",
    "netaddr", "pbr", "pycparser", "python-dateutil", "rfc3986", "stevedore", "tenacity",
    "typing_extensions", "six",
)
VENV_DIR = SERVERS_DIR / f"os-brick-{OS_BRICK_VERSION}"
LOCK_FILE = SERVERS_DIR / "os-brick.lock"
STAMP_NAME = ".img-crypt-install-complete"
SCRIPT = Path(__file__).resolve().with_name("os_brick_attach.py")
IMPORT_CHECK = ("import os_brick.utils, os_brick.encryptors.luks, "
                "castellan.common.objects.symmetric_key")


def ensure_venv() -> Path:
    """Return the os-brick virtualenv, creating it once (file lock; stamp file written last)."""
    return install_once(VENV_DIR, LOCK_FILE, ("--no-deps", *REQUIREMENTS), "os-brick",
                        STAMP_NAME, check=(("-W", "ignore", "-c", IMPORT_CHECK),
                                           "importing os-brick (a module it needs may be "
                                           "missing from REQUIREMENTS)"))


def brick_open(venv: Path, key: bytes, device: Path, secret_type: str = "symmetric"
               ) -> dict[str, Any]:
    """What os-brick does with a key manager secret holding ``key`` when it attaches ``device``.

    Returns ``os_brick_attach.py``'s report: ``passphrase`` (get_passphrase_from_secret),
    ``calls`` (the commands LuksEncryptor.attach_volume ran) and ``opened``. The key goes to
    the script on stdin, never on a command line.
    """
    request = {"key": base64.b64encode(key).decode(), "device": str(device),
               "secret_type": secret_type}
    proc = subprocess.run([str(venv / "bin" / "python"), "-I", "-W", "ignore", str(SCRIPT)],
                          input=json.dumps(request), capture_output=True, text=True,
                          timeout=120, check=False, env=clean_env())
    if proc.returncode != 0:
        raise RuntimeError(f"os_brick_attach.py failed (exit {proc.returncode}): "
                           f"{proc.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report

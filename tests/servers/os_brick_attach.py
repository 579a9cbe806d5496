"""Run inside the os-brick venv (tests/servers/os_brick_venv.py): what os-brick does with a secret.

Reads ``{"key": base64, "device": path, "secret_type": "symmetric" | "passphrase"}`` on stdin.
Prints JSON: ``passphrase`` (``os_brick.utils.get_passphrase_from_secret`` of the castellan
object Cinder's key manager returns), and the outcome of ``LuksEncryptor.attach_volume`` on
``device`` with a key manager that returns that object: every command os-brick ran, in order.
``cryptsetup isLuks`` and ``luksOpen`` run for real, ``luksOpen`` with ``--test-passphrase``
added (no device mapper here: it checks the passphrase, on the same stdin, and maps nothing);
anything else is recorded, not run, and ``luksFormat`` (os-brick's "never formatted" path, which
would overwrite the image) stops the script.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

from castellan.common.objects.passphrase import Passphrase
from castellan.common.objects.symmetric_key import SymmetricKey
from os_brick import utils  # type: ignore[import-not-found, unused-ignore]
from os_brick.encryptors import luks  # type: ignore[import-not-found, unused-ignore]
from oslo_concurrency import processutils  # type: ignore[import-not-found, unused-ignore]

calls: list[dict[str, Any]] = []


def execute(*cmd: str, process_input: str | None = None, **_: Any) -> tuple[str, str]:
    """os-brick's ``execute``: run the read-only cryptsetup checks, record the rest."""
    record: dict[str, Any] = {"argv": list(cmd), "stdin": process_input}
    calls.append(record)
    if cmd[:2] == ("cryptsetup", "luksFormat"):
        raise SystemExit(f"os-brick would format the device: {cmd}")
    if cmd[:2] not in (("cryptsetup", "isLuks"), ("cryptsetup", "luksOpen")):
        return "", ""
    argv = list(cmd)
    if cmd[1] == "luksOpen":
        argv.insert(2, "--test-passphrase")
    proc = subprocess.run(argv, input=process_input, capture_output=True, text=True,
                          timeout=60, check=False)
    record["exit"] = proc.returncode
    if proc.returncode != 0:
        raise processutils.ProcessExecutionError(
            exit_code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, cmd=" ".join(cmd))
    return proc.stdout, proc.stderr


class KeyManager:
    """castellan's interface, as Cinder's and Nova's key manager answer ``get``."""

    def __init__(self, secret: Any) -> None:
        self.secret = secret

    def get(self, context: Any, key_id: str) -> Any:
        return self.secret


def main() -> None:
    request = json.load(sys.stdin)
    key = base64.b64decode(request["key"])
    secret: Any = (SymmetricKey("AES", len(key) * 8, key)
                   if request["secret_type"] == "symmetric" else Passphrase(key))
    report: dict[str, Any] = {"passphrase": utils.get_passphrase_from_secret(secret)}
    encryptor = luks.LuksEncryptor(
        root_helper=None, connection_info={"data": {"device_path": request["device"]}},
        keymgr=KeyManager(secret), execute=execute, encryption_key_id="image-key")
    try:
        encryptor.attach_volume(None)
        report["opened"] = True
    except processutils.ProcessExecutionError:
        report["opened"] = False
    report["calls"] = calls
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()

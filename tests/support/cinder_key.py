"""The LUKS passphrase of an image's key, fetched as Cinder fetches it (castellan ``get``, hex).

Runs ``tests/servers/castellan_get_key.py`` with the Glance venv's Python (castellan 5.8.0 and
python-barbicanclient are installed there with Glance) against a keystone-less Barbican.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.servers._process import clean_env

SCRIPT = Path(__file__).resolve().parents[1] / "servers" / "castellan_get_key.py"


def castellan_get(venv: Path, barbican_url: str, project_id: str, key_id: str) -> dict[str, Any]:
    """castellan's view of secret ``key_id``: managed_type, algorithm, bit_length, passphrase
    (``binascii.hexlify(key.get_encoded())``, as Cinder and os-brick derive it)."""
    request = {"barbican_url": barbican_url, "project_id": project_id, "key_id": key_id}
    proc = subprocess.run([str(venv / "bin" / "python"), "-I", "-W", "ignore", str(SCRIPT)],
                          input=json.dumps(request), capture_output=True, text=True,
                          timeout=120, check=False, env=clean_env())
    if proc.returncode != 0:
        raise RuntimeError(f"castellan get of {key_id} failed (exit {proc.returncode}): "
                           f"{proc.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer

"""Text from Barbican or the key store reaches the terminal escaped (issue 11, behaviour 8).

Secret names are whatever a project member stored: an escape sequence, a line separator or a
bidirectional override in one must not drive the terminal nor split ``keys list`` lines.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from barbican_mock import MockBarbican
from img_crypt.keys.local import LocalKeyStore
from tests.support.cli import cli

HOSTILE = "evil\x1b[2J\x1b]0;owned\x07\u2028second line\u202eeman"
ESCAPED = "evil\\x1b[2J\\x1b]0;owned\\x07\\u2028second line\\u202eeman"
RAW = ("\x1b", "\x07", "\u2028", "\u202e")


@pytest.fixture
def mock() -> Iterator[MockBarbican]:
    with MockBarbican() as server:
        yield server


def store_named(mock: MockBarbican, name: str, project: str = "p") -> str:
    """Store a 256-bit key named ``name`` straight through the API; return its id."""
    payload = base64.b64encode(os.urandom(32)).decode()
    body: dict[str, str | int] = {
            "name": name, "payload": payload, "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64", "algorithm": "aes", "bit_length": 256,
            "mode": "cbc", "secret_type": "symmetric"}
    resp = requests.post(f"{mock.url}/v1/secrets", json=body, headers={"X-Project-Id": project},
                         timeout=10)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["secret_ref"]).rsplit("/", 1)[-1]


def test_keys_list_escapes_barbican_secret_names(mock: MockBarbican) -> None:
    key_id = store_named(mock, HOSTILE)
    run = cli("keys", "list", "--key-manager", "barbican", "--barbican-url", mock.url,
              "--project-id", "p")
    assert run.code == 0, run.err
    assert not any(ch in run.out for ch in RAW)
    (line,) = run.out.splitlines()
    assert line.startswith(key_id) and line.endswith(ESCAPED)


def test_keys_list_json_keeps_the_name_exact_and_the_output_ascii(
        mock: MockBarbican) -> None:
    store_named(mock, HOSTILE)
    run = cli("keys", "list", "--json", "--key-manager", "barbican", "--barbican-url", mock.url,
              "--project-id", "p")
    assert run.code == 0 and run.out.isascii()
    assert [k["name"] for k in json.loads(run.out)] == [HOSTILE]


def test_keys_list_escapes_local_key_names(tmp_path: Path) -> None:
    key_id = LocalKeyStore(tmp_path / "store").create_key(name=HOSTILE)
    run = cli("keys", "list", "--key-store", str(tmp_path / "store"))
    assert run.code == 0, run.err
    assert not any(ch in run.out for ch in RAW)
    (line,) = run.out.splitlines()
    assert line.startswith(key_id) and line.endswith(ESCAPED)


@pytest.mark.parametrize("typed", ["k\u2028ey", "\x1b[2Jkey"])
def test_keys_delete_echoes_a_typed_id_escaped(tmp_path: Path, typed: str) -> None:
    run = cli("keys", "delete", typed, "--key-store", str(tmp_path / "store"))
    assert run.code == 1
    assert not any(ch in run.out + run.err for ch in RAW)
    assert run.err.count("\n") == 1

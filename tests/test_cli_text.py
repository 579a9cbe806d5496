"""Key ids from a hostile header reach the terminal escaped (img_crypt/_text.py).

FORMAT.md bans C0, DEL and C1 controls in key ids, but U+2028/U+2029 (which Python's
``splitlines`` and many log readers treat as line breaks) and bidirectional overrides (which
reorder what a terminal shows) are valid UTF-8 and parse. ``inspect`` and the one-line error
of a failed ``decrypt`` must show them as escapes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from img_crypt import envelope
from img_crypt._text import printable
from img_crypt.envelope import Kek
from tests.support.cli import cli

HOSTILE_IDS = ["a\u2028b", "x\u2029y", "evil\u202egpj.exe", "\u200bzero-width"]
"""Valid key ids (no C0/C1 control) that a terminal or ``splitlines`` would act on."""


@pytest.mark.parametrize("text", [*HOSTILE_IDS, "tab\there", "new\nline", "esc\x1b[31m"])
def test_printable_escapes_what_a_terminal_or_splitlines_acts_on(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable() and len(shown.splitlines()) == 1
    assert "\\" in shown and shown != text


def test_printable_keeps_ordinary_text() -> None:
    text = "clé 🔑 0f8e4c1a-1111-4222-8333-444455556666"
    assert printable(text) == text


@pytest.fixture
def hostile_file(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.icr"
    keks = [Kek("local", key_id, os.urandom(32)) for key_id in HOSTILE_IDS]
    with path.open("wb") as out:
        envelope.encrypt(io.BytesIO(b"plain"), out, keks)
    return path


def test_inspect_shows_hostile_key_ids_escaped(hostile_file: Path) -> None:
    run = cli("inspect", str(hostile_file))
    assert run.code == 0
    for key_id in HOSTILE_IDS:
        assert key_id not in run.out
        assert printable(key_id) in run.out
    assert all(line.isprintable() for line in run.out.splitlines())


def test_a_failed_decrypt_naming_hostile_key_ids_is_one_escaped_line(
        hostile_file: Path, tmp_path: Path) -> None:
    run = cli("decrypt", str(hostile_file), str(tmp_path / "out"),
              "--key-store", str(tmp_path / "empty-store"))
    assert run.code == 1
    assert len(run.err.splitlines()) == 1 and run.err.startswith("img-crypt: error:")
    assert run.err.rstrip("\n").isprintable()
    assert not (tmp_path / "out").exists()

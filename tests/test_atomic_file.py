"""``img_crypt._atomic``: the one way CLI outputs, Glance staging and the key store publish a file.

A temporary ``.<name>.<8 hex><suffix>`` beside the target, created 0600 and given its final
mode before the first byte; linked (never over an existing file) or renamed into place on
success; removed on any failure; fsynced (file and directory) when durable.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

import pytest

from img_crypt._atomic import atomic_file, write_file


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.usefixtures("open_umask")
def test_the_temporary_file_has_its_final_mode_before_the_first_byte(tmp_path: Path) -> None:
    for mode in (0o600, 0o644):
        target = tmp_path / f"out-{mode:o}"
        with atomic_file(target, mode=mode, suffix=".part") as out:
            [temp] = [n for n in names(tmp_path) if n.startswith(f".{target.name}.")]
            assert re.fullmatch(rf"\.{target.name}\.[0-9a-f]{{8}}\.part", temp)
            assert stat.S_IMODE(os.fstat(out.fileno()).st_mode) == mode
            assert os.fstat(out.fileno()).st_size == 0
            out.write(b"data")
        assert stat.S_IMODE(target.stat().st_mode) == mode
        assert target.read_bytes() == b"data"
    assert names(tmp_path) == ["out-600", "out-644"]


def test_without_replace_an_existing_target_is_kept_and_the_temp_removed(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"precious")

    with pytest.raises(FileExistsError), atomic_file(target, replace=False) as out:
        out.write(b"new")

    assert target.read_bytes() == b"precious"
    assert names(tmp_path) == ["out"]


def test_with_replace_the_target_is_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    before = target.stat().st_ino

    write_file(target, b"new")

    assert target.read_bytes() == b"new" and target.stat().st_ino != before
    assert names(tmp_path) == ["out"]


@pytest.mark.parametrize("replace", [False, True])
def test_a_failure_in_the_block_leaves_no_file(tmp_path: Path, replace: bool) -> None:
    target = tmp_path / "out"

    with pytest.raises(KeyboardInterrupt), atomic_file(target, replace=replace) as out:
        out.write(b"half")
        raise KeyboardInterrupt

    assert names(tmp_path) == []


def test_durable_writes_fsync_the_file_then_the_directory(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append("dir" if stat.S_ISDIR(st.st_mode) else f"file:{st.st_size}")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_file(tmp_path / "durable", b"12345")
    with atomic_file(tmp_path / "not-durable") as out:
        out.write(b"x")

    assert synced == ["file:5", "dir"]


def test_a_taken_temporary_name_is_retried(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    (tmp_path / ".out.00000000.tmp").write_bytes(b"someone else's")

    write_file(tmp_path / "out", b"mine")

    assert (tmp_path / "out").read_bytes() == b"mine"
    assert (tmp_path / ".out.00000000.tmp").read_bytes() == b"someone else's"


def test_a_visible_temporary_name_starts_with_the_target_name(tmp_path: Path) -> None:
    """Glance staging: its cleaner reaps ``<image id>.*`` files of deleted images."""
    target = tmp_path / "0b8e5f3c-7d21-4a9e-b6c4-1e3f5a7b9c2d.img-crypt"
    with atomic_file(target, hidden=False) as out:
        [temp] = names(tmp_path)
        assert re.fullmatch(rf"{re.escape(target.name)}\.[0-9a-f]{{8}}\.tmp", temp)
        out.write(b"x")
    assert names(tmp_path) == [target.name]

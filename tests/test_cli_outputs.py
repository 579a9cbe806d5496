"""What ``--force`` may do to an existing OUTPUT, and which names mean standard output.

The rules (README "Outputs", ``img-crypt encrypt --help``): a regular file is replaced whole by
a rename, only with ``--force``; a symlink is never replaced (``--force`` replaces the file it
leads to; a dangling one is refused); ``/dev/null``, FIFOs and terminals are written in place;
another device needs ``--force`` and is then written in place; a socket is refused;
``/dev/stdout``, ``/dev/fd/1`` and ``/proc/self/fd/1`` are ``-``.
"""

from __future__ import annotations

import os
import pty
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from img_crypt.keys.local import LocalKeyStore
from tests.support.cli import Run, cli

REPO = Path(__file__).resolve().parent.parent
PLAINTEXT = bytes(range(256)) * 130  # three chunks, the last one partial
STDOUT_NAMES = ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"]


@dataclass
class World:
    """A key store with one key, and a plaintext file in a work directory."""

    work: Path
    store: Path
    key_id: str

    @property
    def plain(self) -> Path:
        return self.work / "plain"

    def encrypt(self, output: str | Path, *options: str) -> Run:
        return cli("encrypt", str(self.plain), str(output), "--kek", self.key_id,
                   "--key-store", str(self.store), *options)

    def decrypts(self, path: Path) -> bool:
        back = self.work / "back"
        back.unlink(missing_ok=True)
        run = cli("decrypt", str(path), str(back), "--key-store", str(self.store))
        return run.code == 0 and back.read_bytes() == PLAINTEXT

    def leftovers(self, directory: Path) -> list[str]:
        return [n for n in os.listdir(directory) if n.endswith(".part")]

    def program(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "img_crypt", *argv, "--key-store", str(self.store)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture
def world(tmp_path: Path) -> World:
    work = tmp_path / "work"
    work.mkdir()
    (work / "plain").write_bytes(PLAINTEXT)
    store = tmp_path / "keys"
    return World(work, store, LocalKeyStore(store).create_key("outputs"))


def one_error_line(run: Run) -> str:
    assert run.code == 1, run
    assert run.err.startswith("img-crypt: error: ") and run.err.count("\n") == 1, run.err
    return run.err


# --- symlinks -------------------------------------------------------------------------------

def test_force_through_a_symlink_to_dev_null_keeps_the_symlink(world: World) -> None:
    link = world.work / "sink"
    link.symlink_to(os.devnull)

    run = world.encrypt(link, "--force")

    assert run.code == 0, run.err
    assert link.is_symlink() and os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert world.leftovers(world.work) == []


def test_force_through_a_symlink_replaces_the_file_it_leads_to_and_keeps_the_link(
        world: World) -> None:
    (world.work / "images").mkdir()
    real = world.work / "images" / "v3.icr"
    real.write_bytes(b"old image")
    link = world.work / "latest.icr"
    link.symlink_to(Path("images") / "v3.icr")

    refused = world.encrypt(link)
    forced = world.encrypt(link, "--force")

    assert "--force" in one_error_line(refused)
    assert forced.code == 0, forced.err
    assert link.is_symlink() and os.readlink(link) == "images/v3.icr"
    assert world.decrypts(real)
    assert world.leftovers(world.work) == world.leftovers(real.parent) == []


@pytest.mark.parametrize("force", [False, True])
def test_a_dangling_symlink_is_never_written_through_nor_replaced(world: World,
                                                                  force: bool) -> None:
    link = world.work / "out.icr"
    link.symlink_to(world.work / "elsewhere.icr")

    run = world.encrypt(link, *(["--force"] if force else []))

    assert "dangling symlink" in one_error_line(run)
    assert link.is_symlink() and not (world.work / "elsewhere.icr").exists()
    assert world.leftovers(world.work) == []


# --- devices and sockets --------------------------------------------------------------------

@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full"])
def test_a_device_other_than_dev_null_needs_force(world: World, device: str) -> None:
    before = os.stat(device)

    run = world.encrypt(device)

    err = one_error_line(run)
    assert f"{device} is a character device" in err and "--force" in err
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_with_force_dev_zero_is_written_in_place(world: World) -> None:
    run = world.encrypt("/dev/zero", "--force")

    assert run.code == 0, run.err
    assert stat.S_ISCHR(os.stat("/dev/zero").st_mode)
    assert world.leftovers(Path("/dev")) == []


def test_with_force_dev_full_is_written_in_place_and_fails_as_a_full_device(
        world: World) -> None:
    run = world.encrypt("/dev/full", "--force")

    assert "No space left on device" in one_error_line(run)  # the write reached the device
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert world.leftovers(Path("/dev")) == []


def test_a_block_device_needs_force_and_is_not_opened_without_it(world: World) -> None:
    node = world.work / "disk"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 250))  # a loop device nobody set up

    run = world.encrypt(node)

    err = one_error_line(run)
    assert f"{node} is a block device" in err and "--force" in err
    assert stat.S_ISBLK(os.lstat(node).st_mode)


@pytest.mark.parametrize("force", [False, True])
def test_a_socket_is_refused_clearly(world: World, force: bool) -> None:
    path = world.work / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))

        run = world.encrypt(path, *(["--force"] if force else []))

    assert f"cannot write {path}: it is a socket" in one_error_line(run)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_terminal_named_as_output_is_written_in_place_without_force(world: World) -> None:
    small = world.work / "small"
    small.write_bytes(b"x" * 100)  # its ciphertext fits in the terminal's buffer
    master, slave = pty.openpty()
    try:
        run = cli("encrypt", str(small), os.ttyname(slave), "--kek", world.key_id,
                  "--key-store", str(world.store))
        os.set_blocking(master, False)
        on_terminal = os.read(master, 65536)
    finally:
        os.close(slave)
        os.close(master)

    assert run.code == 0, run.err
    assert on_terminal.startswith(b"\x89ICR")


# --- standard output under other names ------------------------------------------------------

@pytest.mark.parametrize("name", STDOUT_NAMES)
def test_stdout_names_are_standard_output_with_the_report_on_stderr(world: World,
                                                                     name: str) -> None:
    out = world.work / "captured.icr"
    with out.open("wb") as stdout:
        done = subprocess.run(world.program("encrypt", str(world.plain), name, "--kek",
                                            world.key_id), stdout=stdout, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=world.env(), timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().startswith(f"key: local:{world.key_id}\n")
    assert world.decrypts(out)  # ciphertext only: the report did not go into it
    assert Path("/dev/stdout").is_symlink()


@pytest.mark.parametrize("name", STDOUT_NAMES)
def test_stdout_names_with_force_never_replace_dev_stdout(world: World, name: str) -> None:
    out = world.work / "captured.icr"
    out.write_bytes(b"the shell truncated this already")
    with out.open("wb") as stdout:
        done = subprocess.run(world.program("encrypt", str(world.plain), name, "--kek",
                                            world.key_id, "--force"), stdout=stdout,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=world.env(), timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert world.decrypts(out)
    assert Path("/dev/stdout").is_symlink()
    assert world.leftovers(Path("/dev")) == [] and world.leftovers(Path("/dev/fd")) == []


@pytest.mark.parametrize("name", STDOUT_NAMES)
def test_ciphertext_to_a_terminal_through_a_stdout_name_is_refused(world: World,
                                                                   name: str) -> None:
    master, slave = pty.openpty()
    try:
        done = subprocess.run(world.program("encrypt", str(world.plain), name, "--kek",
                                            world.key_id), stdout=slave, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=world.env(), timeout=60,
                              check=False)
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    try:
        on_terminal = os.read(master, 65536)
    except (BlockingIOError, OSError):
        on_terminal = b""
    os.close(master)

    assert done.returncode == 1
    assert done.stderr.decode() == ("img-crypt: error: refusing to write encrypted data to a "
                                    "terminal (redirect stdout or use --force)\n")
    assert b"ICR" not in on_terminal

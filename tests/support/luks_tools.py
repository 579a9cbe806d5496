"""The real LUKS tools as test oracles: cryptsetup and qemu-img; tests fail (never skip) without.

``scripts/setup.sh --test`` installs them (Debian ``cryptsetup-bin`` and ``qemu-utils``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

QEMU_CREATE_ATTEMPTS = 6  # qemu-img's PBKDF calibration fails now and then on this VM


def tool(name: str) -> str:
    """The path of ``name``; the test fails when it is missing (run scripts/setup.sh --test)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is missing: run scripts/setup.sh --test (apt qemu-utils, "
                    "cryptsetup-bin)")
    return path


def run(*argv: str, stdin: bytes | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[bytes]:
    """Run a tool (argv[0] looked up with :func:`tool`); with ``check``, fail on non-zero exit."""
    proc = subprocess.run([tool(argv[0]), *argv[1:]], input=stdin, capture_output=True,
                          timeout=120, check=False)
    if check and proc.returncode:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()!r}")
    return proc


def passfile(directory: Path, passphrase: bytes) -> Path:
    """A 0600 file holding exactly ``passphrase`` (no newline), as Nova/Cinder pass secrets."""
    path = directory / "pass"
    path.touch(mode=0o600)
    path.write_bytes(passphrase)
    return path


def secret(path: Path) -> str:
    """qemu-img's ``--object`` for the secret in ``path``."""
    return f"secret,id=s,file={path}"


def qemu_decrypt(image: Path, pass_path: Path, out: Path) -> bytes:
    """What QEMU's luks driver reads from ``image`` (qemu-img convert to raw)."""
    run("qemu-img", "convert", "--object", secret(pass_path), "--image-opts",
        f"driver=luks,key-secret=s,file.filename={image}", "-O", "raw", str(out))
    return out.read_bytes()


def qemu_encrypt(plain: Path, pass_path: Path, out: Path) -> None:
    """``qemu-img convert -O luks`` as Nova and Cinder call it, retried (its calibration flakes)."""
    errors = []
    for _ in range(QEMU_CREATE_ATTEMPTS):
        proc = run("qemu-img", "convert", "-f", "raw", "-O", "luks", "--object",
                   secret(pass_path), "-o", "key-secret=s,cipher-alg=aes-256,cipher-mode=xts,"
                   "ivgen-alg=plain64,hash-alg=sha256,iter-time=10", str(plain), str(out),
                   check=False)
        if proc.returncode == 0:
            return
        errors.append(proc.stderr.decode().strip())
    pytest.fail(f"qemu-img convert -O luks failed {QEMU_CREATE_ATTEMPTS} times: {errors}")


def cryptsetup_format(image: Path, pass_path: Path, payload: Path) -> None:
    """A LUKS1 file made by ``cryptsetup luksFormat`` (no device mapper needed), its payload
    written through qemu-img's luks driver (``convert -n`` into the existing container)."""
    size = payload.stat().st_size
    with image.open("wb") as f:
        f.truncate(2 * 1024 * 1024 + size)  # cryptsetup's payload offset for a 512-bit key
    run("cryptsetup", "luksFormat", "-q", "--type", "luks1", "--cipher", "aes-xts-plain64",
        "--key-size", "512", "--hash", "sha256", "--pbkdf-force-iterations", "1000",
        "--key-file=-", str(image), stdin=pass_path.read_bytes())
    run("qemu-img", "convert", "-n", "-f", "raw", str(payload), "--object", secret(pass_path),
        "--target-image-opts", f"driver=luks,key-secret=s,file.filename={image}")


def qcow2_header(virtual_size: int, version: int = 3) -> bytes:
    """The first 104 bytes of a qcow2 image (no tables): enough to claim a virtual size."""
    return (b"QFI\xfb" + version.to_bytes(4, "big") + bytes(16)
            + virtual_size.to_bytes(8, "big") + bytes(72))


def qcow2_claiming(path: Path, virtual_size: int) -> bytes:
    """A real, empty qcow2 of ``virtual_size`` bytes made by ``qemu-img create`` (a few KiB)."""
    run("qemu-img", "create", "-f", "qcow2", str(path), str(virtual_size))
    return path.read_bytes()

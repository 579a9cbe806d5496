"""The commands bench/run.py times: img-crypt (command and library), its peers, the ceilings.

A :class:`Tool` turns (source, destination) into the argv of one encryption or decryption;
``prepare`` makes its keys once in the work directory (untimed), ``missing`` says why it cannot
run here (the harness then reports it as SKIPPED), ``close`` stops what ``prepare`` started.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from _child import spawn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINK_DRIVER = HERE / "tink_driver.py"
CLI = "from img_crypt.cli import run; run()"

# A child that times only the envelope call, as the Glance plugin makes it: file objects in,
# KEK bytes fetched before the clock starts, THREADS workers ("default": the usable cores).
# Prints "ENGINE <seconds>".
LIBRARY = """\
import sys, time
from img_crypt import _payload_parallel, envelope
from img_crypt.keys.local import LocalKeyStore
op, src, dst, kek_id, threads = sys.argv[1:6]
workers = None if threads == "default" else (
    _payload_parallel.default_threads() if threads == "auto" else int(threads))
store = LocalKeyStore()
key = store.get_key(kek_id)
lookup = lambda kind, key_id: key if (kind, key_id) == (store.kind, kek_id) else None
with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
    start = time.perf_counter()
    if op == "encrypt":
        envelope.encrypt(fin, fout, [envelope.Kek(store.kind, kek_id, key)], threads=workers)
    elif op == "decrypt":
        envelope.decrypt(fin, fout, lookup, threads=workers)
    else:
        first, last = map(int, sys.argv[6:8])
        envelope.decrypt_range(fin, fout, lookup, first, last)
    elapsed = time.perf_counter() - start
print("ENGINE", elapsed)
"""


def first_line(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


class Tool(abc.ABC):
    """One encryption tool; subclasses fill in the commands."""

    name = "?"
    slug = "?"
    engine = False  # True: the child prints "ENGINE <s>", the time reported instead of wall

    def missing(self) -> str | None:
        """Why this tool cannot run here (None: it can)."""
        return None

    def version(self) -> str:
        """The version string shown in the results."""
        return "?"

    def prepare(self, work: Path, env: dict[str, str]) -> None:
        """Make keys in ``work`` (untimed); by default there is nothing to make."""
        return None

    @abc.abstractmethod
    def encrypt(self, src: str, dst: str) -> list[str]:
        """The argv encrypting ``src`` into ``dst``."""

    @abc.abstractmethod
    def decrypt(self, src: str, dst: str) -> list[str]:
        """The argv decrypting ``src`` into ``dst``."""

    def decrypt_range(self, src: str, dst: str, start: int, end: int) -> list[str] | None:
        """The argv decrypting plaintext bytes [start, end) of ``src``; None if unsupported."""
        return None

    def startup(self) -> list[str] | None:
        """The argv of the tool doing nothing but start (``--version``); None: not timed."""
        return None

    def close(self) -> None:
        """Stop whatever ``prepare`` started; by default nothing."""
        return None


class ImgCrypt(Tool):
    """``img-crypt encrypt|decrypt`` as users run it: interpreter start-up included."""

    name = "img-crypt"
    slug = "imgcrypt"

    def __init__(self) -> None:
        self.kek = ""

    def version(self) -> str:
        return metadata.version("img-crypt")

    def prepare(self, work: Path, env: dict[str, str]) -> None:
        # Byte-compile the package first, as pip does on install: with PYTHONDONTWRITEBYTECODE
        # set (as on the benchmark machine) every command would otherwise compile img_crypt's
        # modules from source at start-up, a cost no installed img-crypt pays.
        spawn([sys.executable, "-m", "compileall", "-q", str(REPO / "img_crypt")], env)
        created = spawn([sys.executable, "-c", CLI, "keys", "create", "--name", "bench-run"], env)
        self.kek = created.output.splitlines()[-1].strip()

    def encrypt(self, src: str, dst: str) -> list[str]:
        return [sys.executable, "-c", CLI, "encrypt", src, dst, "--kek", self.kek]

    def decrypt(self, src: str, dst: str) -> list[str]:
        return [sys.executable, "-c", CLI, "decrypt", src, dst]

    def decrypt_range(self, src: str, dst: str, start: int, end: int) -> list[str] | None:
        return [sys.executable, "-c", CLI, "decrypt", src, dst, "--range", f"{start}:{end}"]

    def startup(self) -> list[str] | None:
        return [sys.executable, "-c", CLI, "--version"]


class ImgCryptLibrary(ImgCrypt):
    """``img_crypt.envelope`` called in a child; only the call is timed (no start-up)."""

    name = "img-crypt (library, as the Glance plugin uses it)"
    slug = "imgcryptlib"
    engine = True
    threads = "default"

    def encrypt(self, src: str, dst: str) -> list[str]:
        return [sys.executable, "-c", LIBRARY, "encrypt", src, dst, self.kek, self.threads]

    def decrypt(self, src: str, dst: str) -> list[str]:
        return [sys.executable, "-c", LIBRARY, "decrypt", src, dst, self.kek, self.threads]

    def decrypt_range(self, src: str, dst: str, start: int, end: int) -> list[str] | None:
        return [sys.executable, "-c", LIBRARY, "range", src, dst, self.kek, self.threads,
                str(start), str(end)]

    def startup(self) -> list[str] | None:
        return None  # only the call is timed: there is no start-up to subtract


class ImgCryptLibraryPool(ImgCryptLibrary):
    """The library on the chunk-parallel pool (``threads`` = the usable cores, at most 8, as
    ``--threads auto``): its speed over the default one thread's is the parallel efficiency."""

    name = "img-crypt (library, --threads auto)"
    slug = "imgcryptlibn"
    threads = "auto"

    def decrypt_range(self, src: str, dst: str, start: int, end: int) -> list[str] | None:
        return None  # a range reads a few chunks: threads change nothing


class Tink(Tool):
    """Tink's streaming AEAD, AES256_GCM_HKDF_1MB, through bench/tink_driver.py."""

    name = "tink"
    slug = "tink"

    def __init__(self) -> None:
        self.keyset = ""

    def missing(self) -> str | None:
        return None if importlib.util.find_spec("tink") else "tink not installed"

    def version(self) -> str:
        return f"{metadata.version('tink')} (Python, AES256_GCM_HKDF_1MB)"

    def prepare(self, work: Path, env: dict[str, str]) -> None:
        self.keyset = str(work / "tink-keyset.json")
        spawn([sys.executable, str(TINK_DRIVER), "keygen", self.keyset], env)

    def encrypt(self, src: str, dst: str) -> list[str]:
        return [sys.executable, str(TINK_DRIVER), "encrypt", self.keyset, src, dst]

    def decrypt(self, src: str, dst: str) -> list[str]:
        return [sys.executable, str(TINK_DRIVER), "decrypt", self.keyset, src, dst]


class Age(Tool):
    """age with an X25519 identity made by age-keygen (``-p`` would need a terminal)."""

    name = "age"
    slug = "age"

    def __init__(self) -> None:
        self.identity = ""
        self.recipient = ""

    def missing(self) -> str | None:
        found = shutil.which("age") and shutil.which("age-keygen")
        return None if found else "age not installed"

    def version(self) -> str:
        return first_line(["age", "--version"])

    def prepare(self, work: Path, env: dict[str, str]) -> None:
        identity = work / "age-key.txt"
        identity.unlink(missing_ok=True)
        subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
        self.identity = str(identity)
        self.recipient = first_line(["age-keygen", "-y", self.identity])

    def encrypt(self, src: str, dst: str) -> list[str]:
        return ["age", "-r", self.recipient, "-o", dst, src]

    def decrypt(self, src: str, dst: str) -> list[str]:
        return ["age", "-d", "-i", self.identity, "-o", dst, src]


class Gpg(Tool):
    """``gpg --symmetric --cipher-algo AES256 --compress-algo none`` in a private home."""

    name = "gpg"
    slug = "gpg"

    def __init__(self) -> None:
        self.base: list[str] = []
        self.home: Path | None = None

    def missing(self) -> str | None:
        return None if shutil.which("gpg") else "gpg not installed"

    def version(self) -> str:
        return first_line(["gpg", "--version"]).removeprefix("gpg (GnuPG) ")

    def prepare(self, work: Path, env: dict[str, str]) -> None:
        self.home = work / "gnupg"
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(mode=0o700)
        passphrase = work / "gpg-passphrase"
        passphrase.write_text(secrets.token_hex(16) + "\n")
        self.base = ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--quiet",
                     "--pinentry-mode", "loopback", "--passphrase-file", str(passphrase),
                     "--no-symkey-cache"]
        warm = work / "gpg-warm-up"  # starts gpg-agent, outside any timing
        warm.write_bytes(b"x")
        spawn(self.encrypt(str(warm), os.devnull), env)
        warm.unlink()

    def encrypt(self, src: str, dst: str) -> list[str]:
        return [*self.base, "--symmetric", "--cipher-algo", "AES256", "--compress-algo", "none",
                "-o", dst, src]

    def decrypt(self, src: str, dst: str) -> list[str]:
        return [*self.base, "-d", "-o", dst, src]

    def close(self) -> None:
        if self.home is not None and shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                           capture_output=True, check=False)


def crypto_tools() -> list[Tool]:
    """Every encryption tool, in the order each run times them."""
    return [ImgCrypt(), ImgCryptLibrary(), ImgCryptLibraryPool(), Tink(), Age(), Gpg()]


# --- the ceilings ----------------------------------------------------------------------------


def openssl_version() -> str | None:
    """``3.0.19`` (from ``OpenSSL 3.0.19 27 Jan 2026``), None without an openssl command."""
    if not shutil.which("openssl"):
        return None
    return (first_line(["openssl", "version"]).split()[1:2] or ["?"])[0]


def parse_openssl_speed(text: str, block: int) -> float:
    """GB/s of the ``aes-256-gcm`` line at ``block`` bytes in ``openssl speed`` output.

    The table gives 1000s of bytes per second: ``type 16384 bytes`` then
    ``AES-256-GCM 4209815.28k``, one column per block size.
    """
    sizes: list[int] = []
    for line in text.splitlines():
        if line.startswith("type"):
            sizes = [int(n) for n in re.findall(r"(\d+) bytes", line)]
        elif line.lower().startswith("aes-256-gcm") and sizes:
            values = [float(v) for v in re.findall(r"([\d.]+)k", line)]
            if block in sizes and len(values) == len(sizes):
                return values[sizes.index(block)] * 1000 / 1e9
    raise ValueError(f"no aes-256-gcm figure for {block}-byte blocks in: {text[-1000:]!r}")


def openssl_speed(block: int, seconds: int) -> float:
    """``openssl speed -evp aes-256-gcm -bytes BLOCK -seconds S``: GB/s on one core."""
    argv = ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", str(block),
            "-seconds", str(seconds)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return parse_openssl_speed(proc.stdout, block)


# In-memory AES-256-GCM of the OpenSSL that cryptography bundles (the one img-crypt runs on; it
# can be newer and faster than the system's `openssl`). Prints GB/s.
AESGCM_SPEED = """\
import os, sys, time
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
block, seconds = int(sys.argv[1]), float(sys.argv[2])
aead, nonce, data = AESGCM(AESGCM.generate_key(256)), os.urandom(12), os.urandom(block)
done, start = 0, time.perf_counter()
while (elapsed := time.perf_counter() - start) < seconds:
    for _ in range(64):
        aead.encrypt(nonce, data, None)
    done += 64 * block
print(done / elapsed / 1e9)
"""


def aesgcm_speed(block: int, seconds: float) -> float:
    """GB/s of ``AESGCM.encrypt`` on ``block``-byte messages, one core, in a child process."""
    proc = subprocess.run([sys.executable, "-c", AESGCM_SPEED, str(block), str(seconds)],
                          capture_output=True, text=True, check=True)
    return float(proc.stdout.split()[-1])


def bundled_openssl_version() -> str:
    """The OpenSSL version cryptography was built with (``OpenSSL 4.0.3 29 Sep 2026``)."""
    from cryptography.hazmat.backends.openssl.backend import backend

    return str(backend.openssl_version_text())


def copy_argv(src: str, dst: str) -> list[str]:
    """``cp`` of the input (a real copy: no reflink)."""
    return ["cp", "--reflink=never", src, dst] if sys.platform == "linux" else ["cp", src, dst]


def read_argv(src: str) -> list[str]:
    """``cat IN`` (stdout to /dev/null): the read ceiling."""
    return ["cat", src]

"""Timed child processes (wall clock, peak RSS from ``os.wait4``) and the input files.

Every measured command is started by ``subprocess`` through a minimal launcher,
``python -S -I -c LAUNCHER``, which ``posix_spawn``s it, reaps it with ``os.wait4`` and prints
its ``ru_maxrss``, exit code and wall time. The launcher exists because on Linux a child's
``ru_maxrss`` is never below the RSS high-water mark of the address space it was spawned from
(see bench/README.md, "How peak memory is measured"): the launcher's (about 8.5 MiB, reported
as ``floor_mib``) is the floor under every number, not this script's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20

# python -S -I -c LAUNCHER STDOUT EXE ARGS...: STDOUT is a path for the child's stdout, or "-"
# for the launcher's stderr (captured). Prints: ru_maxrss, exit code, wall s, own VmHWM (KiB).
LAUNCHER = """\
import os, sys, time
out = sys.argv[1]
if out == "-":
    actions = [(os.POSIX_SPAWN_DUP2, 2, 1)]
else:
    actions = [(os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
try:
    with open("/proc/self/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    hwm = "-"
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status), wall, hwm)
"""


class BenchError(Exception):
    """A child failed or produced wrong output: that measurement is void."""


@dataclass(frozen=True)
class Child:
    """What the launcher reports about one child."""

    wall_s: float
    peak_rss_mib: float
    output: str
    floor_mib: float | None


def _maxrss_mib(ru_maxrss: int) -> float:
    """``ru_maxrss`` in MiB: KiB on Linux, bytes on macOS."""
    return ru_maxrss / MIB if sys.platform == "darwin" else ru_maxrss / 1024


def spawn(argv: Sequence[str], env: Mapping[str, str], stdout: str | None = None) -> Child:
    """Run ``argv`` (``argv[0]`` looked up on PATH) through the launcher; raise if it fails."""
    exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    if exe is None:
        raise BenchError(f"{argv[0]}: command not found")
    with tempfile.TemporaryFile() as result, tempfile.TemporaryFile() as out:
        code = subprocess.call([sys.executable, "-S", "-I", "-c", LAUNCHER, stdout or "-", exe,
                                *argv[1:]], stdin=subprocess.DEVNULL, stdout=result,
                               stderr=out, env=dict(env))
        result.seek(0)
        out.seek(0)
        fields = result.read().decode(errors="replace").split()
        text = out.read().decode(errors="replace").strip()
    if code != 0 or len(fields) != 4:
        raise BenchError(f"the launcher failed ({code}) for {' '.join(argv)}: {text[-2000:]}")
    maxrss, status, wall, hwm = fields
    if int(status) != 0:
        raise BenchError(f"{' '.join(argv)} exited with {status}: {text[-2000:]}")
    return Child(float(wall), _maxrss_mib(int(maxrss)), text,
                 None if hwm == "-" else int(hwm) / 1024)


def make_input(path: Path, size_mib: int) -> str:
    """Write ``size_mib`` MiB of random 1 MiB blocks to ``path``; return its SHA-256.

    An input left by an earlier ``--keep`` run (same size, with its ``.sha256`` file) is reused.
    """
    stamp = path.with_name(path.name + ".sha256")
    if path.exists() and stamp.exists() and path.stat().st_size == size_mib * MIB:
        return stamp.read_text().strip()
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            digest.update(block)
            f.write(block)
    stamp.write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


def sha256_file(path: Path, start: int = 0, length: int | None = None) -> str:
    """SHA-256 of a file (or of ``length`` bytes from ``start``), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    left = path.stat().st_size - start if length is None else length
    with path.open("rb") as f:
        f.seek(start)
        while left > 0 and (block := f.read(min(MIB, left))):
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sizes_arg(text: str) -> list[int]:
    """Parse ``256,2048`` (a command-line type) into sorted, distinct positive sizes."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of MiB sizes: {text!r}") from None
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive: {text!r}")
    return sizes

"""Peak memory (and, for information, wall time and throughput) of ``img-crypt`` on large files.

Method: for every input size and every run, each operation runs as its own child process
(``python -c "from img_crypt.cli import run; run()" ...``) and its peak resident set size is
the ``ru_maxrss`` of the rusage ``os.wait4`` returns when it is reaped (KiB on Linux, bytes on
macOS); its wall time is measured around spawn and reap.

Why a launcher: on Linux a process's ``ru_maxrss`` starts at the RSS high-water mark of the
process it was spawned from (``execve`` folds the old address space's peak into it, and with
``vfork``, as ``subprocess`` uses, that is the parent's), so a child of this script could never
report less than this script's own peak. Each child is therefore started with
``subprocess.Popen`` through a minimal launcher, ``python -S -I -c LAUNCHER``, which
``posix_spawn``s the measured child, reaps it with ``os.wait4`` and prints its ``ru_maxrss``,
exit code and wall time, plus the launcher's own ``VmHWM`` (the floor under every number,
about 8.5 MiB, reported as ``launcher_rss_mib``). The operations are:

- ``baseline``: a child that only imports ``img_crypt.cli`` and exits (the interpreter's own RSS);
- ``imports``: a child that imports ``img_crypt.cli.commands`` (everything encrypt and decrypt
  import: cryptography, pydantic, ...) and exits, to separate import cost from streaming;
- ``encrypt file`` / ``encrypt null``: encrypt the input to a file / to ``/dev/null``;
- ``decrypt file`` / ``decrypt null``: decrypt that ciphertext to a file / to ``/dev/null``.

Inputs are written in 1 MiB blocks of ``os.urandom`` (never held in memory), and hashed
with SHA-256 as they are written; every decrypted file is hashed (streaming) and compared, and
any non-zero exit code aborts the benchmark, so a failing run is never measured. The key store
is private to the work directory (``IMG_CRYPT_KEY_STORE``) and holds one KEK made once with
``keys create``. Medians per (operation, size) are printed as a Markdown table, followed by
PASS/MISS lines for the targets: (1) every encrypt/decrypt of the largest size peaks under
64 MiB RSS; (2) the median peak RSS of each operation grows by less than 8 MiB from the
smallest to the largest size. A MISS still exits 0 (a benchmark reports); errors exit 1.

Usage: ``python bench/memory.py [--sizes-mib 256,1024] [--runs 3] [--workdir DIR]
[--json FILE] [--keep] [--smoke]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from _child import BenchError, Child, make_input, sha256_file, sizes_arg, spawn

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = Path(__file__).resolve().parent / "work"
CLI = "from img_crypt.cli import run; run()"
BASELINE = "import img_crypt.cli"
IMPORTS = "import img_crypt.cli.commands"
RSS_LIMIT_MIB = 64.0
GROWTH_LIMIT_MIB = 8.0
CRYPT_OPS = ("encrypt file", "encrypt null", "decrypt file", "decrypt null")
OPS = ("baseline", "imports", *CRYPT_OPS)
SMOKE_SIZES = (1, 3)

@dataclass(frozen=True)
class Measurement:
    """One child: operation, input size, run number, peak RSS, wall time, launcher VmHWM."""

    op: str
    size_mib: int
    run: int
    peak_rss_mib: float
    wall_s: float
    launcher_rss_mib: float | None


@dataclass(frozen=True)
class Workspace:
    """The work directory, the children's environment and the KEK id."""

    root: Path
    env: dict[str, str]
    kek: str


# --- children -----------------------------------------------------------------------------


def cli(ws: Workspace, *args: str | Path) -> Child:
    """Run ``img-crypt *args`` as a child process."""
    return spawn([sys.executable, "-c", CLI, *map(str, args)], ws.env)


# --- files --------------------------------------------------------------------------------


def setup(root: Path) -> Workspace:
    """Create the work directory and an isolated key store holding one KEK."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["IMG_CRYPT_KEY_STORE"] = str(root / "keys")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    created = cli(Workspace(root, env, ""), "keys", "create", "--name", "bench-memory")
    return Workspace(root, env, created.output.splitlines()[-1].strip())


def cleanup(root: Path, sizes: Sequence[int]) -> None:
    """Remove the inputs, outputs and key store this benchmark made."""
    for size in sizes:
        for suffix in ("bin", "bin.sha256", "icr", "dec"):
            (root / f"{size}MiB.{suffix}").unlink(missing_ok=True)
    shutil.rmtree(root / "keys", ignore_errors=True)


# --- measuring ----------------------------------------------------------------------------


def measure_once(ws: Workspace, size: int, run: int, expected: str) -> list[Measurement]:
    """One run of every operation on the ``size`` MiB input."""
    src, enc, dec = (ws.root / f"{size}MiB.{s}" for s in ("bin", "icr", "dec"))
    enc.unlink(missing_ok=True)
    dec.unlink(missing_ok=True)
    steps: dict[str, Child] = {}
    steps["baseline"] = spawn([sys.executable, "-c", BASELINE], ws.env)
    steps["imports"] = spawn([sys.executable, "-c", IMPORTS], ws.env)
    steps["encrypt file"] = cli(ws, "encrypt", src, enc, "--kek", ws.kek)
    steps["encrypt null"] = cli(ws, "encrypt", src, os.devnull, "--kek", ws.kek)
    steps["decrypt file"] = cli(ws, "decrypt", enc, dec)
    if sha256_file(dec) != expected:
        raise BenchError(f"decrypting {enc} did not give back {src}")
    steps["decrypt null"] = cli(ws, "decrypt", enc, os.devnull)
    return [Measurement(op, size, run, round(c.peak_rss_mib, 2), round(c.wall_s, 3),
                        None if c.floor_mib is None else round(c.floor_mib, 2))
            for op, c in steps.items()]


def measure(ws: Workspace, sizes: Sequence[int], runs: int) -> list[Measurement]:
    """Every run of every operation on every size; progress on stderr."""
    results: list[Measurement] = []
    for size in sizes:
        expected = make_input(ws.root / f"{size}MiB.bin", size)
        for run in range(1, runs + 1):
            once = measure_once(ws, size, run, expected)
            line = ", ".join(f"{m.op} {m.peak_rss_mib:.1f} MiB {m.wall_s:.2f} s" for m in once)
            print(f"# {size} MiB run {run}/{runs}: {line}", file=sys.stderr, flush=True)
            results.extend(once)
    return results


# --- reporting ----------------------------------------------------------------------------


def medians(results: Sequence[Measurement], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Median peak RSS, wall time and throughput per (operation, size)."""
    rows: list[dict[str, Any]] = []
    for op in OPS:
        for size in sizes:
            runs = [m for m in results if m.op == op and m.size_mib == size]
            wall = statistics.median(m.wall_s for m in runs)
            rows.append({
                "op": op, "size_mib": size,
                "peak_rss_mib": round(statistics.median(m.peak_rss_mib for m in runs), 2),
                "wall_s": round(wall, 3),
                "throughput_mib_s": round(size / wall, 1) if op in CRYPT_OPS else None,
            })
    return rows


def targets(results: Sequence[Measurement], rows: Sequence[dict[str, Any]],
            sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The two targets, each with its measured value and PASS/MISS."""
    small, large = min(sizes), max(sizes)
    peak = max(m.peak_rss_mib for m in results if m.op in CRYPT_OPS and m.size_mib == large)
    median = {(r["op"], r["size_mib"]): r["peak_rss_mib"] for r in rows}
    growth = max(median[op, large] - median[op, small] for op in CRYPT_OPS)
    return [
        {"name": f"peak RSS of every encrypt/decrypt of {large} MiB",
         "limit_mib": RSS_LIMIT_MIB, "value_mib": peak,
         "result": "PASS" if peak < RSS_LIMIT_MIB else "MISS"},
        {"name": f"median peak RSS growth from {small} MiB to {large} MiB (worst operation)",
         "limit_mib": GROWTH_LIMIT_MIB, "value_mib": round(growth, 2),
         "result": "PASS" if growth < GROWTH_LIMIT_MIB else "MISS"},
    ]


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "cryptography": metadata.version("cryptography"),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The medians as a Markdown table."""
    lines = ["| operation | size (MiB) | peak RSS (MiB) | wall (s) | throughput (MiB/s) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        speed = "-" if r["throughput_mib_s"] is None else f"{r['throughput_mib_s']:.1f}"
        lines.append(f"| {r['op']} | {r['size_mib']} | {r['peak_rss_mib']:.1f} "
                     f"| {r['wall_s']:.2f} | {speed} |")
    return "\n".join(lines)


def report(results: Sequence[Measurement], sizes: Sequence[int], runs: int) -> dict[str, Any]:
    """Everything the JSON file holds."""
    rows = medians(results, sizes)
    floors = [m.launcher_rss_mib for m in results if m.launcher_rss_mib is not None]
    return {
        "machine": machine(),
        "method": "child ru_maxrss from os.wait4 in a python -S -I launcher (posix_spawn)",
        "launcher_rss_mib": max(floors) if floors else None,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes_mib": list(sizes),
        "runs": runs,
        "measurements": [asdict(m) for m in results],
        "medians": rows,
        "targets": targets(results, rows, sizes),
    }


def show(result: dict[str, Any]) -> None:
    """Print the machine line, the table and the PASS/MISS lines."""
    m = result["machine"]
    print(f"machine: {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}, "
          f"cryptography {m['cryptography']}; {result['runs']} run(s), medians, "
          f"{result['date_utc']}")
    if result["launcher_rss_mib"] is not None:
        print(f"launcher (the floor under every RSS number): {result['launcher_rss_mib']:.1f} MiB")
    print()
    print(table(result["medians"]))
    print()
    for t in result["targets"]:
        print(f"{t['result']}: {t['name']}: {t['value_mib']:.1f} MiB "
              f"(target < {t['limit_mib']:.0f} MiB)")


# --- command line -------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line arguments, with --smoke defaults applied."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes-mib", type=sizes_arg, help="input sizes in MiB (default 256,1024)")
    p.add_argument("--runs", type=int, help="runs per size and operation (default 3)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"where inputs and the key store go (default {DEFAULT_WORKDIR})")
    p.add_argument("--json", type=Path, help="write the full result to this file")
    p.add_argument("--keep", action="store_true", help="keep the key store and any files left")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (1,3 MiB) and one run")
    args = p.parse_args(argv)
    if args.sizes_mib is None:
        args.sizes_mib = list(SMOKE_SIZES) if args.smoke else [256, 1024]
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it measured (PASS or MISS), 1 on any error."""
    args = parse(argv)
    try:
        try:
            results = measure(setup(args.workdir), args.sizes_mib, args.runs)
        finally:
            if not args.keep:
                cleanup(args.workdir, args.sizes_mib)
        result = report(results, args.sizes_mib, args.runs)
        show(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    except (BenchError, OSError) as e:
        print(f"memory.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``luks`` section of the benchmark, runnable alone: ``scripts/bench.sh --only luks``.

For every run and input size, in this order (interleaved, so drift on a shared machine hits
each alike): ``cp`` of the input; ``img-crypt encrypt --format luks IN OUT --kek ID`` (local
key store, interpreter start-up included); ``qemu-img convert -f raw -O luks`` of the same
file as Nova and Cinder call it (aes-256 xts plain64 sha256, ``iter-time=10``, the secret from
a 0600 file), retried when its PBKDF calibration fails ("Unable to get accurate CPU usage"),
each failure counted. Every command is a child through bench/_child.py (wall time, peak
RSS); outputs are checked (LUKS magic, size), untimed. Then, unless ``--no-glance``, a real
Barbican and three real Glance servers (no plugin, ``format = img-crypt-v1``, ``format =
luks``) time a glance-direct import of every input size (bench/_glance.py).

Writes ``results-luks.json`` and ``results-luks.md`` into ``--out-dir`` and prints the tables.
Exit code 0 when it measured, 1 on an error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _glance
import _tools
from _child import MIB, BenchError, Child, make_input, sizes_arg, spawn

HERE = Path(__file__).resolve().parent
SIZES, SMOKE_SIZES = [256, 1024], [1]
CLI = [sys.executable, "-c", _tools.CLI]
QEMU_OPTIONS = ("key-secret=s,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,"
                "hash-alg=sha256,iter-time=10")
QEMU_FLAKE = "Unable to get accurate CPU usage"
QEMU_ATTEMPTS = 10
LUKS_MAGIC = _glance.MAGICS["luks"]
OUR_HEADER = 2 * MIB  # our payload offset; qemu-img's is smaller
GLANCE_KINDS = {"no plugin": None, "img-crypt-v1": "img-crypt-v1", "luks": "luks"}
Row = dict[str, Any]


def log(line: str) -> None:
    """Progress, on stderr."""
    print(f"# {line}", file=sys.stderr, flush=True)


def qemu_luks(src: Path, dst: Path, secret: Path, env: dict[str, str]) -> tuple[Child, int]:
    """``qemu-img convert -O luks``, retried on its calibration failure; (child, failures)."""
    failures = 0
    for _ in range(QEMU_ATTEMPTS):
        dst.unlink(missing_ok=True)
        try:
            return spawn(["qemu-img", "convert", "-f", "raw", "-O", "luks", "--object",
                          f"secret,id=s,file={secret}", "-o", QEMU_OPTIONS, str(src),
                          str(dst)], env), failures
        except BenchError as e:
            if QEMU_FLAKE not in str(e):
                raise
            failures += 1
    raise BenchError(f"qemu-img convert -O luks failed {QEMU_ATTEMPTS} times: {QEMU_FLAKE}")


def check_luks(path: Path, size: int, exact: bool) -> None:
    """A LUKS container of the input (untimed): magic, and our exact size when ``exact``."""
    with path.open("rb") as f:
        head = f.read(len(LUKS_MAGIC))
    actual = path.stat().st_size
    if head != LUKS_MAGIC or actual < size * MIB or (exact and actual != size * MIB + OUR_HEADER):
        raise BenchError(f"{path.name} is not a LUKS container of {size} MiB ({actual} bytes)")


def cpu_s() -> float:
    """User + system CPU seconds of every child reaped so far (the launchers and, through
    them, the measured commands): on this shared 2-core VM a fairer number than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def row(tool: str, size: int, run: int, child: Child, cpu: float, **extra: Any) -> Row:
    return {"tool": tool, "size_mib": size, "run": run, "wall_s": round(child.wall_s, 4),
            "cpu_s": round(cpu, 4), "peak_rss_mib": round(child.peak_rss_mib, 1), **extra}


def writers(args: argparse.Namespace, inputs: dict[int, Path], env: dict[str, str]) -> list[Row]:
    """cp, img-crypt --format luks, qemu-img -O luks: every size, every run."""
    work: Path = args.workdir
    kek = spawn([*CLI, "keys", "create", "--name", "bench-luks"], env).output.split()[-1]
    secret = work / "luks-secret"
    secret.touch(mode=0o600)
    secret.write_text(os.urandom(32).hex())  # as Nova/Cinder write a hex passphrase
    out, rows = work / "luks-out", []
    try:
        for run in range(1, args.runs + 1):
            for size, src in inputs.items():
                for name, argv in (("cp", _tools.copy_argv(str(src), str(out))),
                                   ("img-crypt --format luks",
                                    [*CLI, "encrypt", "--format", "luks", str(src), str(out),
                                     "--kek", kek])):
                    out.unlink(missing_ok=True)
                    os.sync()
                    cpu = cpu_s()
                    child = spawn(argv, env)
                    rows.append(row(name, size, run, child, cpu_s() - cpu))
                    if name != "cp":
                        check_luks(out, size, exact=True)
                os.sync()
                began, cpu = time.perf_counter(), cpu_s()
                child, failures = qemu_luks(src, out, secret, env)
                rows.append(row("qemu-img -O luks", size, run, child, cpu_s() - cpu,
                                failures=failures,
                                with_retries_s=round(time.perf_counter() - began, 4)))
                check_luks(out, size, exact=False)
                log(f"run {run}/{args.runs}, {size} MiB: " + ", ".join(
                    f"{r['tool']} {r['wall_s']:.2f} s" for r in rows[-3:])
                    + f" ({failures} qemu-img failures)")
    finally:
        out.unlink(missing_ok=True)
        secret.unlink(missing_ok=True)
    return rows


def medians(rows: list[Row], key: str, value: str) -> dict[tuple[str, int], float]:
    groups: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r[key], r["size_mib"]), []).append(r[value])
    return {k: statistics.median(v) for k, v in groups.items()}


LUKS_IMPORT_LIMIT = 1.3
"""Issue 15: the luks import at most this many times the import without the plugin."""


def markdown(result: Row) -> str:
    """The tables of results-luks.md."""
    rows, sizes = result["writers"], result["sizes_mib"]
    wall, rss = medians(rows, "tool", "wall_s"), medians(rows, "tool", "peak_rss_mib")
    cpu = medians(rows, "tool", "cpu_s")
    qemu = [r for r in rows if r["tool"] == "qemu-img -O luks"]
    failures = sum(r["failures"] for r in qemu)
    out = [f"# LUKS1 output ({result['date_utc']}, {result['machine']}, "
           f"{result['runs']} run(s); medians)", "",
           "| tool | size (MiB) | wall (s) | CPU user+sys (s) | MiB/s (wall) | peak RSS (MiB) |",
           "|---|---|---|---|---|---|"]
    for (tool, size), seconds in sorted(wall.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append(f"| {tool} | {size} | {seconds:.2f} | {cpu[(tool, size)]:.2f} | "
                   f"{size / seconds:.0f} | {rss[(tool, size)]:.1f} |")
    out += ["", f"qemu-img -O luks: {failures} calibration failure(s) in "
                f"{failures + len(qemu)} attempts ({QEMU_FLAKE!r}); wall with retries, median: "
                + ", ".join(f"{s} MiB {statistics.median(r['with_retries_s'] for r in qemu if r['size_mib'] == s):.2f} s"  # noqa: E501
                            for s in sizes)]
    g = result["glance"]
    if "imports" in g:
        times = medians(g["imports"], "kind", "seconds")
        out += ["", f"## Glance {g['glance']} glance-direct import (Barbican {g['barbican']})",
                "", "| size (MiB) | " + " | ".join(GLANCE_KINDS) + " | luks / no plugin |",
                "|---|" + "---|" * (len(GLANCE_KINDS) + 1)]
        for size in sizes:
            cells = [times[(kind, size)] for kind in GLANCE_KINDS]
            out.append(f"| {size} | " + " | ".join(f"{c:.2f} s" for c in cells)
                       + f" | {cells[2] / cells[0]:.2f} |")
        out += ["", f"Target (issue 15): the luks import within {LUKS_IMPORT_LIMIT}x of the "
                    "import without the plugin: " + ", ".join(
                        f"{size} MiB {'PASS' if ratio <= LUKS_IMPORT_LIMIT else 'MISS'} "
                        f"({ratio:.2f}x)" for size in sizes
                        for ratio in [times[("luks", size)] / times[("no plugin", size)]])]
    else:
        out += ["", f"Glance: {g.get('skipped')}"]
    return "\n".join(out) + "\n"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes-mib", type=sizes_arg, help="input sizes (default 256,1024)")
    p.add_argument("--runs", type=int, help="runs (default 3)")
    p.add_argument("--workdir", type=Path, help="inputs and outputs (default bench/work/)")
    p.add_argument("--out-dir", type=Path, help="results-luks.json/.md (default bench/)")
    p.add_argument("--smoke", action="store_true",
                   help="1 MiB, 1 run, no Glance, a temporary work and output directory")
    p.add_argument("--no-glance", action="store_true", help="skip the Glance imports")
    args = p.parse_args(argv)
    args.sizes_mib = args.sizes_mib or (SMOKE_SIZES if args.smoke else SIZES)
    args.runs = args.runs or (1 if args.smoke else 3)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.glance = not (args.no_glance or args.smoke)
    args.temp = args.workdir is None and args.smoke
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="img-crypt-bench-luks-")) if args.smoke \
            else HERE / "work"
    if args.out_dir is None:
        args.out_dir = args.workdir if args.smoke else HERE
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, write results-luks.json/.md, print the tables; 0 when it measured."""
    args = parse(argv)
    env = dict(os.environ)
    env["IMG_CRYPT_KEY_STORE"] = str(args.workdir / "luks-keys")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH"))
                                        if p)
    result: Row = {"date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                   "machine": f"{os.cpu_count()} cores, {platform.platform()}",
                   "qemu-img": _tools.first_line(["qemu-img", "--version"]),
                   "sizes_mib": args.sizes_mib, "runs": args.runs, "writers": [],
                   "glance": {"skipped": "not requested (--no-glance or --smoke)"}}
    inputs: dict[int, Path] = {}
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for size in args.sizes_mib:
                inputs[size] = args.workdir / f"{size}MiB.bin"
                make_input(inputs[size], size)
            result["writers"] = writers(args, inputs, env)
            if args.glance:
                warm_up = args.workdir / "luks-warm-up.bin"
                make_input(warm_up, 1)
                log("Glance: starting Barbican and three Glance servers")
                result["glance"] = _glance.measure_formats(inputs, warm_up, args.runs,
                                                           GLANCE_KINDS, log)
        finally:
            shutil.rmtree(args.workdir / "luks-keys", ignore_errors=True)
            for path in [*inputs.values(), args.workdir / "luks-warm-up.bin"]:
                for name in (path, path.with_name(path.name + ".sha256")):
                    name.unlink(missing_ok=True)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "results-luks.json").write_text(json.dumps(result, indent=2) + "\n")
        text = markdown(result)
        (args.out_dir / "results-luks.md").write_text(text)
    except (BenchError, OSError, RuntimeError, TimeoutError) as e:
        print(f"luks.py: error: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    print(f"results: {args.out_dir / 'results-luks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

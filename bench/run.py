"""img-crypt against its ceilings and its peers, on the same input files, in one run.

For every run, and in it for every input size, each tool runs once, in the same order
(interleaved, so drift on a shared machine hits every tool alike): cryptography's ``AESGCM``
on one core at 16 KiB and 1 MiB (once per run, the ceilings the targets use) and ``openssl
speed -evp aes-256-gcm`` (information), ``cp`` and ``cat`` of the input,
``img-crypt`` (the command), the library call alone (on its default one thread, and on the pool
with ``--threads auto`` for the parallel efficiency), Tink's streaming AEAD, ``age`` and
``gpg --symmetric``: each encrypts the input to a file and to /dev/null and decrypts its
ciphertext to a file (SHA-256 checked against the input, untimed) and to /dev/null. On the
largest input img-crypt also decrypts its last 1 MiB (``--range``), and the command then runs
``--version`` (its start-up alone, which the range target subtracts). Every timed command is a
child process: wall clock and peak RSS (``ru_maxrss`` from ``os.wait4``). Then, unless
``--no-glance``, a real Glance imports the 256 MiB input with and without the plugin.

Writes ``results.json``, ``results.md`` and ``results.png`` into ``--out-dir`` and prints one
``PASS|MISS|SKIPPED`` line per target. Exit code 0 when it measured (whatever the targets
say), 1 on an error. See bench/README.md.

Once per run, on the largest input, bench/bounds.py measures the bounds of this machine (read,
one-core cipher from DRAM, two forked cores), information next to the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import _glance
import _report
import _tools
import bounds
import import_sweep
from _child import MIB, BenchError, sizes_arg, spawn
from _child import make_input as write_input
from _child import sha256_file as sha256

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIZES, SMOKE_SIZES = [256, 2048], [1, 3]
GLANCE_SIZE = 256
WRITES_FILE = {"copy", "encrypt file", "decrypt file"}
NULL = os.devnull
Row = dict[str, Any]


def log(line: str) -> None:
    """Progress, on stderr."""
    print(f"# {line}", file=sys.stderr, flush=True)


def child_env(work: Path) -> dict[str, str]:
    """The children's environment: a private img-crypt key store, the repository importable."""
    env = dict(os.environ)
    env["IMG_CRYPT_KEY_STORE"] = str(work / "keys")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class Runner:
    """Times commands into ``self.rows``; one instance per benchmark invocation."""

    def __init__(self, work: Path, env: dict[str, str], largest: int) -> None:
        self.work, self.env, self.largest = work, env, largest
        self.rows: list[Row] = []

    def timed(self, tool: str, op: str, size: int, run: int, argv: list[str], *,
              engine: bool = False, stdout: str | None = None,
              check: Callable[[], bool] | None = None) -> None:
        """Run one command (after ``sync``, so earlier writes do not land in its time)."""
        os.sync()
        if op in WRITES_FILE:
            self.prefault(size)
        child = spawn(argv, self.env, stdout)
        seconds = child.wall_s
        if engine:
            lines = [x for x in child.output.splitlines() if x.startswith("ENGINE ")]
            seconds = float(lines[-1].split()[1])
        verified = check() if check else None
        if verified is False:
            raise BenchError(f"{tool} {op} of {size} MiB: the output differs from the input")
        self.rows.append({"tool": tool, "op": op, "size_mib": size, "run": run,
                          "seconds": round(seconds, 5), "wall_s": round(child.wall_s, 5),
                          "peak_rss_mib": round(child.peak_rss_mib, 2), "verified": verified,
                          "floor_mib": child.floor_mib and round(child.floor_mib, 2)})

    def prefault(self, size: int) -> None:
        """Write and delete a scratch file a little larger than the coming output (untimed).

        On this VM, page-cache pages that were never used, or were freed more than about 2 s
        ago, cost the guest a host fault on first touch: writing 2 GiB into them took 3.4 to
        5 s of system time, against 0.6 s into pages freed just before. Without this, whichever
        operation happens to draw cold pages is slower (bench/README.md, "Fresh memory").
        """
        scratch = self.work / "prefault.tmp"
        block = bytes(MIB)
        with scratch.open("wb", buffering=0) as f:
            for _ in range(size + 64):
                f.write(block)
        scratch.unlink()  # dirty pages of an unlinked file are dropped, never written

    def baselines(self, size: int, run: int, src: Path) -> None:
        """``cp`` of the input to a file, ``cat`` of it to /dev/null."""
        dst = self.work / f"{size}MiB.cp"
        dst.unlink(missing_ok=True)
        self.timed("cp", "copy", size, run, _tools.copy_argv(str(src), str(dst)))
        dst.unlink()
        self.timed("cat", "read", size, run, _tools.read_argv(str(src)), stdout=NULL)

    def tool(self, tool: _tools.Tool, size: int, run: int, src: Path, digest: str) -> None:
        """Encrypt and decrypt, to a file and to /dev/null; the range on the largest input."""
        ct, dec = (self.work / f"{size}MiB.{tool.slug}.{s}" for s in ("ct", "dec"))
        ct.unlink(missing_ok=True)
        dec.unlink(missing_ok=True)
        name, engine = tool.name, tool.engine
        try:
            self.timed(name, "encrypt file", size, run, tool.encrypt(str(src), str(ct)),
                       engine=engine)
            self.timed(name, "encrypt null", size, run, tool.encrypt(str(src), NULL),
                       engine=engine)
            self.timed(name, "decrypt file", size, run, tool.decrypt(str(ct), str(dec)),
                       engine=engine, check=lambda: sha256(dec) == digest)
            dec.unlink()
            self.timed(name, "decrypt null", size, run, tool.decrypt(str(ct), NULL),
                       engine=engine)
            if size == self.largest:
                self.range(tool, size, run, src, ct)
        finally:
            ct.unlink(missing_ok=True)
            dec.unlink(missing_ok=True)

    def range(self, tool: _tools.Tool, size: int, run: int, src: Path, ct: Path) -> None:
        """The last 1 MiB to /dev/null, then ``--version`` (timed); run 1 checks the range.

        ``--version`` is the command's start-up alone, run by the same launcher and interpreter
        right after the range read; on run 1 the range is also decrypted to a file and compared
        with the input (untimed).
        """
        start, end = size * MIB - MIB, size * MIB
        argv = tool.decrypt_range(str(ct), NULL, start, end)
        if argv is None:
            return
        self.timed(tool.name, "decrypt range", size, run, argv, engine=tool.engine)
        if (startup := tool.startup()) is not None:
            self.timed(tool.name, "version", size, run, startup, stdout=NULL)
        if run == 1:
            out = self.work / f"{size}MiB.{tool.slug}.range"
            out.unlink(missing_ok=True)
            spawn(tool.decrypt_range(str(ct), str(out), start, end) or [], self.env)
            if sha256(out) != sha256(src, start, MIB):
                raise BenchError(f"{tool.name} --range {start}:{end} gave wrong bytes")
            out.unlink()


def machine(load_before: str) -> Row:
    """CPU, cores, the library's default threads, kernel, Python, load."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from img_crypt._payload_parallel import default_threads, usable_cores

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "threads": default_threads(), "kernel": platform.release(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_before": load_before, "load_after": loadavg()}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def versions(tools: Sequence[_tools.Tool], skipped: dict[str, str]) -> Row:
    """Versions of everything measured."""
    out: Row = {"cryptography": metadata.version("cryptography"),
                "OpenSSL in cryptography": _tools.bundled_openssl_version().split(" ")[1],
                "openssl command": _tools.openssl_version() or "not installed"}
    for tool in tools:
        if not isinstance(tool, _tools.ImgCryptLibrary):
            out[tool.name] = "not installed" if tool.name in skipped else tool.version()
    out["coreutils"] = _tools.first_line(["cp", "--version"]).rsplit(" ", 1)[-1]
    return out


def guarded(tool: _tools.Tool, skipped: dict[str, str], step: Callable[[], None]) -> None:
    """Run ``step``; a peer that fails is reported as FAILED and skipped from then on (an
    img-crypt failure is an error: the benchmark is void)."""
    try:
        step()
    except (BenchError, subprocess.CalledProcessError) as e:
        if isinstance(tool, _tools.ImgCrypt):
            raise
        skipped[tool.name] = f"FAILED: {str(e)[:300]}"
        log(f"{tool.name}: {e}")


def measure(args: argparse.Namespace, result: Row, tools: list[_tools.Tool]) -> None:
    """Prepare the tools, write the inputs, run every run; fill ``result``."""
    skipped: dict[str, str] = result["skipped"]
    env = child_env(args.workdir)
    runner = Runner(args.workdir, env, max(args.sizes_mib))
    result["bounds"] = {"size_mib": runner.largest, "measurements": []}
    active = [t for t in tools if t.name not in skipped]
    for tool in active:
        guarded(tool, skipped, partial(tool.prepare, args.workdir, env))
    inputs = {}
    for size in args.sizes_mib:
        log(f"writing the {size} MiB input")
        inputs[size] = (args.workdir / f"{size}MiB.bin",
                        write_input(args.workdir / f"{size}MiB.bin", size))
    for run in range(1, args.runs + 1):
        for block in (16384, MIB):
            if "openssl speed" not in skipped:
                gb_s = _tools.openssl_speed(block, args.openssl_seconds)
                result["ceilings"].append({"run": run, "source": "openssl speed",
                                           "block": block, "gb_s": round(gb_s, 3)})
            gb_s = _tools.aesgcm_speed(block, args.openssl_seconds)
            result["ceilings"].append({"run": run, "source": "cryptography AESGCM",
                                       "block": block, "gb_s": round(gb_s, 3)})
        for size, (src, digest) in inputs.items():
            runner.baselines(size, run, src)
            if size == runner.largest:
                result["bounds"]["measurements"] += bounds.measure(src, size, run, env)
            for tool in (t for t in active if t.name not in skipped):
                guarded(tool, skipped, partial(runner.tool, tool, size, run, src, digest))
            line = ", ".join(f"{_short(r['tool'])} {r['op']} {r['seconds']:.2f}s"
                             for r in runner.rows if r["run"] == run and r["size_mib"] == size)
            log(f"run {run}/{args.runs}, {size} MiB: {line}")
    result["measurements"] = [r for r in runner.rows if r["tool"] not in skipped]
    if args.glance:
        result["glance"] = glance(args, inputs)


def _short(tool: str) -> str:
    return "library" if tool == _report.LIB else tool


def glance(args: argparse.Namespace, inputs: dict[int, tuple[Path, str]]) -> Row:
    """The Glance import benchmark; a server that does not start is reported, not raised."""
    size = GLANCE_SIZE if GLANCE_SIZE in inputs else min(inputs)
    warm_up = args.workdir / "glance-warm-up.bin"
    write_input(warm_up, 1)
    log(f"Glance: starting Barbican and two Glance servers ({size} MiB imports)")
    try:
        return _glance.measure(inputs[size][0], warm_up, args.runs, log)
    except (RuntimeError, OSError, TimeoutError) as e:
        log(f"Glance: {e}")
        return {"skipped": f"FAILED: {str(e)[:300]}", "size_mib": size}
    finally:
        for path in (warm_up, warm_up.with_name(warm_up.name + ".sha256")):
            path.unlink(missing_ok=True)


def cleanup(work: Path, sizes: Sequence[int], whole: bool) -> None:
    """Remove what this benchmark wrote into the work directory (all of it when ``whole``)."""
    if whole:
        shutil.rmtree(work, ignore_errors=True)
        return
    for size in sizes:
        for name in (f"{size}MiB.bin", f"{size}MiB.bin.sha256"):
            (work / name).unlink(missing_ok=True)
    for name in ("keys", "gnupg"):
        shutil.rmtree(work / name, ignore_errors=True)
    for name in ("tink-keyset.json", "age-key.txt", "gpg-passphrase", "prefault.tmp"):
        (work / name).unlink(missing_ok=True)


def write(result: Row, out_dir: Path, update_readme: bool) -> None:
    """results.json, results.md, results.png; the README block with ``--update-readme``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "results.md").write_text(_report.markdown(result) + bounds.markdown(result))
    _report.chart(result, out_dir / "results.png")
    if update_readme:
        image = (out_dir.resolve() / "results.png").relative_to(REPO)
        _report.update_readme(REPO / "README.md", _report.readme_block(result, str(image)))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with the --smoke defaults applied."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes-mib", type=sizes_arg, help="input sizes (default 256,2048)")
    p.add_argument("--runs", type=int, help="runs; every tool once per run (default 3)")
    p.add_argument("--workdir", type=Path, help="inputs and outputs (default bench/work/)")
    p.add_argument("--out-dir", type=Path, help="results.json/.md/.png (default bench/)")
    p.add_argument("--smoke", action="store_true",
                   help="1 and 3 MiB, 1 run, no Glance, results into a temp directory")
    p.add_argument("--glance", action="store_true", help="with --smoke: run Glance anyway")
    p.add_argument("--no-glance", action="store_true", help="skip the Glance import")
    p.add_argument("--keep", action="store_true", help="keep the inputs and keys afterwards")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite the README block between the bench markers")
    p.add_argument("--only", choices=["import-sweep"],
                   help="run one item alone: import-sweep (default sizes 16..2048 MiB)")
    args = p.parse_args(argv)
    if args.only == "import-sweep":
        args.sizes_mib = args.sizes_mib or import_sweep.SIZES
    args.sizes_mib = args.sizes_mib or (SMOKE_SIZES if args.smoke else SIZES)
    args.runs = args.runs or (1 if args.smoke else 3)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.glance = not args.no_glance and (args.glance or not args.smoke)
    args.temp_workdir = args.workdir is None and args.smoke
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="img-crypt-bench-")) if args.smoke \
            else HERE / "work"
    if args.out_dir is None:
        args.out_dir = Path(tempfile.mkdtemp(prefix="img-crypt-bench-out-")) if args.smoke \
            else HERE
    args.openssl_seconds = 1 if args.smoke else 2
    return args


def sweep(args: argparse.Namespace) -> int:
    """``--only import-sweep``: import time by size with and without the plugin."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    try:
        result = import_sweep.measure(args.sizes_mib, args.runs, args.workdir, log)
    except (RuntimeError, OSError, TimeoutError) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            for size in args.sizes_mib:
                for name in (f"sweep-{size}MiB.bin", f"sweep-{size}MiB.bin.sha256"):
                    (args.workdir / name).unlink(missing_ok=True)
    result["machine"] = machine(load_before) | {"load_after": loadavg()}
    import_sweep.write(result, args.out_dir)
    print(import_sweep.markdown(result), end="")
    print(f"results: {args.out_dir / 'import_sweep.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, report, write; 0 when it measured, 1 on an error."""
    args = parse(argv)
    if args.only == "import-sweep":
        return sweep(args)
    tools = _tools.crypto_tools()
    skipped = {t.name: why for t in tools if (why := t.missing())}
    if _tools.openssl_version() is None:
        skipped["openssl speed"] = "openssl not installed"
    result: Row = {"date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                   "machine": machine(loadavg()), "versions": versions(tools, skipped),
                   "sizes_mib": args.sizes_mib, "runs": args.runs,
                   "order": "per run: openssl speed, cryptography AESGCM; per size: cp, "
                            "cat, the bounds (largest size), then "
                            + ", ".join(t.name for t in tools),
                   "skipped": skipped, "ceilings": [], "measurements": [],
                   "glance": {"skipped": "not requested (--no-glance or --smoke)"}}
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        try:
            measure(args, result, tools)
        finally:
            for tool in tools:
                tool.close()
            if not args.keep:
                cleanup(args.workdir, args.sizes_mib, args.temp_workdir)
        result["machine"]["load_after"] = loadavg()
        result["medians"] = _report.medians(result["measurements"])
        floors = [r["floor_mib"] for r in result["measurements"] if r["floor_mib"]]
        result["launcher_rss_mib"] = max(floors) if floors else None
        result["targets"] = _report.targets(result)
        result["engine_ratios"] = _report.engine_ratios(result)
        result["bounds"] |= bounds.summary(result)
        write(result, args.out_dir, args.update_readme)
    except (BenchError, OSError, ValueError, subprocess.CalledProcessError) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 1
    print(_report.header(result))
    for target in result["targets"]:
        print(_report.target_line(target))
    print(f"results: {args.out_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

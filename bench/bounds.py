"""The bounds of this machine: how fast the input can be read and ciphered here, at best.

bench/run.py times three schemes once per run on the largest input, each in its own child
process (``python bench/bounds.py SCHEME SRC``, started through bench/_child.py's launcher),
and reports them next to img-crypt's own times (information, no target):

- ``read``: the input read from the page cache into a reused 1 MiB buffer (``readinto``),
  nothing else: the Python-side twin of the ``cat`` row;
- ``one core, from memory``: cryptography's streaming Cobblestone
  (``Cobblestone256Encryptor.update_into``, one 1 MiB view at a time) over the input mmapped
  with ``MAP_POPULATE``; the populate and the cipher are timed apart: the one-core cipher
  speed when the data comes from DRAM, not from a cache-hot 16 KiB buffer as in the ceiling;
- ``two cores, best found``: one forked process per usable core, each ciphering its share of
  the input's 1 MiB blocks (``os.preadv``) with ``AESGCM.encrypt_into`` per 16 KiB chunk,
  output discarded. Not a usable design (nothing is written, one nonce for every chunk): the
  fastest two-core scheme found, as a bound.

The child prints one JSON object (seconds measured inside the child, interpreter start-up
excluded); :func:`measure` parses it, :func:`summary` derives the ratios and the lower bound,
:func:`markdown` writes the results.md section.
"""

from __future__ import annotations

import json
import mmap
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MIB = 1 << 20
CHUNK = 16384
TAG = 16
Row = dict[str, Any]

READ, MEMORY, CORES = "read", "one core, from memory", "two cores, best found"
LOWER = "lower bound for encrypt to /dev/null"
SCHEMES = {"read": READ, "memory": MEMORY, "cores": CORES}
"""Child argument -> bound name."""
WHAT = {
    READ: "`readinto` a reused 1 MiB buffer, nothing else",
    MEMORY: "streaming Cobblestone `update_into` per 1 MiB view of the input mmapped with "
            "MAP_POPULATE (cipher only; the populate is the row above)",
    CORES: "{workers} forked processes, each `os.preadv` 1 MiB then `AESGCM.encrypt_into` per "
           "16 KiB over its share, output discarded (not a usable design)",
    f"{MEMORY}: populate": "`mmap` of the input with MAP_POPULATE: page tables for every "
                           "page (information; not in the lower bound)",
    LOWER: "per run, the faster of the two encrypting schemes above (here: {won})",
}
TOOLS = (("img-crypt", "img-crypt"), ("library", "img-crypt (library, as the Glance plugin "
                                                  "uses it)"))
"""(label, tool name in the measurements): whose times are compared with the bounds."""
OPS = ("encrypt null", "decrypt null")


# --- the child: one scheme, timed inside ------------------------------------------------------


def read_input(src: str) -> Row:
    """Read ``src`` into one reused 1 MiB buffer; return the seconds."""
    buf = bytearray(MIB)
    with open(src, "rb", buffering=0) as f:
        start = time.perf_counter()
        while f.readinto(buf):
            pass
        return {"seconds": time.perf_counter() - start}


def cipher_mapped(src: str) -> Row:
    """Map ``src`` with MAP_POPULATE (timed), then Cobblestone-encrypt it 1 MiB at a time."""
    from cryptography.cobblestone import Cobblestone256Encryptor

    size = os.stat(src).st_size
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    out = bytearray(MIB + MIB // 1024 + 16456)  # what one update_into of 1 MiB may write
    cipher = Cobblestone256Encryptor(os.urandom(32), b"img-crypt bench bounds")
    with open(src, "rb", buffering=0) as f:
        start = time.perf_counter()
        mapped = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
    populate = time.perf_counter() - start
    with mapped, memoryview(mapped) as view:
        start = time.perf_counter()
        for offset in range(0, size, MIB):
            cipher.update_into(view[offset:offset + MIB], out)
        cipher.finalize()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "populate_s": populate}


def _cipher_blocks(src: str, first: int, last: int) -> None:
    """Encrypt 1 MiB blocks [first, last) of ``src`` per 16 KiB chunk; discard the output."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)  # output discarded: one nonce is fine
    buf, sealed = bytearray(MIB), memoryview(bytearray(CHUNK + TAG))
    full = _chunks(memoryview(buf), MIB)
    fd = os.open(src, os.O_RDONLY)
    try:
        for index in range(first, last):
            n = os.preadv(fd, [buf], index * MIB)
            for part in full if n == MIB else _chunks(memoryview(buf), n):
                aead.encrypt_into(nonce, part, None, sealed[:len(part) + TAG])
    finally:
        os.close(fd)


def _chunks(block: memoryview, n: int) -> list[memoryview]:
    """The 16 KiB chunks of ``block[:n]`` (the last one shorter)."""
    return [block[at:min(at + CHUNK, n)] for at in range(0, n, CHUNK)]


def cipher_on_cores(src: str, workers: int) -> Row:
    """``workers`` forked processes cipher contiguous shares of ``src``; the seconds of all."""
    start, pids = time.perf_counter(), []
    for first, last in shares(-(-os.stat(src).st_size // MIB), workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked worker
            code = 1
            try:
                _cipher_blocks(src, first, last)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    seconds = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"bounds: a worker failed: exit codes {codes}")
    return {"seconds": seconds, "workers": workers}


def shares(blocks: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous block ranges [first, last), one per worker, covering ``blocks`` evenly."""
    return [(blocks * i // workers, blocks * (i + 1) // workers) for i in range(workers)]


def usable_cores() -> int:
    """The CPUs this process may run on, as the library counts them."""
    from img_crypt._payload_parallel import usable_cores as count

    return count()


def child(argv: Sequence[str]) -> int:
    """``bounds.py read|memory|cores SRC``: run one scheme, print its JSON."""
    scheme, src = argv
    if scheme == "read":
        row = read_input(src)
    elif scheme == "memory":
        row = cipher_mapped(src)
    else:
        row = cipher_on_cores(src, usable_cores())
    print(json.dumps(row))
    return 0


# --- the parent: spawn, summarise, report ----------------------------------------------------


def measure(src: Path, size: int, run: int, env: Mapping[str, str]) -> list[Row]:
    """Each scheme once over ``src`` (after ``sync``), each in a child; one row per bound."""
    from _child import spawn

    rows = []
    for scheme, bound in SCHEMES.items():
        os.sync()
        done = spawn([sys.executable, str(Path(__file__).resolve()), scheme, str(src)], env)
        measured = json.loads(done.output.splitlines()[-1])
        rows.append({"bound": bound, "size_mib": size, "run": run,
                     **{k: round(v, 5) if isinstance(v, float) else v
                        for k, v in measured.items()},
                     "wall_s": round(done.wall_s, 5)})
    return rows


def _per_run(rows: Sequence[Row]) -> dict[str, dict[int, float]]:
    """Seconds per bound per run; the populate as its own bound; the lower bound derived."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if "populate_s" in r:
            out.setdefault(f"{MEMORY}: populate", {})[r["run"]] = r["populate_s"]
        out.setdefault(r["bound"], {})[r["run"]] = r["seconds"]
    runs = sorted(set(out.get(MEMORY, {})) & set(out.get(CORES, {})))
    out[LOWER] = {r: min(out[MEMORY][r], out[CORES][r]) for r in runs}
    return out


def _winners(per_run: dict[str, dict[int, float]]) -> list[str]:
    """Per run, which encrypting scheme gave the lower bound."""
    return [MEMORY if per_run[MEMORY][r] <= per_run[CORES][r] else CORES
            for r in sorted(per_run[LOWER])]


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 5) if values else None


def _tool_seconds(result: Row, tool: str, op: str, size: int) -> dict[int, float]:
    return {m["run"]: m["seconds"] for m in result["measurements"]
            if (m["tool"], m["op"], m["size_mib"]) == (tool, op, size)}


def _target_seconds(result: Row, size: int, lower: float | None) -> Row:
    """The time each ceiling target allows on ``size`` MiB (from the 16 KiB ceiling of each
    run, median), and the lower bound over it (above 1: no scheme found meets the target)."""
    from _report import CEILING, CEILING_NEEDS

    ceiling = [c["gb_s"] for c in result["ceilings"]
               if (c["source"], c["block"]) == (CEILING, CHUNK)]
    out: Row = {}
    for label, tool in TOOLS:
        allowed = [size * MIB / (CEILING_NEEDS[tool] * gb_s * 1e9) for gb_s in ceiling]
        seconds = _median(allowed)
        out[label] = {"need_x": CEILING_NEEDS[tool], "seconds": seconds,
                      "lower_bound_over_allowed": round(lower / seconds, 3)
                      if lower and seconds else None}
    return out


def summary(result: Row) -> Row:
    """Median seconds per bound, tool time / bound time per run (median), the targets' times."""
    rows, size = result["bounds"]["measurements"], result["bounds"]["size_mib"]
    per_run = _per_run(rows)
    bounds = []
    for bound, seconds in per_run.items():
        ratios = {}
        for label, tool in TOOLS:
            for op in OPS:
                times = _tool_seconds(result, tool, op, size)
                ratios[f"{label} {op}"] = _median([times[r] / s for r, s in seconds.items()
                                                   if r in times and s > 0])
        median = _median(list(seconds.values()))
        bounds.append({"bound": bound, "seconds": median,
                       "per_run": [round(seconds[r], 4) for r in sorted(seconds)],
                       "gb_s": median and round(size * MIB / median / 1e9, 3),
                       "tool_time_over_bound": None if bound.endswith("populate") else ratios})
    lower = _median(list(per_run[LOWER].values()))
    return {"summary": bounds, "lower_bound_from": _winners(per_run),
            "target_seconds": _target_seconds(result, size, lower)}


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} x"


def _table(b: Row) -> list[str]:
    """One row per bound: what runs, median seconds and GB/s, img-crypt's time over it."""
    workers = next((r["workers"] for r in b["measurements"] if "workers" in r), "?")
    won = ", ".join(f"{name} in {n} of {len(b['lower_bound_from'])} run(s)"
                    for name in (MEMORY, CORES) if (n := b["lower_bound_from"].count(name)))
    head = [f"{label} {op.split()[0]}" for label, _ in TOOLS for op in OPS]
    lines = [f"| bound | what runs | median s | GB/s | {' | '.join(head)} |",
             "|---|---|---:|---:|" + "---:|" * len(head)]
    for row in b["summary"]:
        ratios = row["tool_time_over_bound"] or {}
        cells = " | ".join(_x(ratios.get(f"{label} {op}")) for label, _ in TOOLS for op in OPS)
        lines.append(f"| {row['bound']} | {WHAT[row['bound']].format(workers=workers, won=won)}"
                     f" | {row['seconds']:.3f} | {row['gb_s']:.2f} | {cells} |")
    return lines


def _verdicts(b: Row) -> list[str]:
    """Per ceiling target: the time it allows, the lower bound, whether any scheme meets it."""
    lower = next(r["seconds"] for r in b["summary"] if r["bound"] == LOWER)
    lines = []
    for label, t in b["target_seconds"].items():
        if t["lower_bound_over_allowed"]:
            over = t["lower_bound_over_allowed"]
            verdict = "within reach" if over <= 1 else \
                f"out of reach of every scheme found, by {over:.2f} x"
            lines.append(f"- {label} >= {t['need_x']} x the ceiling: {b['size_mib']} MiB in at "
                         f"most {t['seconds']:.3f} s; lower bound {lower:.3f} s: {verdict}.")
    return lines


def markdown(result: Row) -> str:
    """The "Bounds of this machine" section of results.md ("" when it was not measured)."""
    b = result.get("bounds") or {}
    if not b.get("summary"):
        return ""
    intro = (f"Information, no target. Once per run on the {b['size_mib']} MiB input, each "
             "scheme in a child, timed inside it (no start-up). The ratios are img-crypt's "
             "time (to /dev/null, same run) over the bound's: 1.00 x is at the bound. See "
             "bench/README.md, \"Bounds of this machine\".")
    return "\n".join(["", "## Bounds of this machine", "", intro, "", *_table(b), "",
                      "What the ceiling targets allow (16 KiB cache-hot ceiling of each run, "
                      "median) against the lower bound found:", "", *_verdicts(b)]) + "\n"


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))

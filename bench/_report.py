"""From raw measurements to medians, per-run ratios, PASS/MISS targets, Markdown and a chart.

Every ratio is computed per run, between two measurements of that same run (drift on a shared
machine hits both alike), and the median of those per-run ratios is what a target checks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIB = 1 << 20
CLI, LIB = "img-crypt", "img-crypt (library, as the Glance plugin uses it)"
LIBN = "img-crypt (library, --threads auto)"
OPS = {
    "encrypt null": "encrypt to /dev/null",
    "encrypt file": "encrypt file to file",
    "decrypt null": "decrypt to /dev/null",
    "decrypt file": "decrypt file to file",
    "decrypt range": "decrypt the last 1 MiB to /dev/null (--range)",
    "version": "start-up alone (--version)",
    "copy": "cp file to file",
    "read": "cat file > /dev/null",
}
PEERS = (("tink", 6.0), ("age", 3.0), ("gpg", 8.0))
CEILING = "cryptography AESGCM"
"""The ceiling the targets use: AES-256-GCM of the OpenSSL img-crypt runs on, one core."""
CEILING_NEEDS = {CLI: 0.8, LIB: 1.25}
"""Encrypt and decrypt to /dev/null over the 16 KiB ceiling (the library needs every core)."""
CP_LIMIT = 1.2
IMPORT_LIMIT = 1.05
"""Issue 15: a glance-direct import with the plugin at most this many times one without."""
RSS_LIMIT_MIB, GROWTH_LIMIT_MIB = 64.0, 8.0
RANGE_OVER_STARTUP_MS = 20.0
"""The command's range read of the last 1 MiB may cost this much more than ``--version``."""
RANGE_SPEEDUP = 100.0
"""The library's range read of the last 1 MiB: at least this much faster than all of it."""
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

Row = dict[str, Any]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def medians(measurements: Sequence[Row]) -> list[Row]:
    """Median time, throughput and peak RSS per (tool, operation, size), in measured order."""
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for m in measurements:
        groups.setdefault((m["tool"], m["op"], m["size_mib"]), []).append(m)
    rows = []
    for (tool, op, size), ms in groups.items():
        seconds = statistics.median(m["seconds"] for m in ms)
        nbytes = MIB if op in ("decrypt range", "version") else size * MIB
        checks = [m["verified"] for m in ms if m["verified"] is not None]
        rows.append({"tool": tool, "op": op, "size_mib": size, "runs": len(ms),
                     "seconds": round(seconds, 4), "gb_s": round(nbytes / seconds / 1e9, 3),
                     "peak_rss_mib": round(statistics.median(m["peak_rss_mib"] for m in ms), 1),
                     "max_rss_mib": round(max(m["peak_rss_mib"] for m in ms), 1),
                     "verified": all(checks) if checks else None})
    return rows


def _target(name: str, values: Sequence[float], need: str, unit: str,
            skipped: str | None = None) -> Row:
    """One target: the median of ``values`` checked against ``need`` (``>= 0.65`` ...)."""
    value = _median(values)
    op, threshold = need.split()
    if skipped or value is None:
        result = "SKIPPED"
    else:
        ok = {">=": value >= float(threshold), "<=": value <= float(threshold),
              "<": value < float(threshold)}[op]
        result = "PASS" if ok else "MISS"
    return {"target": name, "value": None if value is None else round(value, 3), "unit": unit,
            "need": f"{need} {unit}", "result": result, "per_run": [round(v, 3) for v in values],
            "reason": skipped or (None if values else "no measurement")}


def _ceiling(result: Row, source: str, block: int) -> dict[int, float]:
    """GB/s per run of one ceiling (``openssl speed`` or ``cryptography AESGCM``)."""
    return {c["run"]: c["gb_s"] for c in result["ceilings"]
            if c["source"] == source and c["block"] == block}


def _throughputs(result: Row, tool: str, op: str) -> dict[int, float]:
    """GB/s per run of ``tool`` doing ``op`` on the largest input."""
    large = max(result["sizes_mib"])
    return {m["run"]: large * MIB / m["seconds"] / 1e9 for m in result["measurements"]
            if (m["tool"], m["op"], m["size_mib"]) == (tool, op, large)}


def engine_ratios(result: Row) -> list[Row]:
    """Information, no target: throughput over each ceiling, and the parallel efficiency."""
    large = max(result["sizes_mib"])
    out = []
    ceilings = [(CEILING, block, label) for block, label in ((16384, "16 KiB"), (MIB, "1 MiB"))]
    for source, block, label in [*ceilings, ("openssl speed", 16384, "16 KiB")]:
        ceiling = _ceiling(result, source, block)
        for tool, op in ((t, o) for t in (CLI, LIB) for o in ("encrypt null", "decrypt null")):
            speed = _throughputs(result, tool, op)
            values = [speed[r] / ceiling[r] for r in ceiling if r in speed]
            name = "img-crypt" if tool == CLI else "library"
            out.append({"ratio": f"{OPS[op]} / {source} {label} ({name}, {large} MiB)",
                        "value": round(_median(values) or 0, 3),
                        "per_run": [round(v, 3) for v in values]})
    threads = result["machine"].get("threads", 1)
    for op in ("encrypt null", "decrypt null"):
        many, one = _throughputs(result, LIBN, op), _throughputs(result, LIB, op)
        values = [many[r] / (threads * one[r]) for r in many if r in one]
        out.append({"ratio": f"parallel efficiency, {OPS[op]}: {threads} threads / ({threads} x "
                             f"1 thread) (library, {large} MiB)",
                    "value": round(_median(values) or 0, 3),
                    "per_run": [round(v, 3) for v in values]})
    return out


def targets(result: Row) -> list[Row]:
    """Every target of the issue, measured on the largest input (RSS: on every input)."""
    ms, skipped, runs = result["measurements"], result["skipped"], range(1, result["runs"] + 1)
    small, large = min(result["sizes_mib"]), max(result["sizes_mib"])
    secs = {(m["tool"], m["op"], m["run"]): m["seconds"] for m in ms if m["size_mib"] == large}
    ceiling = _ceiling(result, CEILING, 16384)

    def ratios(num: tuple[str, str], den: tuple[str, str]) -> list[float]:
        """time(num) / time(den), per run where both were measured."""
        return [secs[(*num, r)] / secs[(*den, r)] for r in runs
                if (*num, r) in secs and (*den, r) in secs]

    out = []
    for tool, label in ((CLI, "img-crypt"), (LIB, "library")):
        for op in ("encrypt null", "decrypt null"):
            values = [large * MIB / secs[tool, op, r] / 1e9 / ceiling[r]
                      for r in runs if r in ceiling and (tool, op, r) in secs]
            out.append(_target(f"{OPS[op]} / one-core cryptography AES-GCM at 16 KiB ({label}, "
                               f"{large} MiB)", values, f">= {CEILING_NEEDS[tool]}", "x"))
    for peer, need in PEERS:
        for op in ("encrypt null", "decrypt null"):
            out.append(_target(f"{op.split()[0]} speed-up over {peer} ({large} MiB, to "
                               "/dev/null)", ratios((peer, op), (CLI, op)), f">= {need}", "x",
                               skipped.get(peer)))
    for op in ("encrypt file", "decrypt file"):
        out.append(_target(f"{OPS[op]} time / cp time ({large} MiB)",
                           ratios((CLI, op), ("cp", "copy")), f"<= {CP_LIMIT}", "x"))
    med = {(r["tool"], r["op"], r["size_mib"]): r["peak_rss_mib"] for r in medians(ms)}
    crypto = ("encrypt null", "encrypt file", "decrypt null", "decrypt file")
    for tool, label in ((CLI, "img-crypt"), (LIB, "library")):
        peaks = [m["peak_rss_mib"] for m in ms if m["tool"] == tool and m["op"] in crypto]
        out.append(_target(f"peak RSS, every encrypt/decrypt run, every size ({label})",
                           [max(peaks)] if peaks else [], f"< {RSS_LIMIT_MIB:.0f}", "MiB"))
        diffs = [med[tool, op, large] - med[tool, op, small] for op in crypto
                 if (tool, op, large) in med and (tool, op, small) in med]
        out.append(_target(f"peak RSS growth {small} -> {large} MiB, worst operation ({label})",
                           [max(diffs)] if diffs and small < large else [],
                           f"< {GROWTH_LIMIT_MIB:.0f}", "MiB",
                           None if small < large else "needs two sizes"))
    out.append(_target(f"range read of the last 1 MiB of {large} MiB minus --version "
                       "(img-crypt, per-run difference)",
                       [1000 * (secs[CLI, "decrypt range", r] - secs[CLI, "version", r])
                        for r in runs if (CLI, "decrypt range", r) in secs
                        and (CLI, "version", r) in secs], f"<= {RANGE_OVER_STARTUP_MS:g}", "ms"))
    out.append(_target(f"range decryption speed-up: last 1 MiB vs all of {large} MiB (library)",
                       ratios((LIB, "decrypt null"), (LIB, "decrypt range")),
                       f">= {RANGE_SPEEDUP:g}", "x"))
    glance = result["glance"]
    out.append(_target(f"Glance glance-direct import with plugin / without "
                       f"({glance.get('size_mib', '?')} MiB)", glance.get("ratios", []),
                       f"<= {IMPORT_LIMIT}", "x", glance.get("skipped")))
    return out


# --- text -----------------------------------------------------------------------------------


def target_line(t: Row) -> str:
    """``PASS  <target>  <value>  (need <threshold>)``."""
    value = "-" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
    tail = f": {t['reason']}" if t["result"] == "SKIPPED" and t["reason"] else ""
    return f"{t['result']:<7} {t['target']}  {value}  (need {t['need']}){tail}"


def targets_table(result: Row) -> str:
    """The PASS/MISS table (also pasted into the README)."""
    lines = ["| result | target | measured (median of per-run values) | need |",
             "|---|---|---:|---|"]
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
        result_text = t["result"] + (f": {t['reason']}" if t["result"] == "SKIPPED" else "")
        lines.append(f"| {result_text} | {t['target']} | {value} | {t['need']} |")
    return "\n".join(lines)


def header(result: Row) -> str:
    """Date, machine, versions, load."""
    m, v = result["machine"], result["versions"]
    tools = ", ".join(f"{k} {val}" for k, val in v.items())
    return (f"{result['date_utc']}, {result['runs']} run(s), medians; machine: {m['cpu']}, "
            f"{m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; {tools}; load "
            f"average before/after: {m['load_before']} / {m['load_after']}")


def markdown(result: Row) -> str:
    """The whole results.md."""
    parts = ["# img-crypt benchmark results", "",
             "Generated by `scripts/bench.sh` (`bench/run.py`, see `bench/README.md`); raw "
             "numbers in `results.json`.", "", header(result), "", "## Targets", "",
             targets_table(result), "", "## Ceilings: AES-256-GCM on one core, in memory", "",
             "`cryptography AESGCM` is `AESGCM.encrypt` on the OpenSSL that cryptography "
             "bundles, the one img-crypt runs on: the ceiling the targets use. `openssl speed "
             "-evp aes-256-gcm` is the system's OpenSSL (information).", "",
             "| source | block | median GB/s |", "|---|---|---:|"]
    for source in ("openssl speed", "cryptography AESGCM"):
        for block, label in ((16384, "16 KiB"), (MIB, "1 MiB")):
            values = list(_ceiling(result, source, block).values())
            parts.append(f"| {source} | {label} | {_median(values) or 0:.2f} |" if values else
                         f"| {source} | {label} | {result['skipped'].get(source, '-')} |")
    parts += ["", "Against the ceilings, and the parallel efficiency (information, no target; "
              f"the library's default is 1 thread, `--threads auto` is "
              f"{result['machine'].get('threads', '?')} here):",
              "",
              "| ratio (median of per-run ratios) | value |", "|---|---:|"]
    parts += [f"| {r['ratio']} | {r['value']:.2f} x |" for r in result["engine_ratios"]]
    for size in result["sizes_mib"]:
        parts += ["", f"## {size} MiB input", "",
                  "| tool | operation | median time (s) | GB/s | peak RSS (MiB) | round trip |",
                  "|---|---|---:|---:|---:|---|"]
        for r in (r for r in result["medians"] if r["size_mib"] == size):
            check = {True: "verified", False: "WRONG", None: ""}[r["verified"]]
            speed = "" if r["op"] == "version" else f"{r['gb_s']:.2f}"  # no data: no speed
            parts.append(f"| {r['tool']} | {OPS[r['op']]} | {r['seconds']:.3f} | "
                         f"{speed} | {r['peak_rss_mib']:.1f} | {check} |")
        parts += [f"| {tool} | SKIPPED: {why} | | | | |" for tool, why in
                  result["skipped"].items() if tool != "openssl speed"]
    g = result["glance"]
    parts += ["", "## Glance glance-direct import", ""]
    if "skipped" in g:
        parts.append(f"SKIPPED: {g['skipped']}")
    else:
        parts += [f"Glance {g['glance']}, Barbican {g['barbican']}, {g['size_mib']} MiB, "
                  f"{g['runs']} run(s): from the import call until the task released the "
                  "image.", "", "| import | median time (s) |", "|---|---:|",
                  f"| without the plugin | {_median(g['without_plugin_s']):.2f} |",
                  f"| with image_encryption | {_median(g['with_plugin_s']):.2f} |"]
    return "\n".join(parts) + "\n"


def readme_block(result: Row, image: str) -> str:
    """What goes between the README markers: the chart, the header and the targets."""
    return "\n".join([README_START, f"![throughput per tool]({image})", "",
                      f"Measured {header(result)}.", "", targets_table(result), README_END])


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between the markers (inclusive) with ``block``."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    readme.write_text(text[:start] + block + text[end + len(README_END):])


# --- chart ----------------------------------------------------------------------------------


def chart(result: Row, path: Path) -> None:
    """Bars: GB/s per tool and operation on the largest input; openssl and cp as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    large = max(result["sizes_mib"])
    rows = {(r["tool"], r["op"]): r["gb_s"] for r in result["medians"]
            if r["size_mib"] == large}
    tools = list(dict.fromkeys(r["tool"] for r in result["medians"]
                               if r["op"].startswith(("encrypt", "decrypt"))))
    ops = ("encrypt null", "decrypt null", "encrypt file", "decrypt file")
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(ops)
    for i, op in enumerate(ops):
        ax.bar([x + i * width for x in range(len(tools))],
               [rows.get((tool, op), 0) for tool in tools], width, label=OPS[op])
    for source, style in (("openssl speed", "--"), ("cryptography AESGCM", "-.")):
        ceiling = _median(list(_ceiling(result, source, 16384).values()))
        if ceiling:
            ax.axhline(ceiling, color="black", linestyle=style,
                       label=f"{source} (AES-256-GCM, 16 KiB, in memory)")
    if ("cp", "copy") in rows:
        ax.axhline(rows["cp", "copy"], color="grey", linestyle=":", label="cp file to file")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(tools))],
                  [t.replace(" (library, ", "\n(library, ") for t in tools], fontsize=8)
    ax.set_ylabel("GB/s (median)")
    ax.set_title(f"Throughput on a {large} MiB file, {result['date_utc'][:10]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

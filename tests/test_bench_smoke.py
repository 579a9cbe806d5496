"""Smoke tests of bench/memory.py and bench/run.py: tiny sizes, one run, in a child process.

No timing is asserted: the benchmarks report PASS/MISS themselves.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "memory.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("IMG_CRYPT_KEY_STORE", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_smoke_prints_table_and_targets_and_writes_json(tmp_path: Path) -> None:
    result_file = tmp_path / "x.json"
    work = tmp_path / "work"
    proc = _run("--smoke", "--workdir", str(work), "--json", str(result_file))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| operation | size (MiB) | peak RSS (MiB) | wall (s) | throughput (MiB/s) |" in out
    for op in ("baseline", "imports", "encrypt file", "encrypt null", "decrypt file",
               "decrypt null"):
        assert f"| {op} | 1 |" in out
        assert f"| {op} | 3 |" in out
    target_lines = [line for line in out.splitlines() if line.startswith(("PASS:", "MISS:"))]
    assert len(target_lines) == 2

    data = json.loads(result_file.read_text())
    assert {"machine", "date_utc", "sizes_mib", "runs", "measurements", "medians",
            "targets"} <= data.keys()
    assert {"platform", "cpu_count", "python", "cryptography"} <= data["machine"].keys()
    assert data["sizes_mib"] == [1, 3]
    assert data["runs"] == 1
    assert len(data["measurements"]) == 2 * 6
    assert all(m["peak_rss_mib"] > 0 and m["wall_s"] > 0 for m in data["measurements"])
    assert {(r["op"], r["size_mib"]) for r in data["medians"]} == {
        (op, size) for op in ("baseline", "imports", "encrypt file", "encrypt null",
                              "decrypt file", "decrypt null") for size in (1, 3)}
    assert [t["result"] in {"PASS", "MISS"} for t in data["targets"]] == [True, True]
    # the big files and the key store are gone afterwards
    assert list(work.iterdir()) == []


def test_smoke_without_json_writes_none(tmp_path: Path) -> None:
    proc = _run("--smoke", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "PASS:" in proc.stdout or "MISS:" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_bad_workdir_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _run("--smoke", "--workdir", str(blocker / "sub"))
    assert proc.returncode != 0
    assert "error" in proc.stderr


# --- bench/run.py: the comparison benchmark ----------------------------------------------------

RUN = REPO / "bench" / "run.py"
IMG_CRYPT_TOOLS = ("img-crypt", "img-crypt (library, as the Glance plugin uses it)")
CRYPTO_OPS = {"encrypt file", "encrypt null", "decrypt file", "decrypt null"}
RUN_SECTIONS = {"date_utc", "machine", "versions", "sizes_mib", "runs", "order", "skipped",
                "ceilings", "measurements", "medians", "launcher_rss_mib", "targets", "glance",
                "engine_ratios", "bounds"}
BOUNDS = ["read", "one core, from memory: populate", "one core, from memory",
          "two cores, best found", "lower bound for encrypt to /dev/null"]
OPENSSL_SPEED_OUTPUT = """\
version: 3.0.19
The 'numbers' are in 1000s of bytes per second processed.
type          16384 bytes
AES-256-GCM    4209815.28k
"""


def _bench_module(name: str) -> Any:
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def test_run_smoke_measures_every_tool_and_reports_every_target(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("IMG_CRYPT_KEY_STORE", None)
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--no-glance", "--out-dir",
                           str(out), "--workdir", str(work)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr

    data = json.loads((out / "results.json").read_text())
    assert data.keys() >= RUN_SECTIONS
    assert (data["sizes_mib"], data["runs"]) == ([1, 3], 1)
    assert {"cpu", "cores", "kernel", "python", "load_before", "load_after"} <= \
        data["machine"].keys()
    assert "cryptography" in data["versions"]
    assert (out / "results.md").read_text().startswith("# img-crypt benchmark results")
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # every target is PASS or MISS; SKIPPED only for an absent tool or the Glance part
    lines = [line for line in proc.stdout.splitlines()
             if line.split(" ", 1)[0] in {"PASS", "MISS", "SKIPPED"}]
    assert len(lines) == len(data["targets"]) >= 19
    for target in data["targets"]:
        assert target["result"] in {"PASS", "MISS", "SKIPPED"}, target
        if target["result"] == "SKIPPED":
            assert target["target"].startswith("Glance") or \
                target["reason"].endswith("not installed"), target
    assert data["glance"] == {"skipped": "not requested (--no-glance or --smoke)"}

    # every tool was measured or reported as not installed; no peer failed
    measured = {m["tool"] for m in data["measurements"]}
    assert {"cp", "cat", *IMG_CRYPT_TOOLS} <= measured
    for peer in ("tink", "age", "gpg"):
        assert peer in measured or data["skipped"][peer] == f"{peer} not installed"
    assert all(m["seconds"] > 0 and m["peak_rss_mib"] > 0 for m in data["measurements"])

    # img-crypt: every operation on both sizes, decryptions to a file verified by SHA-256
    for tool in IMG_CRYPT_TOOLS:
        for size in (1, 3):
            ops = {m["op"]: m for m in data["measurements"]
                   if m["tool"] == tool and m["size_mib"] == size}
            assert ops.keys() >= CRYPTO_OPS
            assert ops["decrypt file"]["verified"] is True
        assert any(m["op"] == "decrypt range" and m["size_mib"] == 3
                   for m in data["measurements"] if m["tool"] == tool)
    # the command's start-up alone, once per run on the largest input, for the range target
    assert [(m["tool"], m["size_mib"]) for m in data["measurements"] if m["op"] == "version"] \
        == [("img-crypt", 3)]
    range_targets = {t["target"]: t for t in data["targets"] if "last 1 MiB" in t["target"]}
    assert range_targets.keys() == {
        "range read of the last 1 MiB of 3 MiB minus --version (img-crypt, per-run difference)",
        "range decryption speed-up: last 1 MiB vs all of 3 MiB (library)"}
    startup = range_targets["range read of the last 1 MiB of 3 MiB minus --version (img-crypt, "
                            "per-run difference)"]
    assert (startup["need"], len(startup["per_run"])) == ("<= 20 ms", 1)
    # the library on the pool too, for the parallel efficiency; the ceilings of the targets
    # are cryptography's one-core AES-GCM, openssl speed is information
    assert {m["op"] for m in data["measurements"]
            if m["tool"] == "img-crypt (library, --threads auto)"} == CRYPTO_OPS
    assert data["machine"]["threads"] >= 1
    efficiency = [r for r in data["engine_ratios"] if r["ratio"].startswith("parallel efficiency")]
    assert len(efficiency) == 2 and all(r["value"] > 0 for r in efficiency)
    ceiling_targets = [t["target"] for t in data["targets"] if "AES-GCM at 16 KiB" in t["target"]]
    assert len(ceiling_targets) == 4
    assert not any("openssl" in t["target"] for t in data["targets"])
    _assert_bounds_reported(data, (out / "results.md").read_text())
    # the inputs, keys and outputs are gone
    assert list(work.iterdir()) == []


def _assert_bounds_reported(data: dict[str, Any], markdown: str) -> None:
    """The bounds: each scheme measured once on the largest input, summarised, in results.md."""
    bounds = data["bounds"]
    assert bounds["size_mib"] == 3
    assert [(m["bound"], m["run"]) for m in bounds["measurements"]] == [
        ("read", 1), ("one core, from memory", 1), ("two cores, best found", 1)]
    assert all(m["seconds"] > 0 and m["wall_s"] >= m["seconds"] for m in bounds["measurements"])
    assert bounds["measurements"][1]["populate_s"] > 0
    assert bounds["measurements"][2]["workers"] == data["machine"]["usable_cores"]
    assert [b["bound"] for b in bounds["summary"]] == BOUNDS
    for row in bounds["summary"]:
        assert row["seconds"] > 0 and row["gb_s"] > 0
        if row["bound"].endswith("populate"):
            assert row["tool_time_over_bound"] is None
        else:
            assert set(row["tool_time_over_bound"]) == {
                f"{tool} {op}" for tool in ("img-crypt", "library")
                for op in ("encrypt null", "decrypt null")}
            assert all(v > 0 for v in row["tool_time_over_bound"].values())
    assert set(bounds["target_seconds"]) == {"img-crypt", "library"}
    assert "\n## Bounds of this machine\n" in markdown
    assert "| lower bound for encrypt to /dev/null |" in markdown
    assert "- library >= 1.25 x the ceiling: 3 MiB in at most" in markdown


def _run_result(seconds: dict[tuple[str, str, int], float]) -> dict[str, Any]:
    """A benchmark result with two runs of 2048 MiB: tool times, a 5 GB/s ceiling, bounds."""
    rows = [{"bound": "read", "run": 1, "seconds": 0.4},
            {"bound": "read", "run": 2, "seconds": 0.5},
            {"bound": "one core, from memory", "run": 1, "seconds": 0.5, "populate_s": 0.2},
            {"bound": "one core, from memory", "run": 2, "seconds": 0.45, "populate_s": 0.3},
            {"bound": "two cores, best found", "run": 1, "seconds": 0.4, "workers": 2},
            {"bound": "two cores, best found", "run": 2, "seconds": 0.6, "workers": 2}]
    return {"bounds": {"size_mib": 2048, "measurements": [r | {"size_mib": 2048}
                                                          for r in rows]},
            "ceilings": [{"run": r, "source": "cryptography AESGCM", "block": 16384,
                          "gb_s": 5.0} for r in (1, 2)],
            "measurements": [{"tool": t, "op": op, "size_mib": 2048, "run": r, "seconds": s}
                             for (t, op, r), s in seconds.items()]}


def test_bounds_lower_bound_is_the_faster_encrypting_scheme_of_each_run() -> None:
    bounds = _bench_module("bounds")
    lib = "img-crypt (library, as the Glance plugin uses it)"
    result = _run_result({(lib, "encrypt null", 1): 0.6, (lib, "encrypt null", 2): 0.9,
                          ("img-crypt", "decrypt null", 1): 0.8})
    result["bounds"] |= bounds.summary(result)
    summary = {row["bound"]: row for row in result["bounds"]["summary"]}
    assert list(summary) == BOUNDS
    lower = summary["lower bound for encrypt to /dev/null"]
    # run 1: two cores 0.4 < one core 0.5; run 2: one core 0.45 < two cores 0.6; read is not
    # an encryption and never the lower bound, the populate is information
    assert lower["per_run"] == [0.4, 0.45]
    assert result["bounds"]["lower_bound_from"] == ["two cores, best found",
                                                    "one core, from memory"]
    assert lower["seconds"] == pytest.approx(0.425)
    assert summary["one core, from memory: populate"]["per_run"] == [0.2, 0.3]
    assert summary["one core, from memory: populate"]["tool_time_over_bound"] is None
    # tool time / bound time per run, median; a tool measured in no run has no ratio
    ratios = lower["tool_time_over_bound"]
    assert ratios["library encrypt null"] == pytest.approx((0.6 / 0.4 + 0.9 / 0.45) / 2)
    assert ratios["img-crypt decrypt null"] == pytest.approx(0.8 / 0.4)
    assert ratios["library decrypt null"] is None
    assert summary["read"]["tool_time_over_bound"]["library encrypt null"] == \
        pytest.approx((0.6 / 0.4 + 0.9 / 0.5) / 2)


def test_bounds_say_whether_a_ceiling_target_is_within_reach_of_any_scheme() -> None:
    bounds = _bench_module("bounds")
    result = _run_result({})
    result["bounds"] |= bounds.summary(result)
    # 2 GiB at 1.25 x 5 GB/s: 0.3436 s allowed; at 0.8 x: 0.5369 s; lower bound 0.425 s
    targets = result["bounds"]["target_seconds"]
    assert targets["library"]["seconds"] == pytest.approx(2048 * 2**20 / 6.25e9, abs=1e-4)
    assert targets["library"]["lower_bound_over_allowed"] == pytest.approx(
        0.425 / (2048 * 2**20 / 6.25e9), abs=1e-3)
    assert targets["img-crypt"]["lower_bound_over_allowed"] < 1
    text = bounds.markdown(result)
    assert text.startswith("\n## Bounds of this machine\n")
    assert "- library >= 1.25 x the ceiling: 2048 MiB in at most 0.344 s; lower bound " \
        "0.425 s: out of reach of every scheme found, by 1.24 x." in text
    assert "- img-crypt >= 0.8 x the ceiling: 2048 MiB in at most 0.537 s; lower bound " \
        "0.425 s: within reach." in text
    assert "two cores, best found in 1 of 2 run(s)" in text
    assert bounds.markdown({"bounds": {"size_mib": 3, "measurements": []}}) == ""


def test_bounds_two_core_scheme_splits_the_blocks_into_contiguous_even_shares() -> None:
    bounds = _bench_module("bounds")
    assert bounds.shares(2048, 2) == [(0, 1024), (1024, 2048)]
    assert bounds.shares(3, 2) == [(0, 1), (1, 3)]
    assert bounds.shares(1, 3) == [(0, 0), (0, 0), (0, 1)]
    for blocks, workers in ((0, 1), (5, 1), (7, 3), (2048, 8)):
        ranges = bounds.shares(blocks, workers)
        assert len(ranges) == workers and ranges[0][0] == 0 and ranges[-1][1] == blocks
        assert all(a[1] == b[0] for a, b in pairwise(ranges))


def _cipher_on_cores(src: Path, workers: int) -> subprocess.CompletedProcess[str]:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bounds; "
            "print(json.dumps(bounds.cipher_on_cores(sys.argv[2], int(sys.argv[3]))))")
    return subprocess.run([sys.executable, "-c", code, str(REPO / "bench"), str(src),
                           str(workers)], capture_output=True, text=True, timeout=60,
                          check=False)


def test_bounds_two_core_scheme_ciphers_an_uneven_input_with_more_workers_than_blocks(
        tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.write_bytes(os.urandom(3 * 2**20 // 2 + 5))  # 1.5 MiB + 5 bytes: 2 blocks, 3 workers
    proc = _cipher_on_cores(src, 3)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["workers"] == 3 and row["seconds"] > 0


def test_bounds_two_core_scheme_fails_when_a_worker_fails(tmp_path: Path) -> None:
    proc = _cipher_on_cores(tmp_path, 2)  # a directory: the workers' preadv fails
    assert proc.returncode != 0
    assert "bounds: a worker failed: exit codes [" in proc.stderr


def test_openssl_speed_output_is_parsed() -> None:
    tools = _bench_module("_tools")
    assert tools.parse_openssl_speed(OPENSSL_SPEED_OUTPUT, 16384) == pytest.approx(4.20981528)
    with pytest.raises(ValueError):
        tools.parse_openssl_speed(OPENSSL_SPEED_OUTPUT, 1 << 20)


def test_readme_block_is_replaced_between_the_markers(tmp_path: Path) -> None:
    report = _bench_module("_report")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nrest\n")
    report.update_readme(readme, f"{report.README_START}\nnew\n{report.README_END}")
    assert readme.read_text() == (f"intro\n{report.README_START}\nnew\n{report.README_END}"
                                  "\nrest\n")
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError):
        report.update_readme(tmp_path / "bare.md", "x")


# --- bench/luks.py: the LUKS1 section, runnable alone --------------------------------------

LUKS_BENCH = REPO / "bench" / "luks.py"
LUKS_WRITERS = ["cp", "img-crypt --format luks", "qemu-img -O luks"]


def test_luks_smoke_times_cp_img_crypt_and_qemu_img_and_leaves_only_the_results(
        tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(LUKS_BENCH), "--smoke", "--out-dir", str(out),
                           "--workdir", str(work)], capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results-luks.json").read_text())
    assert (data["sizes_mib"], data["runs"]) == ([1], 1)
    assert [(r["tool"], r["size_mib"], r["run"]) for r in data["writers"]] == [
        (tool, 1, 1) for tool in LUKS_WRITERS]
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mib"] > 0
               for r in data["writers"])
    qemu = data["writers"][2]
    assert qemu["failures"] >= 0 and qemu["with_retries_s"] >= qemu["wall_s"]
    assert data["glance"] == {"skipped": "not requested (--no-glance or --smoke)"}
    for tool in LUKS_WRITERS:
        assert f"| {tool} | 1 |" in proc.stdout
    assert "calibration failure(s) in" in (out / "results-luks.md").read_text()
    assert list(work.iterdir()) == []


def test_luks_bench_retries_qemu_img_calibration_failures_and_counts_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    luks_bench, child = _bench_module("luks"), _bench_module("_child")
    outcomes = [child.BenchError("qemu-img exited with 1: Unable to get accurate CPU usage")] * 2
    done = child.Child(1.5, 10.0, "", None)

    def spawn(argv: list[str], env: dict[str, str], stdout: str | None = None) -> Any:
        if outcomes:
            raise outcomes.pop()
        return done

    monkeypatch.setattr(luks_bench, "spawn", spawn)
    dst = tmp_path / "out"
    assert luks_bench.qemu_luks(tmp_path / "in", dst, tmp_path / "s", {}) == (done, 2)
    outcomes[:] = [child.BenchError("qemu-img exited with 1: No space left on device")]
    with pytest.raises(child.BenchError, match="No space left"):
        luks_bench.qemu_luks(tmp_path / "in", dst, tmp_path / "s", {})
    outcomes[:] = [child.BenchError(luks_bench.QEMU_FLAKE)] * luks_bench.QEMU_ATTEMPTS
    with pytest.raises(child.BenchError, match="failed 10 times"):
        luks_bench.qemu_luks(tmp_path / "in", dst, tmp_path / "s", {})

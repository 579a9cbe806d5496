"""Smoke tests of bench/memory.py and bench/run.py: tiny sizes, one run, in a child process.

No timing is asserted: the benchmarks report PASS/MISS themselves.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
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
                "engine_ratios"}
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
    # the library on one thread too, for the parallel efficiency; the ceilings of the targets
    # are cryptography's one-core AES-GCM, openssl speed is information
    assert {m["op"] for m in data["measurements"]
            if m["tool"] == "img-crypt (library, 1 thread)"} == CRYPTO_OPS
    assert data["machine"]["threads"] >= 1
    efficiency = [r for r in data["engine_ratios"] if r["ratio"].startswith("parallel efficiency")]
    assert len(efficiency) == 2 and all(r["value"] > 0 for r in efficiency)
    ceiling_targets = [t["target"] for t in data["targets"] if "AES-GCM at 16 KiB" in t["target"]]
    assert len(ceiling_targets) == 4
    assert not any("openssl" in t["target"] for t in data["targets"])
    # the inputs, keys and outputs are gone
    assert list(work.iterdir()) == []


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

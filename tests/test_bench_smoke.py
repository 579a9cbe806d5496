"""Smoke test of bench/memory.py: tiny sizes, one run, in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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

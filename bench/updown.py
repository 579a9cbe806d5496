"""``img-crypt upload`` and ``download`` of a large image through a real Glance: memory, time.

Method: a real Barbican 23.0.0 and a real Glance 33.0.0 are started with the end-to-end
fixtures (``tests/servers/``; Glance configured as the README's operator recipe, plugin and
delete hook on, as ``tests/support/e2e_glance.py`` does, noauth). For each run, four children
are measured through the launcher of ``bench/_child.py`` (peak RSS = ``ru_maxrss`` from
``os.wait4``; wall time around spawn and reap), in this order:

- ``img-crypt upload``: ``img-crypt upload IN --name ... --glance-url ... --barbican-url ...``
  (a new per-image key in Barbican, encrypted while it is sent, chunked ``PUT /file``);
- ``img-crypt download``: ``img-crypt download ID OUT``; OUT is compared with IN by SHA-256;
- ``sdk create_image``: what ``openstack image create --file IN`` does, in a child: openstacksdk's
  ``conn.image.create_image(name, filename=IN, disk_format='raw', container_format='bare',
  allow_duplicates=True)`` (python-openstackclient itself is not installed here) on the same
  Glance, plaintext;
- ``sdk download_image``: what ``openstack image save --file OUT`` does:
  ``conn.image.download_image(ID, stream=True, output=OUT)``; OUT is compared with IN.

Each image is deleted after its run. Target: the upload and the download of the largest size
each peak under 64 MiB RSS. The stored image is the encrypted one (checked by its magic).

Usage: ``python bench/updown.py [--size-mib 1024] [--runs 1] [--workdir DIR] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _child import BenchError, Child, make_input, sha256_file, spawn

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = Path(__file__).resolve().parent / "work"
CLI = "from img_crypt.cli import run; run()"
PROJECT = "p-bench-updown"
RSS_LIMIT_MIB = 64.0
MAGIC = b"\x89ICR\r\n\x1a\n"
SDK = """\
import sys
from img_crypt.cli.image_api import ImageApi
url, project, op, arg = sys.argv[1:5]
image = ImageApi.noauth(url, project).connection.image
if op == "create":
    print(image.create_image("bench-sdk", filename=arg, disk_format="raw",
                             container_format="bare", allow_duplicates=True).id)
else:
    image.download_image(arg, stream=True, output=sys.argv[5])
"""
OPS = ("img-crypt upload", "img-crypt download", "sdk create_image", "sdk download_image")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _image_id(child: Child) -> str:
    """The last UUID the child printed: the image id (upload prints the key id before it)."""
    found = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                       child.output)
    if not found:
        raise BenchError(f"no image id in: {child.output[-500:]}")
    return str(found[-1])


def run_once(glance: Any, barbican_url: str, src: Path, expected: str,
             workdir: Path) -> dict[str, Child]:
    """One upload/download with img-crypt, then with openstacksdk; every output checked."""
    env, url = _env(), glance.url
    where = ["--glance-url", url, "--barbican-url", barbican_url, "--project-id", PROJECT]
    out = workdir / "updown.out"
    out.unlink(missing_ok=True)
    steps: dict[str, Child] = {}
    steps["img-crypt upload"] = spawn([sys.executable, "-c", CLI, "upload", str(src), "--name",
                                       "bench", *where], env)
    ours = _image_id(steps["img-crypt upload"])
    with (glance.store_dir / ours).open("rb") as stored:
        if stored.read(len(MAGIC)) != MAGIC:
            raise BenchError("the uploaded image is not stored encrypted")
    steps["img-crypt download"] = spawn([sys.executable, "-c", CLI, "download", ours, str(out),
                                         *where], env)
    if sha256_file(out) != expected:
        raise BenchError("img-crypt download did not give back the input")
    out.unlink()
    steps["sdk create_image"] = spawn([sys.executable, "-c", SDK, url, PROJECT, "create",
                                       str(src)], env)
    theirs = _image_id(steps["sdk create_image"])
    steps["sdk download_image"] = spawn([sys.executable, "-c", SDK, url, PROJECT, "download",
                                         theirs, str(out)], env)
    if sha256_file(out) != expected:
        raise BenchError("openstacksdk download did not give back the input")
    out.unlink()
    from tests.servers.glance import GlanceClient

    with GlanceClient(url, PROJECT) as client:
        client.delete_image(ours)
        client.delete_image(theirs)
    return steps


def measure(size_mib: int, runs: int, workdir: Path) -> dict[str, Any]:
    """Start the servers, run ``runs`` times, return every measurement and the medians."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.servers.barbican import BARBICAN_VERSION, RealBarbican
    from tests.servers.glance import GLANCE_VERSION
    from tests.support.e2e_glance import start_glance

    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"updown-{size_mib}MiB.bin"
    expected = make_input(src, size_mib)
    results: list[dict[str, Any]] = []
    try:
        with RealBarbican() as barbican:
            glance = start_glance(barbican.url)
            try:
                for number in range(1, runs + 1):
                    steps = run_once(glance, barbican.url, src, expected, workdir)
                    print(f"# run {number}/{runs}: " + ", ".join(
                        f"{op} {c.peak_rss_mib:.1f} MiB {c.wall_s:.2f} s"
                        for op, c in steps.items()), file=sys.stderr, flush=True)
                    results += [{"op": op, "run": number, "peak_rss_mib": round(c.peak_rss_mib, 2),
                                 "wall_s": round(c.wall_s, 3)} for op, c in steps.items()]
            finally:
                glance.stop()
    finally:
        src.unlink(missing_ok=True)
        src.with_name(src.name + ".sha256").unlink(missing_ok=True)
    rows = [{"op": op,
             "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results
                                               if r["op"] == op),
             "wall_s": statistics.median(r["wall_s"] for r in results if r["op"] == op)}
            for op in OPS]
    peak = max(r["peak_rss_mib"] for r in results if r["op"].startswith("img-crypt"))
    return {"size_mib": size_mib, "runs": runs, "glance": GLANCE_VERSION,
            "barbican": BARBICAN_VERSION, "cpu_count": os.cpu_count(),
            "measurements": results, "medians": rows,
            "target": {"name": f"peak RSS of img-crypt upload and download of {size_mib} MiB",
                       "limit_mib": RSS_LIMIT_MIB, "value_mib": peak,
                       "result": "PASS" if peak < RSS_LIMIT_MIB else "MISS"}}


def show(result: dict[str, Any]) -> None:
    """The medians as a Markdown table, then the target line."""
    size = result["size_mib"]
    print(f"{size} MiB through Glance {result['glance']} + Barbican {result['barbican']}, "
          f"{result['runs']} run(s), medians, {result['cpu_count']} CPUs")
    print()
    print("| operation | peak RSS (MiB) | wall (s) | MiB/s |")
    print("|---|---:|---:|---:|")
    for r in result["medians"]:
        print(f"| {r['op']} | {r['peak_rss_mib']:.1f} | {r['wall_s']:.2f} "
              f"| {size / r['wall_s']:.1f} |")
    t = result["target"]
    print()
    print(f"{t['result']}: {t['name']}: {t['value_mib']:.1f} MiB (target < "
          f"{t['limit_mib']:.0f} MiB)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it measured (PASS or MISS), 1 on any error."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size-mib", type=int, default=1024, help="image size (default 1024)")
    p.add_argument("--runs", type=int, default=1, help="runs (default 1)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"where the input goes (default {DEFAULT_WORKDIR})")
    p.add_argument("--json", type=Path, help="write the full result to this file")
    args = p.parse_args(argv)
    if args.size_mib < 1 or args.runs < 1:
        p.error("--size-mib and --runs must be at least 1")
    try:
        result = measure(args.size_mib, args.runs, args.workdir)
    except (BenchError, OSError) as e:
        print(f"updown.py: error: {e}", file=sys.stderr)
        return 1
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

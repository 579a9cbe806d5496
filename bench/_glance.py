"""A glance-direct import timed on a real Glance with and without the image_encryption plugin.

Reuses the end-to-end fixtures: a real Barbican 23.0.0 (``tests.servers.barbican``) and real
Glance 33.0.0 servers configured as ``tests/support/e2e_glance.py`` says (``glance_conf``, the
same container formats and notification drivers); they differ only in
``image_import_plugins`` and ``[image_encryption] format``. Each run stages the same file on
each, then times each import from the ``POST /v2/images/{id}/import`` until Glance released
the image (its ``os_glance_import_task`` property is gone), polling every 50 ms.
``measure`` compares no plugin with the plugin's default format (bench/run.py);
``measure_formats`` any set of formats and sizes (bench/luks.py).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLL = 0.05
TIMEOUT = 600.0
MAGIC = b"\x89ICR\r\n\x1a\n"
MAGICS = {"img-crypt-v1": MAGIC, "luks": b"LUKS\xba\xbe"}  # how each format's data starts
PROJECT = "p-bench"
Row = dict[str, Any]


def _wait(client: Any, image_id: str) -> None:
    """Poll until the import task released the image (as GlanceClient.wait_import, faster)."""
    deadline = time.monotonic() + TIMEOUT
    while (image := client.get_image(image_id)) and image.get("os_glance_import_task"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"import of {image_id} still running after {TIMEOUT:.0f} s")
        time.sleep(POLL)


def _import(server: Any, client: Any, data: Path, fmt: str | None) -> float:
    """Stage ``data``, import it, check the stored bytes are ``fmt`` (None: plain), delete the
    image; the import time."""
    image = client.create_image(name="bench", disk_format="raw", container_format="bare")
    client.stage(image["id"], data)
    start = time.perf_counter()
    client.import_image(image["id"])
    _wait(client, image["id"])
    elapsed = time.perf_counter() - start
    result = client.wait_import(image["id"])
    if (result.status, result.task_status) != ("active", "success"):
        raise RuntimeError(f"import failed: {result.status} {result.task_message}")
    with (server.store_dir / image["id"]).open("rb") as stored:
        head = stored.read(len(MAGIC))
    stored_as = next((name for name, magic in MAGICS.items() if head.startswith(magic)), None)
    if stored_as != fmt:
        raise RuntimeError(f"stored image is {stored_as or 'plain'}, not {fmt or 'plain'}")
    client.delete_image(image["id"])
    return elapsed


@contextlib.contextmanager
def _servers(formats: Mapping[str, str | None]) -> Iterator[tuple[dict[str, tuple[Any, Any]], Row]]:
    """One Barbican and one started Glance (server, client) per kind; versions."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.servers.barbican import BARBICAN_VERSION, RealBarbican
    from tests.servers.glance import GLANCE_VERSION, GlanceClient, RealGlance
    from tests.support.e2e_glance import CONTAINER_FORMATS, glance_conf

    with RealBarbican() as barbican:
        servers = {kind: RealGlance(
            plugins=["image_encryption"] if fmt else [],
            notification_drivers=["img_crypt", "log"], container_formats=CONTAINER_FORMATS,
            extra_conf=glance_conf(barbican.url, **({"format": fmt} if fmt else {})))
            for kind, fmt in formats.items()}
        clients: dict[str, Any] = {}
        try:
            for kind, server in servers.items():
                server.start()
                clients[kind] = GlanceClient(server.url, PROJECT)
            yield ({kind: (servers[kind], clients[kind]) for kind in formats},
                   {"glance": GLANCE_VERSION, "barbican": BARBICAN_VERSION})
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.stop()


def measure(data: Path, warm_up: Path, runs: int,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Median import seconds with and without the plugin, and the per-run ratios."""
    times: dict[str, list[float]] = {"plain": [], "plugin": []}
    formats = {"plain": None, "plugin": "img-crypt-v1"}
    with _servers(formats) as (pairs, versions):
        for kind, fmt in formats.items():  # first imports load the plugin, connect: untimed
            _import(*pairs[kind], warm_up, fmt)
        for run in range(1, runs + 1):
            for kind, series in times.items():
                series.append(_import(*pairs[kind], data, formats[kind]))
            log(f"glance run {run}/{runs}: without plugin {times['plain'][-1]:.2f} s, "
                f"with plugin {times['plugin'][-1]:.2f} s")
    return {"size_mib": data.stat().st_size >> 20, "runs": runs, **versions,
            "without_plugin_s": times["plain"], "with_plugin_s": times["plugin"],
            "ratios": [p / q for p, q in zip(times["plugin"], times["plain"], strict=True)]}


def measure_formats(inputs: Mapping[int, Path], warm_up: Path, runs: int,
                    formats: Mapping[str, str | None],
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Import seconds per kind (a Glance with ``[image_encryption] format`` = value, or no
    plugin for None), for every input size and run, interleaved; one warm-up import each."""
    rows: list[Row] = []
    with _servers(formats) as (pairs, versions):
        for kind, fmt in formats.items():
            _import(*pairs[kind], warm_up, fmt)
        for run in range(1, runs + 1):
            for size, data in inputs.items():
                for kind, fmt in formats.items():
                    rows.append({"kind": kind, "size_mib": size, "run": run,
                                 "seconds": round(_import(*pairs[kind], data, fmt), 3)})
                log(f"glance run {run}/{runs}, {size} MiB: " + ", ".join(
                    f"{r['kind']} {r['seconds']:.2f} s" for r in rows[-len(formats):]))
    return {**versions, "runs": runs, "imports": rows}

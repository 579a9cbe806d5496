"""A glance-direct import timed on a real Glance with and without the image_encryption plugin.

Reuses the end-to-end fixtures: a real Barbican 23.0.0 (``tests.servers.barbican``) and two
real Glance 33.0.0 servers configured as ``tests/test_e2e_glance.py`` does (``glance_conf``,
the same container formats and notification drivers); the only difference between the two is
``image_import_plugins``. Each run stages the same file on both, then times each import from
the ``POST /v2/images/{id}/import`` until Glance released the image (its
``os_glance_import_task`` property is gone), polling every 50 ms.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLL = 0.05
TIMEOUT = 600.0
MAGIC = b"\x89ICR\r\n\x1a\n"
PROJECT = "p-bench"


def _wait(client: Any, image_id: str) -> None:
    """Poll until the import task released the image (as GlanceClient.wait_import, faster)."""
    deadline = time.monotonic() + TIMEOUT
    while (image := client.get_image(image_id)) and image.get("os_glance_import_task"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"import of {image_id} still running after {TIMEOUT:.0f} s")
        time.sleep(POLL)


def _import(server: Any, client: Any, data: Path, encrypted: bool) -> float:
    """Stage ``data``, import it, check the stored bytes, delete the image; the import time."""
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
    if (head == MAGIC) != encrypted:
        raise RuntimeError(f"stored image {'not ' if encrypted else ''}encrypted")
    client.delete_image(image["id"])
    return elapsed


def measure(data: Path, warm_up: Path, runs: int,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Median import seconds with and without the plugin, and the per-run ratios."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.servers.barbican import BARBICAN_VERSION, RealBarbican
    from tests.servers.glance import GLANCE_VERSION, GlanceClient, RealGlance
    from tests.support.e2e_glance import CONTAINER_FORMATS, glance_conf

    times: dict[str, list[float]] = {"plain": [], "plugin": []}
    with RealBarbican() as barbican:
        conf = glance_conf(barbican.url)
        servers = {kind: RealGlance(plugins=["image_encryption"] if kind == "plugin" else [],
                                    notification_drivers=["img_crypt", "log"],
                                    container_formats=CONTAINER_FORMATS, extra_conf=conf)
                   for kind in times}
        try:
            for server in servers.values():
                server.start()
            clients = {kind: GlanceClient(s.url, PROJECT) for kind, s in servers.items()}
            for kind in times:  # first imports load the plugin, connect to Barbican: untimed
                _import(servers[kind], clients[kind], warm_up, kind == "plugin")
            for run in range(1, runs + 1):
                for kind, series in times.items():
                    series.append(_import(servers[kind], clients[kind], data,
                                          kind == "plugin"))
                log(f"glance run {run}/{runs}: without plugin {times['plain'][-1]:.2f} s, "
                    f"with plugin {times['plugin'][-1]:.2f} s")
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()
    return {"size_mib": data.stat().st_size >> 20, "runs": runs,
            "glance": GLANCE_VERSION, "barbican": BARBICAN_VERSION,
            "without_plugin_s": times["plain"], "with_plugin_s": times["plugin"],
            "ratios": [p / q for p, q in zip(times["plugin"], times["plain"], strict=True)]}

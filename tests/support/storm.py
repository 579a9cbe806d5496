"""The concurrency storm's shape, shared by the noauth storm and the real-auth one.

A :class:`Stormable` is a Glance to storm (a client factory) and the plaintext of each image
it staged. :class:`ConcurrentGlance` runs enough workers and threads for several plugin
instances to talk to Barbican at the same time.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from tests.servers.glance import GlanceClient, ImportResult, RealGlance
from tests.support.e2e_glance import plaintext

N = 8
"""Images per phase."""
SIZE = 192 * 1024 + 5
SQLITE_IMMEDIATE = Path(__file__).resolve().parent.parent / "servers" / "sqlite_immediate"


class ConcurrentGlance(RealGlance):
    """RealGlance with 2 gunicorn gthread workers of 8 threads (the fixture has 1 x 4).

    Its SQLite database takes the write lock at BEGIN (``tests/servers/sqlite_immediate``):
    without that, concurrent import tasks deadlock inside SQLite ("database is locked") and
    Glance leaves the image locked in ``uploading``; a production Glance uses MySQL.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(env={"PYTHONPATH": str(SQLITE_IMMEDIATE)}, **kwargs)

    def _app_args(self, venv: Path) -> list[str]:
        return ["-w", "2", "-k", "gthread", "--threads", "8", "--timeout", "120",
                "--graceful-timeout", "5", "glance.wsgi.api:application"]


class Stormable(Protocol):
    """What the storm needs: a Glance client per call, and each staged image's plaintext."""

    data: dict[str, bytes]

    def client(self) -> GlanceClient:
        """A new client of the Glance under test, as the storm's user."""
        ...


def stage(b: Stormable, count: int) -> list[str]:
    """Create and stage ``count`` images, each with its own plaintext."""
    ids: list[str] = []
    with b.client() as client:
        for _ in range(count):
            image = client.create_image(name="storm", disk_format="raw",
                                        container_format="bare")
            b.data[image["id"]] = data = plaintext(SIZE)
            client.stage(image["id"], data)
            ids.append(image["id"])
    return ids


def import_one(b: Stormable, image_id: str) -> ImportResult:
    """Import one staged image (glance-direct) and wait for its task."""
    with b.client() as client:
        client.import_image(image_id)
        return client.wait_import(image_id)


def delete_one(b: Stormable, image_id: str) -> None:
    """Delete one image."""
    with b.client() as client:
        client.delete_image(image_id)


def concurrent_imports(pool: ThreadPoolExecutor, b: Stormable,
                       ids: list[str]) -> dict[str, Future[ImportResult]]:
    """Start importing every image of ``ids`` at once."""
    return {i: pool.submit(import_one, b, i) for i in ids}


def concurrent_deletes(pool: ThreadPoolExecutor, b: Stormable, ids: list[str]) -> None:
    """Delete every image of ``ids`` at once; wait for all."""
    for f in [pool.submit(delete_one, b, i) for i in ids]:
        f.result()

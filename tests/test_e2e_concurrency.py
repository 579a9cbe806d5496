"""Concurrent imports and deletes through a real Glance 33.0.0 sharing ONE KEK (issue 6).

Set-up: Glance runs the plugin and the in-Glance delete hook with ``[image_encryption]
kek_id`` set, under gunicorn with 2 gthread workers x 8 threads; each worker runs imports in
its own 16-thread task pool, so several plugin instances talk to Barbican at the same time
(``max_in_flight`` of the proxy, asserted >= 2, shows it). Its SQLite takes the write lock
at BEGIN, or concurrent import tasks deadlock in SQLite itself (see ConcurrentGlance).
Glance reaches Barbican through ``tests.servers.counting_proxy``, a recording proxy on
127.0.0.1: it counts consumer POST/DELETE per image and every secret DELETE with its status,
and its hooks hold chosen requests to force one interleaving instead of hoping for it. The
key managers are a real Barbican 23.0.0 (microversion 1.2) and barbican_mock eras "zed"
(max 1.1) and "yoga" (1.0).

What is proven:

- ``test_storm``: 8 concurrent glance-direct imports, then 4 deletes interleaved with 4 more
  imports (every new consumer registration is held until a delete has begun), then 8
  concurrent deletes. Every consumer is registered exactly once and removed exactly once
  (proxy log, all 200) and Barbican's consumer list matches the live images after each
  phase; every image still active decrypts with ``img-crypt decrypt`` after the storm. On
  Barbican 23 with ``on_image_deletion`` no secret DELETE succeeds while an image is left
  (each answers 400) and in the last phase exactly one succeeds (204), after every removal
  (no removal got 404), so the key goes with the last image. With the default policy
  (``do_not_delete`` for a shared key) no secret DELETE is ever sent and the key stays.
- The race below microversion 1.2 (``test_a_registration_inside_the_delete_window...``):
  the delete hook's "no consumers left, delete" is two requests there (list, then DELETE,
  which a 1.0/1.1 Barbican executes WITH the consumers). Holding the delete hook's secret
  DELETE until another import registered on the key is the interleaving; without the fix
  the key went and that import stayed ``active`` with its key gone (the test then fails at
  decryption). The fix (``lifecycle._unsafe_to_delete``): where the key manager cannot
  refuse atomically (``KeyManager.delete_is_atomic`` is False: Barbican < 1.2), a key that
  is not a per-image key (name ``img-crypt-image-...``) is kept with a warning, never
  deleted: so on zed and yoga with ``on_image_deletion`` a shared key outlives its last
  image (the storm proves it too), for an operator to delete. On Barbican 23 the same
  interleaving is safe: the held DELETE answers 400 and the key stays.
- The Glance side (``test_an_import_registering_on_a_key_just_deleted_fails_cleanly``): an
  import that fetched the key but registers only after the last image's delete hook deleted
  it gets 404, and its import fails (image ``queued``, nothing stored, no consumer): no
  image becomes active under a deleted key.
- Without Glance (``test_below_1_2_the_delete_hook_keeps_a_shared_key...``): the same rule
  on barbican_mock 2026.2 / zed / yoga: per-image keys still go with their image on every
  era; a shared key goes on 1.2 only, and below 1.2 no DELETE is even sent.

Why keep rather than anything else below 1.2: a client cannot make "check, then delete"
atomic there, and after the delete nothing can be re-checked or recreated (the key bytes are
gone). Keeping a shared key costs a key an operator deletes by hand; deleting it can cost
every image registered in the window. Per-image keys have no concurrent registrant (only
their own image's import registers on them), so they keep going with their image.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from barbican_mock import MockBarbican
from img_crypt.errors import KeyNotFoundError
from img_crypt.glance import lifecycle
from img_crypt.glance import properties as props
from img_crypt.keys import naming
from img_crypt.keys.barbican import BarbicanKeyManager
from img_crypt.keys.base import Consumer, KeyManager
from img_crypt.keys.connect import connect
from tests.servers.counting_proxy import CountingProxy, Exchange
from tests.servers.glance import GlanceClient, ImportResult
from tests.support.cli import cli
from tests.support.e2e_glance import CONTAINER_FORMATS, glance_conf
from tests.support.storm import (
    ConcurrentGlance,
    N,
    concurrent_deletes,
    concurrent_imports,
    delete_one,
    import_one,
    stage,
)

PROJECT = "p-concurrency"
LATENCY = 0.02  # seconds the proxy adds to each storm request, so requests overlap
HOLD = 30.0  # longest a hook holds a request


@dataclass
class Backend:
    """A Barbican (real or mock), the proxy Glance uses, one shared KEK, and Glance."""

    url: str
    proxy: CountingProxy
    kek: str
    glance: ConcurrentGlance
    km: BarbicanKeyManager
    data: dict[str, bytes] = field(default_factory=dict)

    def client(self) -> GlanceClient:
        return GlanceClient(self.glance.url, PROJECT)

    def key_exists(self) -> bool:
        try:
            self.km.key_info(self.kek)
        except KeyNotFoundError:
            return False
        return True

    def consumers(self) -> set[str]:
        return {c.resource_id for c in self.km.list_consumers(self.kek)}


@pytest.fixture
def open_backend(real_barbican: Any) -> Iterator[Callable[[str, str | None], Backend]]:
    """``open_backend(era, policy)``: "23" is the real Barbican, else a barbican_mock era."""
    stack: list[Callable[[], None]] = []

    def open_(era: str, policy: str | None) -> Backend:
        if era == "23":
            url = str(real_barbican.url)
        else:
            mock = MockBarbican(era=era).start()
            stack.append(mock.stop)
            url = mock.url
        proxy = CountingProxy(url).start()
        stack.append(proxy.stop)
        km = connect(url=url, project_id=PROJECT, backoff=0)
        kek = km.create_key("img-crypt-shared-kek")
        stack.append(lambda: _drop_key(km, kek))
        options = {"kek_id": kek} | ({"key_deletion_policy": policy} if policy else {})
        glance = ConcurrentGlance(plugins=["image_encryption"],
                                  notification_drivers=["img_crypt", "log"],
                                  container_formats=CONTAINER_FORMATS,
                                  extra_conf=glance_conf(proxy.url, **options))
        stack.append(glance.stop)
        glance.start()
        return Backend(url, proxy, kek, glance, km)

    yield open_
    for close in reversed(stack):
        close()


def _drop_key(km: BarbicanKeyManager, kek: str) -> None:
    with contextlib.suppress(KeyNotFoundError):
        km.delete_key(kek, force=True)


# --- Glance operations, one client per thread --------------------------------------------------


def assert_active(b: Backend, results: dict[str, ImportResult]) -> None:
    for image_id, result in results.items():
        assert (result.status, result.task_status) == ("active", "success"), \
            (image_id, result.task_message)
        assert result.image["os_encrypt_key_id"] == b.kek


def assert_decrypts(b: Backend, image_ids: list[str], tmp: Path) -> None:
    """Download each image and decrypt it with the img-crypt CLI; it is its own plaintext."""
    with b.client() as client:
        for image_id in image_ids:
            enc, out = tmp / f"{image_id}.icr", tmp / f"{image_id}.raw"
            client.download(image_id, enc)
            run = cli("decrypt", str(enc), str(out), "--force", "--key-manager", "barbican",
                      "--barbican-url", b.url, "--project-id", PROJECT,
                      "--image-id", image_id)
            assert run.code == 0, (image_id, run.err)
            assert out.read_bytes() == b.data[image_id], image_id


# --- counting what reached Barbican -------------------------------------------------------------


def consumer_calls(log: list[Exchange], kek: str, method: str) -> Counter[str | None]:
    return Counter(e.resource_id for e in log if e.is_(method, "consumer", kek))


def secret_deletes(log: list[Exchange], kek: str) -> list[int]:
    return [e.status for e in log if e.is_("DELETE", "secret", kek)]


def assert_exactly_once(log: list[Exchange], kek: str, method: str, ids: list[str]) -> None:
    """One ``method`` consumer call per image, each answered 200, and no other."""
    assert consumer_calls(log, kek, method) == Counter(ids), method
    assert all(e.status == 200 for e in log if e.is_(method, "consumer", kek)), \
        [(e.resource_id, e.status) for e in log if e.is_(method, "consumer", kek)]


def latency(_: Exchange) -> None:
    time.sleep(LATENCY)


# --- the storm ----------------------------------------------------------------------------------


@dataclass
class Tally:
    imports: int = 0
    deletes: int = 0
    posts: int = 0
    removals: int = 0
    secret_deletes: list[int] = field(default_factory=list)
    max_in_flight: list[int] = field(default_factory=list)

    def add(self, b: Backend) -> None:
        log = b.proxy.log()
        self.posts += sum(consumer_calls(log, b.kek, "POST").values())
        self.removals += sum(consumer_calls(log, b.kek, "DELETE").values())
        self.secret_deletes += secret_deletes(log, b.kek)
        self.max_in_flight.append(b.proxy.max_in_flight)
        b.proxy.clear()


STORMS = [
    pytest.param("23", "on_image_deletion", False, id="barbican23-on_image_deletion-kept"),
    pytest.param("23", None, False, id="barbican23-default-policy"),
    pytest.param("zed", "on_image_deletion", False, id="zed-on_image_deletion-kept"),
]


@pytest.mark.parametrize(("era", "policy", "key_goes"), STORMS)
def test_storm(open_backend: Callable[[str, str | None], Backend], tmp_path: Path,
               era: str, policy: str | None, key_goes: bool) -> None:
    b = open_backend(era, policy)
    kek, tally = b.kek, Tally()
    # the configured kek_id is never deleted, whatever the images' policy: no DELETE is sent
    with ThreadPoolExecutor(max_workers=2 * N) as pool:
        # Phase 1: N concurrent imports.
        first = stage(b, N)
        b.proxy.clear()
        with b.proxy.hooks(before=latency):
            results = {i: f.result() for i, f in concurrent_imports(pool, b, first).items()}
        assert_active(b, results)
        log = b.proxy.log()
        assert_exactly_once(log, kek, "POST", first)
        assert_exactly_once(log, kek, "DELETE", [])
        assert secret_deletes(log, kek) == []
        assert b.proxy.max_in_flight >= 2, "the plugin never ran twice at the same time"
        assert b.consumers() == set(first)
        tally.imports += N
        tally.add(b)

        # Phase 2: delete half while as many new imports register.
        gone, kept = first[: N // 2], first[N // 2:]
        new = stage(b, N // 2)
        b.proxy.clear()
        registering, deleting = threading.Event(), threading.Event()

        def hold_registrations(e: Exchange) -> None:
            latency(e)
            if e.is_("DELETE", "consumer", kek):
                deleting.set()
            elif e.is_("POST", "consumer", kek):
                registering.set()
                assert deleting.wait(HOLD), "no delete reached Barbican"

        with b.proxy.hooks(before=hold_registrations):
            imports = concurrent_imports(pool, b, new)
            assert registering.wait(HOLD), "no import reached Barbican"
            deletes = [pool.submit(delete_one, b, i) for i in gone]
            for f in deletes:
                f.result()
            results = {i: f.result() for i, f in imports.items()}
        assert_active(b, results)
        log = b.proxy.log()
        assert_exactly_once(log, kek, "POST", new)
        assert_exactly_once(log, kek, "DELETE", gone)
        removal_start = min(e.started for e in log if e.is_("DELETE", "consumer", kek))
        assert any(e.ended > removal_start for e in log if e.is_("POST", "consumer", kek))
        assert secret_deletes(log, kek) == []
        survivors = kept + new
        assert b.consumers() == set(survivors)
        assert_decrypts(b, survivors, tmp_path)
        tally.imports += len(new)
        tally.deletes += len(gone)
        tally.add(b)

        # Phase 3: delete every survivor at once.
        with b.proxy.hooks(before=latency):
            concurrent_deletes(pool, b, survivors)
    log = b.proxy.log()
    assert_exactly_once(log, kek, "POST", [])
    assert_exactly_once(log, kek, "DELETE", survivors)  # all 200: each before the key went
    assert secret_deletes(log, kek) == []
    assert b.key_exists() is not key_goes
    if not key_goes:
        assert b.consumers() == set()
    if policy == "on_image_deletion":
        assert "([image_encryption] kek_id)" in b.glance.log_text()
    tally.deletes += len(survivors)
    tally.add(b)
    print(f"\n[{era} {policy or 'default'}] imports={tally.imports} deletes={tally.deletes} "
          f"consumer POST={tally.posts} consumer DELETE={tally.removals} "
          f"secret DELETE statuses={Counter(tally.secret_deletes)} "
          f"max in flight per phase={tally.max_in_flight} key deleted={not b.key_exists()}")


# --- one forced interleaving each ---------------------------------------------------------------


def import_alone(b: Backend) -> str:
    [image_id] = stage(b, 1)
    result = import_one(b, image_id)
    assert_active(b, {image_id: result})
    return image_id


@pytest.mark.parametrize("era", ["23", "zed", "yoga"])
def test_a_registration_inside_the_delete_window_never_loses_its_key(
        open_backend: Callable[[str, str | None], Backend], tmp_path: Path, era: str) -> None:
    """Image A (policy on_image_deletion) was the last consumer of the configured shared key.

    A secret DELETE, if the hook sent one, would be held until image B's import registered
    on the key. The hook before issue 11 sent it (zed/yoga: Barbican took B's key with it;
    23: refused, 400); the configured kek_id is now never deleted, so none is sent. B decrypts.
    """
    b = open_backend(era, "on_image_deletion")
    a = import_alone(b)
    [image_b] = stage(b, 1)
    b.proxy.clear()
    pending, registered = threading.Event(), threading.Event()

    def before(e: Exchange) -> None:
        if e.is_("DELETE", "secret", b.kek):
            pending.set()
            assert registered.wait(HOLD), "B never registered"

    def after(e: Exchange) -> None:
        if e.is_("POST", "consumer", b.kek) and e.resource_id == image_b:
            registered.set()

    with ThreadPoolExecutor(max_workers=1) as pool, b.proxy.hooks(before, after):
        deleting = pool.submit(delete_one, b, a)
        while not (pending.is_set() or deleting.done()):
            time.sleep(0.02)
        result = import_one(b, image_b)  # inside the window when a DELETE is held
        deleting.result()
    assert_active(b, {image_b: result})  # B is active (the unfixed hook: with no key)
    assert_decrypts(b, [image_b], tmp_path)
    assert b.consumers() == {image_b}
    assert secret_deletes(b.proxy.log(), b.kek) == [], "the configured key's delete was sent"
    assert "([image_encryption] kek_id)" in b.glance.log_text()


def test_an_import_racing_the_delete_hook_of_the_configured_key_keeps_its_key(
        open_backend: Callable[[str, str | None], Backend]) -> None:
    """B imports while A's delete hook runs: the configured key stays, B is registered on it."""
    b = open_backend("23", "on_image_deletion")
    a = import_alone(b)
    [image_b] = stage(b, 1)
    b.proxy.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        importing = pool.submit(import_one, b, image_b)
        delete_one(b, a)
        result = importing.result()
    assert_active(b, {image_b: result})
    assert secret_deletes(b.proxy.log(), b.kek) == []
    assert b.key_exists() and b.consumers() == {image_b}


# --- the fix without Glance -----------------------------------------------------------------------


@pytest.mark.parametrize(("era", "atomic"), [("2026.2", True), ("zed", False), ("yoga", False)])
def test_below_1_2_the_delete_hook_keeps_a_shared_key_and_still_deletes_a_per_image_one(
        era: str, atomic: bool) -> None:
    with MockBarbican(era=era) as mock:
        km = connect(url=mock.url, project_id=PROJECT, backoff=0)
        assert km.delete_is_atomic is atomic
        outcomes: dict[str, lifecycle.Outcome | None] = {}
        for name in ("img-crypt-shared-kek", naming.PER_IMAGE_KEY_PREFIX):
            image_id = str(uuid.uuid4())
            key_id = km.create_key(name if "shared" in name else f"{name}{image_id}")
            km.add_consumer(key_id, Consumer("image", "image", image_id))
            image = {"id": image_id, "owner": PROJECT, "properties": {
                props.KEY_ID: key_id, props.DELETION_POLICY: props.ON_IMAGE_DELETION}}

            def manager_for(owner: str | None) -> KeyManager:
                return km

            outcomes[name] = lifecycle.on_image_delete(image, manager_for, service="image")
        shared, per_image = outcomes.values()
        assert shared is not None and per_image is not None
        assert per_image.key_deleted
        assert shared.consumer_removed and shared.key_deleted is atomic
        if not atomic:
            assert "below Barbican microversion 1.2" in shared.note
            assert shared.key_id in {s["id"] for s in mock.secrets(PROJECT)}
            assert not any(m == "DELETE" and p.rstrip("/").endswith(shared.key_id)
                           for m, p, _ in mock.requests_log())

"""The 8-way concurrency storm under real authentication (the noauth storm, with its shared KEK
and its forced interleavings, is tests/test_e2e_concurrency.py; both use tests/support/storm.py).

A Glance with 2 gunicorn workers x 8 threads, configured with README.md's Glance block exactly
as the real cloud's (Keystone, Barbican 23 with its shipped default policies), reaches Barbican
through a recording proxy. alice, a member of project A, imports and deletes with her token:
no ``kek_id``, so each import makes its own per-image key (policy ``on_image_deletion``) in
project A, acting as alice. Phase 1: 8 concurrent imports. Phase 2: 4 deletes while 4 more
imports run. Phase 3: the 8 survivors deleted at once. After each phase every live image's
key holds exactly its consumer and every deleted image's key is gone, each consumer was
registered and removed exactly once (all 200), every secret DELETE answered 204 after its
consumer's removal, and nothing fell back to the service credentials.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from img_crypt.keys.barbican import BarbicanKeyManager
from tests.servers.cloud import Cloud
from tests.servers.counting_proxy import CountingProxy, Exchange
from tests.servers.glance import GlanceClient, ImportResult
from tests.support.cli import cli
from tests.support.listener_proc import wait_for
from tests.support.realauth import barbican_as, image_consumer, key_gone, use_credentials_of
from tests.support.storm import (
    ConcurrentGlance,
    N,
    concurrent_deletes,
    concurrent_imports,
    stage,
)

CLEANUP_TIMEOUT = 60.0


@dataclass
class AliceStorm:
    """The storm's Glance (through ``proxy`` to the cloud's Barbican), used as alice."""

    cloud: Cloud
    glance: ConcurrentGlance
    proxy: CountingProxy
    data: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    """image id -> its per-image key id."""

    def client(self) -> GlanceClient:
        return GlanceClient(self.glance.url, self.cloud.a.project_id, token=self.cloud.a.token())

    def alice(self) -> BarbicanKeyManager:
        return barbican_as(self.cloud, self.cloud.a.token())


@pytest.fixture
def storm(real_cloud: Cloud) -> Iterator[AliceStorm]:
    proxy = CountingProxy(real_cloud.barbican.url).start()
    conf, count = re.subn(r"^barbican_endpoint = .*$", f"barbican_endpoint = {proxy.url}",
                          real_cloud.glance_conf, flags=re.M)
    assert count == 1, "the README's Glance block names barbican_endpoint once"
    glance = ConcurrentGlance(notification_drivers=(), extra_conf=conf,
                              keystone=real_cloud.glance_user)
    try:
        glance.start()
        yield AliceStorm(real_cloud, glance, proxy)
    finally:
        glance.stop()
        proxy.stop()


def calls(log: list[Exchange], method: str, kind: str) -> list[Exchange]:
    return [e for e in log if e.method == method and e.route[0] == kind]


def assert_phase(s: AliceStorm, *, imported: list[str], deleted: list[str]) -> None:
    """The proxy's log of one phase, and Barbican's state after it (as alice sees it).

    A delete returns once the hook's budget is spent; its cleanup may go on in the
    background, so this first waits (at most CLEANUP_TIMEOUT) for the deleted images' keys.
    """
    wait_for("the deleted images' keys are gone",
             lambda: all(key_gone(s.cloud, s.keys[i]) for i in deleted), CLEANUP_TIMEOUT,
             s.glance.log_text)
    log = s.proxy.log()
    posts, removals = calls(log, "POST", "consumer"), calls(log, "DELETE", "consumer")
    assert Counter(e.resource_id for e in posts) == Counter(imported)
    assert Counter(e.resource_id for e in removals) == Counter(deleted)
    assert {e.status for e in posts + removals} <= {200}, \
        [(e.method, e.resource_id, e.status) for e in posts + removals]
    secret_deletes = calls(log, "DELETE", "secret")
    assert sorted(e.route[1] or "" for e in secret_deletes) == sorted(s.keys[i] for i in deleted)
    assert {e.status for e in secret_deletes} <= {204}
    for e in secret_deletes:  # each key went after its image's consumer was removed
        [removal] = [r for r in removals if s.keys[r.resource_id or ""] == e.route[1]]
        assert removal.ended <= e.started
    s.proxy.clear()


def assert_imported(s: AliceStorm, results: dict[str, ImportResult]) -> None:
    alice = s.alice()
    for image_id, result in results.items():
        assert (result.status, result.task_status) == ("active", "success"), \
            (image_id, result.task_message)
        key_id = s.keys[image_id] = str(result.image["os_encrypt_key_id"])
        assert result.image["os_encrypt_key_deletion_policy"] == "on_image_deletion"
        assert alice.key_info(key_id).name == f"img-crypt-image-{image_id}"
        assert alice.list_consumers(key_id) == [image_consumer(image_id)]
    assert len({s.keys[i] for i in results}) == len(results), "a key shared by two imports"


def assert_decrypts_as_alice(s: AliceStorm, image_ids: list[str], tmp: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    use_credentials_of(monkeypatch, s.cloud.a)
    with s.client() as client:
        for image_id in image_ids:
            enc, out = tmp / f"{image_id}.icr", tmp / f"{image_id}.raw"
            client.download(image_id, enc)
            run = cli("decrypt", str(enc), str(out), "--key-manager", "barbican",
                      "--image-id", image_id)
            assert run.code == 0, (image_id, run.err)
            assert out.read_bytes() == s.data[image_id], image_id


def test_eight_concurrent_imports_and_deletes_by_a_member_leave_keys_and_consumers_as_policy_says(
        storm: AliceStorm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = storm
    with ThreadPoolExecutor(max_workers=2 * N) as pool:
        first = stage(s, N)
        s.proxy.clear()
        assert_imported(s, {i: f.result() for i, f in concurrent_imports(pool, s, first).items()})
        assert s.proxy.max_in_flight >= 2, "the plugin never ran twice at the same time"
        assert_phase(s, imported=first, deleted=[])

        gone, kept = first[: N // 2], first[N // 2:]
        new = stage(s, N // 2)
        s.proxy.clear()
        imports = concurrent_imports(pool, s, new)
        concurrent_deletes(pool, s, gone)
        assert_imported(s, {i: f.result() for i, f in imports.items()})
        assert_phase(s, imported=new, deleted=gone)
        survivors = kept + new
        assert_decrypts_as_alice(s, survivors, tmp_path, monkeypatch)

        concurrent_deletes(pool, s, survivors)
        assert_phase(s, imported=[], deleted=survivors)
    left = {k.name for k in s.alice().list_keys()}
    assert not left & {f"img-crypt-image-{i}" for i in s.keys}
    log = s.glance.log_text()
    assert "trying the service credentials" not in log
    assert not re.findall(r"(?:consumer registration|key cleanup) .* failed", log)
    assert "key manager unavailable" not in log  # nothing was retried

"""Parity: with the plugin, a real Glance 33.0.0 accepts and refuses the same images as without.

Real Glances for the whole module: one as shipped (no import plugin), and two with ours
(``format`` img-crypt-v1 and luks) in front of the real Barbican 23.0.0 through a recording
proxy. Each crafted image (tests/support/crafted_images.py) is imported with glance-direct into
Glance alone and the img-crypt-v1 one; the images Glance refuses into the luks one too (it
takes only raw and qcow2 disks, by design). Glance alone
inspects the plaintext as it stores it; with the plugin only the ciphertext reaches the store,
so the plugin must have applied the same rules, with the same messages, before any key or
consumer existed, and recorded the same ``virtual_size``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.counting_proxy import CountingProxy, Exchange
from tests.servers.glance import GlanceClient, ImportResult, RealGlance
from tests.support.crafted_images import CASES, Case
from tests.support.e2e_glance import CONTAINER_FORMATS, PROJECT, plugin_glance

REFUSED = [case for case in CASES if not case.accepted]


@dataclass
class Glances:
    """Glance as shipped, Glance with the plugin (each output format), the proxy in front of
    the plugin's Barbican."""

    alone: RealGlance
    plugin: RealGlance
    luks: RealGlance
    barbican: CountingProxy


@pytest.fixture(scope="module")
def glances(real_barbican: Any) -> Iterator[Glances]:
    with CountingProxy(real_barbican.url) as proxy, contextlib.ExitStack() as stack:
        glances = Glances(alone=RealGlance(container_formats=CONTAINER_FORMATS),
                          plugin=plugin_glance(proxy.url),
                          luks=plugin_glance(proxy.url, format="luks"), barbican=proxy)
        servers = [glances.alone, glances.plugin, glances.luks]
        for server in servers:
            stack.callback(server.stop)
        with ThreadPoolExecutor(len(servers)) as pool:  # about 6 s each, in parallel
            list(pool.map(RealGlance.start, servers))
        yield glances


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every case's image file, built once (each in its own directory)."""
    root = tmp_path_factory.mktemp("crafted")
    built = {}
    for number, case in enumerate(CASES):
        directory = root / str(number)
        directory.mkdir()
        built[case.name] = case.build(directory)
    return built


@dataclass
class Outcome:
    """One image imported into each Glance (the luks one only gets the refused images)."""

    alone: ImportResult
    plugin: ImportResult
    luks: ImportResult | None


def import_all(glance: RealGlance, images: dict[str, Path],
               cases: Sequence[Case] = CASES) -> dict[str, ImportResult]:
    """Import each case, one after the other (one SQLite Glance runs one import at a time)."""
    results = {}
    with GlanceClient(glance.url, PROJECT) as client:
        for case in cases:
            created = client.create_image(name=case.name, disk_format=case.disk_format,
                                          container_format=case.container_format)
            client.stage(created["id"], images[case.name])
            client.import_image(created["id"])
            results[case.name] = finished(client, created["id"])
    return results


def finished(client: GlanceClient, image_id: str) -> ImportResult:
    """The import once its task has ended too (Glance releases the image a moment before)."""
    deadline = time.monotonic() + 30
    while True:
        result = client.wait_import(image_id)
        if result.task_status in ("success", "failure") or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def outcomes(glances: Glances, images: dict[str, Path]) -> dict[str, Outcome]:
    """Every case imported into each Glance (each Glance in its own thread)."""
    with ThreadPoolExecutor(3) as pool:
        alone = pool.submit(import_all, glances.alone, images)
        plugin = pool.submit(import_all, glances.plugin, images)
        luks = pool.submit(import_all, glances.luks, images, REFUSED)
        return {name: Outcome(result, plugin.result()[name], luks.result().get(name))
                for name, result in alone.result().items()}


def accepted(result: ImportResult) -> bool:
    return (result.status, result.task_status) == ("active", "success")


def mentions(exchange: Exchange, image_id: str) -> bool:
    """Whether a Barbican request names the image (its key's name, a consumer)."""
    return image_id.encode() in exchange.body or image_id in exchange.path


@pytest.mark.parametrize("case", CASES, ids=str)
def test_glance_with_the_plugin_accepts_and_refuses_each_image_as_glance_alone_does(
        case: Case, outcomes: dict[str, Outcome], glances: Glances,
        images: dict[str, Path]) -> None:
    alone, encrypted = outcomes[case.name].alone, outcomes[case.name].plugin
    assert accepted(alone) is case.accepted, alone.task_message
    assert accepted(encrypted) is case.accepted, encrypted.task_message
    if case.accepted:
        expected = case.expected_virtual_size(images[case.name])
        assert alone.image["virtual_size"] == expected
        assert encrypted.image["virtual_size"] == expected
        assert encrypted.image["os_encrypt_format"] == "img-crypt-v1"
        assert any(mentions(e, encrypted.image["id"]) for e in glances.barbican.log())
        return
    assert_refused_as_glance_alone_does(case, alone, encrypted, glances)


@pytest.mark.parametrize("case", REFUSED, ids=str)
def test_glance_with_the_luks_output_refuses_each_image_glance_alone_refuses(
        case: Case, outcomes: dict[str, Outcome], glances: Glances) -> None:
    alone, encrypted = outcomes[case.name].alone, outcomes[case.name].luks
    assert encrypted is not None
    assert_refused_as_glance_alone_does(case, alone, encrypted, glances)


def assert_refused_as_glance_alone_does(case: Case, alone: ImportResult,
                                        encrypted: ImportResult, glances: Glances) -> None:
    # Glance alone leaves a refused image "importing"; the plugin's revert requeues it
    assert (alone.status, encrypted.status) == ("importing", "queued")
    assert alone.task_status == encrypted.task_status == "failure"
    # Glance alone fails the task with a generic message and logs why; with the plugin the
    # task says why, in the same words
    assert alone.task_message == "Task failed due to Internal Error"
    assert encrypted.task_message == case.message
    assert alone.task is not None
    logged = f"Task {alone.task['id']} failed with exception {encrypted.task_message}: "
    assert logged in glances.alone.log_text()
    # refused before any key or consumer was made
    assert not any(mentions(e, encrypted.image["id"]) for e in glances.barbican.log())

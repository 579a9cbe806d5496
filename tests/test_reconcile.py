"""``img-crypt reconcile``: the safety net for lost Glance delete notifications.

``reconcile()`` runs on the local key store with a fake image_state; ``GlanceImages`` against
``responses``; the CLI against barbican_mock (eras 2026.2 and yoga) and a small stub Glance on
127.0.0.1, counting what is left in the mock afterwards.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from barbican_mock import MockBarbican
from img_crypt.cli.args import grace_period
from img_crypt.errors import UnavailableError
from img_crypt.glance.images import GlanceError, GlanceImages
from img_crypt.keys.base import Consumer
from img_crypt.keys.connect import connect
from img_crypt.keys.local import LocalKeyStore
from img_crypt.keys.naming import PER_IMAGE_KEY_PREFIX, image_of_key, per_image_key_name
from img_crypt.reconcile import (
    ImageState,
    KeptKey,
    RemovedConsumer,
    Report,
    UnknownImage,
    reconcile,
)
from img_crypt.retention import DEFAULT_GRACE
from tests.support.cli import cli

EXISTS, GONE, UNKNOWN = ImageState.EXISTS, ImageState.GONE, ImageState.UNKNOWN
LATER = datetime.now(UTC) + timedelta(days=30)
"""A reconcile run this far ahead sees every record made by a test as past its grace period."""


def new_id() -> str:
    return str(uuid.uuid4())


def image(image_id: str, service: str = "image", resource_type: str = "image") -> Consumer:
    return Consumer(service=service, resource_type=resource_type, resource_id=image_id)


class FakeGlance:
    """image_state from a dict; unlisted images exist. Records every question."""

    def __init__(self, states: dict[str, ImageState] | None = None) -> None:
        self.states = states or {}
        self.asked: list[str] = []
        self.hook: Callable[[str], None] = lambda image_id: None

    def __call__(self, image_id: str) -> ImageState:
        self.asked.append(image_id)
        self.hook(image_id)
        return self.states.get(image_id, EXISTS)


def key_with(store: LocalKeyStore, name: str | None, *consumers: Consumer) -> str:
    key_id = store.create_key(name=name)
    for consumer in consumers:
        store.add_consumer(key_id, consumer)
    return key_id


def per_image_key(store: LocalKeyStore, image_id: str, *more: Consumer) -> str:
    return key_with(store, f"{PER_IMAGE_KEY_PREFIX}{image_id}", image(image_id), *more)


def keys(store: LocalKeyStore) -> set[str]:
    return {k.key_id for k in store.list_keys()}


def run(store: LocalKeyStore, glance: Callable[[str], ImageState], *,
        dry_run: bool = False, service: str = "image") -> Report:
    return reconcile(store, glance, service=service, dry_run=dry_run, now=LATER)


# --- reconcile() -----------------------------------------------------------------------------

def test_a_live_image_keeps_its_consumer_and_its_key(store: LocalKeyStore) -> None:
    img = new_id()
    key = per_image_key(store, img)
    report = run(store, FakeGlance({img: EXISTS}))
    assert report == Report(checked=1)
    assert report.decided
    assert store.list_consumers(key) == [image(img)]


def test_a_gone_image_loses_its_consumer_and_its_per_image_key(store: LocalKeyStore) -> None:
    img, live = new_id(), new_id()
    key = per_image_key(store, img)
    other = per_image_key(store, live)
    report = run(store, FakeGlance({img: GONE}))
    assert report.removed == [RemovedConsumer(key, img)]
    assert report.deleted == [key]
    assert report.kept == [] and report.unknown == [] and report.checked == 2
    assert keys(store) == {other}


def test_an_unknown_image_skips_the_whole_key(store: LocalKeyStore) -> None:
    gone, unsure = new_id(), new_id()
    key = per_image_key(store, gone, image(unsure))
    report = run(store, FakeGlance({gone: GONE, unsure: UNKNOWN}))
    assert report.removed == [] and report.deleted == []
    assert report.unknown == [UnknownImage(unsure, key)]
    assert report.kept == [KeptKey(key, f"state of image(s) {unsure} unknown; nothing removed")]
    assert not report.decided
    assert store.list_consumers(key) == [image(gone), image(unsure)]


def test_dry_run_reports_but_changes_nothing(store: LocalKeyStore) -> None:
    img = new_id()
    key = per_image_key(store, img)
    report = run(store, FakeGlance({img: GONE}), dry_run=True)
    assert report.dry_run
    assert report.removed == [RemovedConsumer(key, img)] and report.deleted == [key]
    assert keys(store) == {key}
    assert store.list_consumers(key) == [image(img)]


@pytest.mark.parametrize("name", [None, "backup", "img-crypt-kept-5ed1f71a-a9b9-4803",
                                  f"x-{PER_IMAGE_KEY_PREFIX}"])
def test_a_key_without_the_per_image_prefix_is_kept(store: LocalKeyStore,
                                                    name: str | None) -> None:
    img = new_id()
    key = key_with(store, name, image(img))
    report = run(store, FakeGlance({img: GONE}))
    assert report.removed == [RemovedConsumer(key, img)] and report.deleted == []
    assert [k.key_id for k in report.kept] == [key]
    assert "not a per-image key" in report.kept[0].reason
    assert keys(store) == {key} and store.list_consumers(key) == []


def test_a_per_image_key_with_a_live_consumer_left_is_kept(store: LocalKeyStore) -> None:
    gone, live = new_id(), new_id()
    key = per_image_key(store, gone, image(live))
    report = run(store, FakeGlance({gone: GONE, live: EXISTS}))
    assert report.removed == [RemovedConsumer(key, gone)] and report.deleted == []
    assert report.kept == [KeptKey(key, "1 consumer(s) remain")]
    assert store.list_consumers(key) == [image(live)]


def test_consumers_of_another_service_or_type_are_untouched(store: LocalKeyStore) -> None:
    gone = new_id()
    theirs = [image(gone, service="glance"), image(gone, resource_type="volume")]
    key = per_image_key(store, gone, *theirs)
    glance = FakeGlance({gone: GONE})
    report = run(store, glance)
    assert glance.asked == [gone]
    assert report.removed == [RemovedConsumer(key, gone)] and report.deleted == []
    assert report.kept == [KeptKey(key, "2 consumer(s) remain")]
    assert store.list_consumers(key) == theirs


def test_the_consumer_service_is_configurable(store: LocalKeyStore) -> None:
    gone = new_id()
    key = key_with(store, f"{PER_IMAGE_KEY_PREFIX}{gone}", image(gone, service="glance"))
    assert run(store, FakeGlance({gone: GONE})) == Report(checked=1)
    report = run(store, FakeGlance({gone: GONE}), service="glance")
    assert report.deleted == [key] and keys(store) == set()


def test_keys_without_image_consumers_are_not_deleted(store: LocalKeyStore) -> None:
    key_with(store, f"{PER_IMAGE_KEY_PREFIX}{new_id()}")  # e.g. an upload still under way
    report = run(store, FakeGlance())
    assert report == Report(checked=1) and len(keys(store)) == 1


def test_a_new_consumer_during_the_run_keeps_the_key(tmp_path: Path) -> None:
    newcomer = image(new_id())

    class Racing(LocalKeyStore):
        def remove_consumer(self, key_id: str, consumer: Consumer) -> None:
            super().remove_consumer(key_id, consumer)
            self.add_consumer(key_id, newcomer)  # an upload reused the key meanwhile

    store = Racing(tmp_path / "keys")
    gone = new_id()
    key = per_image_key(store, gone)
    report = run(store, FakeGlance({gone: GONE}))
    assert report.removed == [RemovedConsumer(key, gone)] and report.deleted == []
    assert report.kept == [KeptKey(key, "other consumers remain")]
    assert store.list_consumers(key) == [newcomer]


def test_a_consumer_removed_by_someone_else_still_lets_the_key_go(store: LocalKeyStore) -> None:
    gone = new_id()
    key = per_image_key(store, gone)
    glance = FakeGlance({gone: GONE})
    glance.hook = lambda image_id: store.remove_consumer(key, image(image_id))  # the hook won
    report = run(store, glance)
    assert report.removed == [RemovedConsumer(key, gone, already_removed=True)]
    assert report.deleted == [key] and keys(store) == set()


def test_a_key_deleted_by_someone_else_during_the_run_is_reported(store: LocalKeyStore) -> None:
    gone = new_id()
    key = per_image_key(store, gone)
    glance = FakeGlance({gone: GONE})
    glance.hook = lambda image_id: store.delete_key(key, force=True)
    report = run(store, glance)
    assert report.removed == [] and report.deleted == []
    assert report.kept == [KeptKey(key, "the key disappeared during the run")]


def test_each_image_is_asked_about_once(store: LocalKeyStore) -> None:
    gone = new_id()
    first = per_image_key(store, gone)
    second = key_with(store, f"{PER_IMAGE_KEY_PREFIX}{gone}", image(gone))  # two KEKs, one image
    glance = FakeGlance({gone: GONE})
    report = run(store, glance)
    assert glance.asked == [gone]
    assert sorted(report.deleted) == sorted([first, second])


def test_a_key_manager_error_ends_the_run_and_leaves_the_partial_report(
        store: LocalKeyStore) -> None:
    first, second = new_id(), new_id()
    key = per_image_key(store, first)
    per_image_key(store, second)
    glance = FakeGlance({first: GONE, second: GONE})

    def fail_on_second(image_id: str) -> None:
        if image_id == second:
            raise UnavailableError("Barbican went away")

    glance.hook = fail_on_second
    report = Report()
    with pytest.raises(UnavailableError):
        reconcile(store, glance, service="image", dry_run=False, report=report, now=LATER)
    assert report.removed == [RemovedConsumer(key, first)] and report.deleted == [key]
    assert report.checked == 2
    assert json.loads(json.dumps(report.as_dict()))["deleted"] == [key]


# --- GlanceImages ----------------------------------------------------------------------------

GLANCE = "http://glance.test:9292"


def img_url(image_id: str) -> str:
    return f"{GLANCE}/v2/images/{image_id}"


@pytest.fixture
def glance() -> GlanceImages:
    return GlanceImages.noauth(GLANCE, "proj-1", timeout=2)


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.mark.parametrize(("status", "body", "state"), [
    (200, {"status": "active"}, EXISTS),
    (200, {"status": "queued"}, EXISTS),
    (200, {"status": "deactivated"}, EXISTS),
    (200, {"status": "deleted"}, GONE),
    (200, {"status": "pending_delete"}, GONE),
    (404, {"message": "not found"}, GONE),
    (401, {}, UNKNOWN),
    (403, {}, UNKNOWN),
    (500, {}, UNKNOWN),
    (503, {}, UNKNOWN),
])
def test_glance_answers_map_to_image_states(glance: GlanceImages, http: responses.RequestsMock,
                                            status: int, body: dict[str, str],
                                            state: ImageState) -> None:
    img = new_id()
    http.get(img_url(img), json={"id": img, **body}, status=status)
    assert glance(img) is state
    assert (img in glance.problems) == (state is UNKNOWN)
    if state is UNKNOWN:
        assert glance.problems[img] == f"HTTP {status}"


@pytest.mark.parametrize("error", [requests.exceptions.ConnectionError("refused"),
                                   requests.exceptions.ReadTimeout("slow")])
def test_connection_errors_and_timeouts_are_unknown(glance: GlanceImages,
                                                    http: responses.RequestsMock,
                                                    error: Exception) -> None:
    img = new_id()
    http.get(img_url(img), body=error)
    assert glance(img) is UNKNOWN
    assert "cannot reach Glance" in glance.problems[img]


def test_a_200_that_is_not_json_is_unknown(glance: GlanceImages,
                                           http: responses.RequestsMock) -> None:
    img = new_id()
    http.get(img_url(img), body="<html>login</html>", status=200)
    assert glance(img) is UNKNOWN


def test_a_non_uuid_resource_id_is_unknown_without_asking(glance: GlanceImages,
                                                          http: responses.RequestsMock) -> None:
    assert glance("../../v2/images") is UNKNOWN
    assert glance("x" * 36) is UNKNOWN
    assert len(http.calls) == 0


def test_the_no_auth_headers_are_sent(glance: GlanceImages,
                                      http: responses.RequestsMock) -> None:
    img = new_id()
    http.get(img_url(img), json={"id": img, "status": "active"})
    glance(img)
    headers = http.calls[0].request.headers
    assert headers["X-Identity-Status"] == "Confirmed"
    assert headers["X-Project-Id"] == "proj-1"
    assert headers["X-Roles"] == "reader,member"


@pytest.mark.parametrize("endpoint", [GLANCE, f"{GLANCE}/", f"{GLANCE}/v2", f"{GLANCE}/v2.0/"])
def test_a_versioned_endpoint_is_normalized(endpoint: str, http: responses.RequestsMock) -> None:
    img = new_id()
    http.get(img_url(img), status=404)
    assert GlanceImages.noauth(endpoint, "p")(img) is GONE


def test_check_accepts_a_glance_image_listing(glance: GlanceImages,
                                              http: responses.RequestsMock) -> None:
    http.get(f"{GLANCE}/v2/images", json={"images": [], "first": "/v2/images"})
    glance.check()
    assert str(http.calls[0].request.url).endswith("/v2/images?limit=1")


@pytest.mark.parametrize(("status", "body", "message"), [
    (404, {"error": "no such path"}, "does not answer like the Glance image API"),
    (200, {"secrets": []}, "does not answer like the Glance image API"),
    (200, "<html></html>", "does not answer like the Glance image API"),
    (401, {}, "authentication with Glance"),
    (503, {}, "HTTP 503"),
])
def test_check_refuses_what_is_not_glance(glance: GlanceImages, http: responses.RequestsMock,
                                          status: int, body: Any, message: str) -> None:
    if isinstance(body, str):
        http.get(f"{GLANCE}/v2/images", body=body, status=status)
    else:
        http.get(f"{GLANCE}/v2/images", json=body, status=status)
    with pytest.raises(GlanceError, match=message):
        glance.check()


def test_check_refuses_an_unreachable_glance(glance: GlanceImages,
                                             http: responses.RequestsMock) -> None:
    http.get(f"{GLANCE}/v2/images", body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(GlanceError, match=re.escape(f"cannot reach Glance at {GLANCE}")):
        glance.check()


def test_from_cloud_uses_the_image_endpoint_of_clouds_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: responses.RequestsMock) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  dev:\n    auth_type: none\n"
                      f"    image_endpoint_override: {GLANCE}/v2\n")
    for name in [n for n in os.environ if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    img = new_id()
    http.get(img_url(img), status=404)
    glance = GlanceImages.from_cloud("dev")
    assert glance.root == GLANCE
    assert glance(img) is GONE


# --- the command line ------------------------------------------------------------------------

@dataclass
class StubGlance:
    """Glance v2 image GETs on 127.0.0.1: 200 for ``live`` ids, ``errors`` status, else 404."""

    live: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def stub_glance() -> Iterator[StubGlance]:
    stub = StubGlance()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            stub.headers.append(dict(self.headers))
            path = self.path.split("?", 1)[0]
            found = re.fullmatch(r"/v2/images/([^/]+)", path)
            if path == "/v2/images":
                self._send(200, {"images": []})
            elif found and found[1] in stub.errors:
                self._send(stub.errors[found[1]], {"message": "injected"})
            elif found and found[1] in stub.live:
                self._send(200, {"id": found[1], "status": "active"})
            else:
                self._send(404, {"message": "not found"})

        def _send(self, status: int, doc: object) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(params=["2026.2", "yoga"])
def mock(request: pytest.FixtureRequest) -> Iterator[MockBarbican]:
    with MockBarbican(era=request.param) as server:
        yield server


@dataclass
class Scene:
    """Keys in the mock: per-image keys of a gone and a live image, a shared and a plain key."""

    gone_key: str
    live_key: str
    shared_key: str
    plain_key: str
    gone: str
    live: str
    shared_gone: str
    plain_gone: str


@pytest.fixture
def scene(mock: MockBarbican, stub_glance: StubGlance) -> Scene:
    km = connect(url=mock.url, project_id="p")
    gone, live, shared_gone, plain_gone = (new_id() for _ in range(4))

    def key(name: str, *images: str) -> str:
        key_id = km.create_key(name=name)
        for img in images:
            km.add_consumer(key_id, image(img))
        return key_id

    stub_glance.live = {live}
    return Scene(gone_key=key(f"{PER_IMAGE_KEY_PREFIX}{gone}", gone),
                 live_key=key(f"{PER_IMAGE_KEY_PREFIX}{live}", live),
                 shared_key=key(f"{PER_IMAGE_KEY_PREFIX}{shared_gone}", shared_gone, live),
                 plain_key=key("backup", plain_gone),
                 gone=gone, live=live, shared_gone=shared_gone, plain_gone=plain_gone)


def options(mock: MockBarbican, glance: StubGlance) -> list[str]:
    return ["--grace-period", "0", "--key-manager", "barbican", "--barbican-url", mock.url,
            "--project-id", "p", "--glance-url", glance.url]


def state(mock: MockBarbican) -> dict[str, list[str]]:
    """Each secret id of project p -> its consumers' image ids."""
    return {s["id"]: sorted(c["resource_id"] for c in mock.consumers(s["id"]))
            for s in mock.secrets(project="p")}


def test_cli_reconcile_removes_stale_consumers_and_per_image_keys(
        mock: MockBarbican, stub_glance: StubGlance, scene: Scene) -> None:
    result = cli("reconcile", *options(mock, stub_glance))
    assert result.code == 0, result.err
    assert state(mock) == {scene.live_key: [scene.live], scene.shared_key: [scene.live],
                           scene.plain_key: []}
    lines = result.out.splitlines()
    assert f"removed consumer image/{scene.gone} from key {scene.gone_key}" in lines
    assert f"removed consumer image/{scene.shared_gone} from key {scene.shared_key}" in lines
    assert f"removed consumer image/{scene.plain_gone} from key {scene.plain_key}" in lines
    assert f"deleted key {scene.gone_key}" in lines
    assert f"kept key {scene.shared_key}: 1 consumer(s) remain" in lines
    assert any(line.startswith(f"kept key {scene.plain_key}: not a per-image key")
               for line in lines)
    assert lines[-1] == ("reconcile: 4 key(s) checked, 3 consumer(s) removed, 1 key(s) "
                         "deleted, 2 kept, 0 image(s) unknown")
    assert result.err == ""
    assert {h.get("X-Project-Id") for h in stub_glance.headers} == {"p"}
    again = cli("reconcile", *options(mock, stub_glance))  # idempotent: nothing left to do
    assert again.code == 0 and again.out.splitlines()[-1].startswith(
        "reconcile: 3 key(s) checked, 0 consumer(s) removed, 0 key(s) deleted")


def test_cli_dry_run_changes_nothing(mock: MockBarbican, stub_glance: StubGlance,
                                     scene: Scene) -> None:
    before = state(mock)
    result = cli("reconcile", "--dry-run", *options(mock, stub_glance))
    assert result.code == 0, result.err
    assert state(mock) == before
    assert f"would delete key {scene.gone_key}" in result.out.splitlines()
    assert result.out.splitlines()[-1].startswith("reconcile (dry run): 4 key(s) checked, "
                                                  "3 consumer(s) to remove, 1 key(s) to delete")


def test_cli_json_report(mock: MockBarbican, stub_glance: StubGlance, scene: Scene) -> None:
    result = cli("reconcile", "--json", *options(mock, stub_glance))
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["complete"] is True and doc["decided"] is True and doc["dry_run"] is False
    assert doc["checked"] == 4 and doc["deleted"] == [scene.gone_key]
    assert {(r["key_id"], r["image_id"]) for r in doc["removed"]} == {
        (scene.gone_key, scene.gone), (scene.shared_key, scene.shared_gone),
        (scene.plain_key, scene.plain_gone)}
    assert {k["key_id"] for k in doc["kept"]} == {scene.shared_key, scene.plain_key}
    assert doc["unknown"] == []


def test_cli_unknown_image_state_skips_the_key_and_exits_1(
        mock: MockBarbican, stub_glance: StubGlance, scene: Scene) -> None:
    stub_glance.errors = {scene.gone: 503, scene.shared_gone: 403}
    result = cli("reconcile", "--json", *options(mock, stub_glance))
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["decided"] is False
    assert {(u["image_id"], u["reason"]) for u in doc["unknown"]} == {
        (scene.gone, "HTTP 503"), (scene.shared_gone, "HTTP 403")}
    assert state(mock) == {scene.gone_key: [scene.gone], scene.live_key: [scene.live],
                           scene.shared_key: sorted([scene.shared_gone, scene.live]),
                           scene.plain_key: []}
    text = cli("reconcile", *options(mock, stub_glance))
    assert text.code == 1
    assert f"unknown image {scene.gone}: HTTP 503" in text.out.splitlines()


def test_cli_refuses_a_url_that_is_not_glance(mock: MockBarbican, stub_glance: StubGlance,
                                              scene: Scene) -> None:
    before = state(mock)
    wrong = [*options(mock, stub_glance)[:-1], mock.url]  # every image would 404 there
    result = cli("reconcile", *wrong)
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("img-crypt: error: ") and result.err.count("\n") == 1
    assert "does not answer like the Glance image API" in result.err
    assert state(mock) == before


def test_cli_a_key_manager_error_prints_what_was_done_and_one_error_line(
        mock: MockBarbican, stub_glance: StubGlance, scene: Scene) -> None:
    before = state(mock)
    mock.faults.consumers_fail = 403
    result = cli("reconcile", *options(mock, stub_glance))
    assert result.code == 1
    assert result.out.splitlines()[-1].startswith("reconcile, stopped early: 1 key(s) checked")
    assert result.err.startswith("img-crypt: error: ") and result.err.count("\n") == 1
    assert "403" in result.err
    mock.faults.consumers_fail = None
    assert state(mock) == before


def test_cli_glance_url_needs_a_project(stub_glance: StubGlance, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OS_PROJECT_ID", raising=False)
    result = cli("reconcile", "--glance-url", stub_glance.url, "--key-store", str(tmp_path))
    assert result.code == 2 and "--project-id" in result.err


def test_cli_reconcile_with_the_local_store_and_env_glance_url(
        stub_glance: StubGlance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalKeyStore(tmp_path / "keys")
    gone = new_id()
    key = per_image_key(store, gone)
    monkeypatch.setenv("IMG_CRYPT_GLANCE_URL", stub_glance.url)
    result = cli("reconcile", "--key-store", str(store.path), "--project-id", "p",
                 "--grace-period", "0")
    assert result.code == 0, result.err
    assert f"deleted key {key}" in result.out.splitlines()
    assert store.list_keys() == []


# --- per-image keys left without consumers --------------------------------------------------


def orphan(store: LocalKeyStore, image_id: str) -> str:
    """A per-image key whose consumer is already gone (a half-finished delete or import)."""
    return key_with(store, f"{PER_IMAGE_KEY_PREFIX}{image_id}")


def test_a_per_image_key_without_consumers_goes_once_its_image_is_gone(
        store: LocalKeyStore) -> None:
    gone, live = new_id(), new_id()
    gone_key, live_key = orphan(store, gone), orphan(store, live)
    report = reconcile(store, FakeGlance({gone: GONE}), service="image", dry_run=False,
                       now=LATER)
    assert report.deleted == [gone_key] and report.decided
    assert {k.key_id for k in store.list_keys()} == {live_key}


def test_a_per_image_key_without_consumers_is_kept_while_its_image_is_unknown(
        store: LocalKeyStore) -> None:
    image_id = new_id()
    key_id = orphan(store, image_id)
    report = reconcile(store, FakeGlance({image_id: UNKNOWN}), service="image", dry_run=False,
                       now=LATER)
    assert report.unknown == [UnknownImage(image_id, key_id)] and not report.decided
    assert report.deleted == [] and [k.key_id for k in store.list_keys()] == [key_id]


def test_an_orphan_per_image_key_is_only_reported_in_a_dry_run(store: LocalKeyStore) -> None:
    image_id = new_id()
    key_id = orphan(store, image_id)
    report = reconcile(store, FakeGlance({image_id: GONE}), service="image", dry_run=True,
                       now=LATER)
    assert report.deleted == [key_id]
    assert [k.key_id for k in store.list_keys()] == [key_id]


@pytest.mark.parametrize("name", [None, "backup", f"{PER_IMAGE_KEY_PREFIX}not-a-uuid"])
def test_other_keys_without_consumers_are_not_even_looked_up(store: LocalKeyStore,
                                                             name: str | None) -> None:
    key_with(store, name)
    glance = FakeGlance()
    report = reconcile(store, glance, service="image", dry_run=False, now=LATER)
    assert glance.asked == [] and report.deleted == []


# --- the grace period: images that do not exist *yet* ----------------------------------------

def test_a_young_consumer_of_an_image_glance_does_not_have_yet_is_left_alone(
        store: LocalKeyStore) -> None:
    """The client flow: encrypt --image-id X registers X before `image create --id X`."""
    future = new_id()
    key = per_image_key(store, future)
    report = reconcile(store, FakeGlance({future: GONE}), service="image", dry_run=False)
    assert report.removed == [] and report.deleted == []
    assert report.kept == [KeptKey(key, "1 consumer(s) younger than the grace period; its "
                                        "image may not exist yet")]
    assert store.list_consumers(key) == [image(future)]


def test_a_young_per_image_key_without_consumers_is_left_alone(store: LocalKeyStore) -> None:
    future = new_id()
    key = orphan(store, future)
    glance = FakeGlance({future: GONE})
    report = reconcile(store, glance, service="image", dry_run=False)
    assert report.deleted == [] and keys(store) == {key}
    assert glance.asked == []


def test_records_go_once_older_than_the_grace_period(store: LocalKeyStore) -> None:
    gone, orphaned = new_id(), new_id()
    key, lone = per_image_key(store, gone), orphan(store, orphaned)
    glance = FakeGlance({gone: GONE, orphaned: GONE})
    soon = datetime.now(UTC) + timedelta(hours=35)
    kept = reconcile(store, glance, service="image", dry_run=False, now=soon,
                     grace=timedelta(hours=36))
    assert kept.deleted == [] and keys(store) == {key, lone}
    later = reconcile(store, glance, service="image", dry_run=False,
                      now=soon + timedelta(hours=2), grace=timedelta(hours=36))
    assert sorted(later.deleted) == sorted([key, lone]) and keys(store) == set()


def test_a_consumer_record_without_a_time_counts_as_young(store: LocalKeyStore) -> None:
    """Records written before the store kept ``created`` still read, and are kept."""
    gone = new_id()
    key = key_with(store, "backup")
    record = store.path / f"{key}.consumers.json"
    record.write_text(json.dumps({"key_id": key, "consumers": [image(gone).to_dict()]}))
    record.chmod(0o600)
    assert [c.created for c in store.list_consumers(key)] == [None]
    report = run(store, FakeGlance({gone: GONE}))
    assert report.removed == [] and store.list_consumers(key) == [image(gone)]


def test_barbican_consumers_carry_the_time_they_were_last_registered(
        mock: MockBarbican) -> None:
    km = connect(url=mock.url, project_id="p")
    img = new_id()
    key = km.create_key("k")
    mock.put_consumer(key, "image", "image", img, created="2020-01-01T00:00:00")
    [old] = km.list_consumers(key)
    assert old.created == datetime(2020, 1, 1, tzinfo=UTC)
    km.remove_consumer(key, image(img))
    km.add_consumer(key, image(img))  # Barbican revives the row: its created stays 2020
    [again] = km.list_consumers(key)
    assert again.created is not None and datetime.now(UTC) - again.created < timedelta(hours=1)


def test_cli_the_client_flow_survives_a_reconcile_run_at_any_point(
        stub_glance: StubGlance, mock: MockBarbican) -> None:
    """keys create, encrypt --kek K --image-id X, reconcile, and only then image create X."""
    barbican = ["--key-manager", "barbican", "--barbican-url", mock.url, "--project-id", "p"]
    reconcile_args = ["reconcile", *barbican, "--glance-url", stub_glance.url]
    future = new_id()
    created = cli("keys", "create", "--name", f"{PER_IMAGE_KEY_PREFIX}{future}", *barbican)
    key = created.out.strip()
    assert cli(*reconcile_args).code == 0  # the key alone, named for the image to come
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "plain").write_bytes(b"x" * 1000)
        enc = cli("encrypt", f"{work}/plain", f"{work}/plain.icr", "--kek", key,
                  "--image-id", future, *barbican)
        assert enc.code == 0, enc.err
    result = cli(*reconcile_args)  # Glance answers 404: the image is not created yet
    assert result.code == 0, result.err
    assert state(mock) == {key: [future]}
    assert "younger than the grace period" in result.out
    stub_glance.live = {future}  # openstack image create --id X
    assert cli(*reconcile_args, "--grace-period", "0").code == 0
    assert state(mock) == {key: [future]}


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", timedelta(days=7)), ("36h", timedelta(hours=36)), ("90m", timedelta(minutes=90)),
    ("45s", timedelta(seconds=45)), ("0", timedelta(0))])
def test_grace_period_durations(text: str, expected: timedelta) -> None:
    assert grace_period(text) == expected


@pytest.mark.parametrize("text", ["", "7", "-1d", "7w", "1.5d", "d", "7 days"])
def test_cli_a_bad_grace_period_is_a_usage_error(text: str, tmp_path: Path) -> None:
    result = cli("reconcile", "--grace-period", text, "--key-store", str(tmp_path),
                 "--glance-url", "http://127.0.0.1:9", "--project-id", "p")
    assert result.code == 2 and "--grace-period" in result.err


def test_the_default_grace_period_is_days() -> None:
    assert timedelta(days=1) <= DEFAULT_GRACE


# --- consumer records that break our assumptions; escaped output ------------------------------

ESC = "\x1b[2J\u202e"


@pytest.fixture
def odd_key(mock: MockBarbican) -> str:
    """A per-image key of a gone image with records no valid Consumer can hold, and a hostile
    (but valid) one of another service."""
    km = connect(url=mock.url, project_id="p")
    gone = new_id()
    key = km.create_key(f"{PER_IMAGE_KEY_PREFIX}{gone}")
    km.add_consumer(key, image(gone))
    mock.put_consumer(key, "image", "image", "x" * 40)
    mock.put_consumer(key, "", "image", new_id())
    mock.put_consumer(key, f"svc{ESC}", "volume", f"v{ESC}")
    return key


def test_cli_keys_consumers_reports_and_skips_unreadable_records(
        mock: MockBarbican, odd_key: str) -> None:
    result = cli("keys", "consumers", odd_key, "--key-manager", "barbican",
                 "--barbican-url", mock.url, "--project-id", "p")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and "\x1b" not in result.out + result.err
    assert len(result.out.splitlines()) == 2  # the image and the hostile volume record
    assert "svc\\x1b[2J\\u202e  volume  v\\x1b[2J\\u202e" in result.out
    warnings = result.err.splitlines()
    assert len(warnings) == 2 and all("skipped a consumer record" in w for w in warnings)
    assert "resource_id must be" in warnings[0] and "x" * 40 in warnings[0]


def test_cli_reconcile_reports_unreadable_records_and_keeps_their_key(
        mock: MockBarbican, stub_glance: StubGlance, odd_key: str) -> None:
    result = cli("reconcile", *options(mock, stub_glance))
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\u202e" not in result.out
    assert sum("skipped a consumer record" in line for line in result.out.splitlines()) == 2
    assert f"kept key {odd_key}: 3 consumer(s) remain" in result.out.splitlines()
    assert odd_key in {s["id"] for s in mock.secrets()}
    assert result.out.splitlines()[-1].endswith(", 2 record(s) skipped")


def test_cli_reconcile_escapes_image_ids_it_prints(mock: MockBarbican,
                                                   stub_glance: StubGlance) -> None:
    km = connect(url=mock.url, project_id="p")
    key = km.create_key("k")
    mock.put_consumer(key, "image", "image", f"i{ESC}")
    result = cli("reconcile", *options(mock, stub_glance))
    assert result.code == 1
    assert "unknown image i\\x1b[2J\\u202e: not a Glance image id (UUID)" in result.out
    assert "\x1b" not in result.out and "\u202e" not in result.out


# --- per-image key names ---------------------------------------------------------------------

def test_barbican_reports_the_name_its_caller_gave_and_recognises_old_suffixed_keys(
        mock: MockBarbican) -> None:
    km = connect(url=mock.url, project_id="p")
    img = new_id()
    key = km.create_key(f"{PER_IMAGE_KEY_PREFIX}{img}")
    [stored] = mock.secrets()
    assert stored["name"].startswith(f"{PER_IMAGE_KEY_PREFIX}{img}-")  # the adapter's suffix
    assert km.key_info(key).name == f"{PER_IMAGE_KEY_PREFIX}{img}"
    assert [k.name for k in km.list_keys()] == [f"{PER_IMAGE_KEY_PREFIX}{img}"]
    assert image_of_key(km.key_info(key).name) == img


@pytest.mark.parametrize("name", [None, "", "backup", f"{PER_IMAGE_KEY_PREFIX}not-a-uuid",
                                  f"{PER_IMAGE_KEY_PREFIX}{uuid.UUID(int=1)}-0123456789ab",
                                  f"{PER_IMAGE_KEY_PREFIX}{uuid.UUID(int=1)}x",
                                  f"img-crypt-kept-{uuid.UUID(int=1)}"])
def test_only_exact_per_image_names_name_an_image(name: str | None) -> None:
    assert image_of_key(name) is None


def test_per_image_key_names_round_trip() -> None:
    img = new_id()
    assert image_of_key(per_image_key_name(img, delete_with_image=True)) == img
    assert image_of_key(per_image_key_name(img, delete_with_image=False)) is None

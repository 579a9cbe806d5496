"""HTTP-level contract of the Barbican API that img-crypt relies on.

One suite, several targets: a real Barbican 23.0.0 (the authority; ``real_barbican`` in
conftest.py) and ``barbican_mock`` in each deployment era of openstack.md section 2 (train,
yoga, zed, 2026.2). Where eras differ the expectation comes from the target's ``Era``; the real
server has 2026.2 semantics (microversions 1.0 to 1.2). Each test uses fresh project ids, so
tests never see each other's secrets.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

HTTP_TIMEOUT = 10
VERSION_HEADER = "OpenStack-API-Version"
HAS_CONSUMERS = "Secret deletion issue seen - Secret cannot be deleted as it has consumers.."
BAD_QUERY = "URI provided invalid query string parameters."
CONSUMER_FIELDS = {"created", "updated", "status", "service", "resource_type", "resource_id"}
CONSUMER_KEYS = {"service", "resource_type", "resource_id"}


@dataclass(frozen=True)
class Era:
    """What a Barbican deployment era offers (openstack.md, "Deployment eras").

    Fields beyond the eras table come from the upstream barbican source at the era's first
    release (train 9.0.0, yoga 14.0.0, zed 15.0.0); 2026.2 is checked live against 23.0.0.
    """

    name: str
    max_version: str  # the newest microversion; "1.0" means unmicroversioned
    reply_consumers: bool = True  # consumer POST/DELETE replies carry "consumers" (15.0 on)
    reply_content_types: bool = True  # ... and "content_types" (16.0 on)
    secret_not_found: str = "Secret not found."  # Train: "...in another castle."
    order_not_found: str = "Order not found."
    version_updated: str | None = None  # "updated" in the old version document (until 14.x)
    remove_by_resource_id: bool = False  # 10.0-14.x: consumer DELETE matches resource_id only

    @property
    def microversioned(self) -> bool:
        return self.max_version != "1.0"

    @property
    def consumers(self) -> bool:
        return self.name != "train"

    def knows(self, version: str) -> bool:
        """Whether a microversioned server of this era accepts ``key-manager <version>``."""
        return _v(version) <= _v(self.max_version)


def _v(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


ERAS = {
    "train": Era(
        "train", "1.0", reply_consumers=False, reply_content_types=False,
        secret_not_found="Not Found. Sorry but your secret is in another castle.",
        order_not_found="Not Found. Sorry but your order is in another castle.",
        version_updated="2015-04-28T00:00:00Z",
    ),
    "yoga": Era(
        "yoga", "1.0", reply_consumers=False, reply_content_types=False,
        version_updated="2015-04-28T00:00:00Z", remove_by_resource_id=True,
    ),
    "zed": Era("zed", "1.1", reply_content_types=False),
    "2026.2": Era("2026.2", "1.2"),
}


@dataclass(frozen=True)
class Target:
    """A server under test: its base URL (no trailing slash) and era."""

    name: str
    url: str
    era: Era


@pytest.fixture(
    scope="session", params=["real", "mock-train", "mock-yoga", "mock-zed", "mock-2026.2"]
)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "real":
        server = request.getfixturevalue("real_barbican")
        yield Target("real", server.url, ERAS["2026.2"])
        return
    from barbican_mock import MockBarbican

    era = request.param.removeprefix("mock-")
    mock = MockBarbican(era=era).start()
    try:
        yield Target(request.param, str(mock.url).rstrip("/"), ERAS[era])
    finally:
        mock.stop()


@dataclass(frozen=True)
class Projects:
    a: str
    b: str


@pytest.fixture
def projects() -> Projects:
    tag = uuid.uuid4().hex[:8]
    return Projects(f"project-a-{tag}", f"project-b-{tag}")


# --- helpers ----------------------------------------------------------------------------------


def hdrs(project: str | None, version: str | None = None, **extra: str) -> dict[str, str]:
    out = dict(extra)
    if project is not None:
        out["X-Project-Id"] = project
    if version is not None:
        out[VERSION_HEADER] = f"key-manager {version}"
    return out


def call(
    method: str,
    url: str,
    project: str | None,
    version: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    return requests.request(
        method, url, headers=hdrs(project, version, **(headers or {})), timeout=HTTP_TIMEOUT,
        allow_redirects=False, **kwargs,
    )


def store_secret(t: Target, project: str, payload: bytes = b"\x00secret\xff") -> str:
    resp = call(
        "POST", f"{t.url}/v1/secrets", project,
        json={
            "name": "contract",
            "payload": base64.b64encode(payload).decode("ascii"),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64",
            "algorithm": "aes",
            "bit_length": 256,
            "mode": "cbc",
        },
    )
    assert resp.status_code == 201, resp.text
    ref = resp.json()["secret_ref"]
    assert isinstance(ref, str)
    return ref


def consumer(resource_id: str = "r1", service: str = "image") -> dict[str, str]:
    return {"service": service, "resource_type": "image", "resource_id": resource_id}


def add_consumer(t: Target, ref: str, project: str, body: dict[str, str]) -> requests.Response:
    resp = call("POST", f"{ref}/consumers", project, json=body)
    assert resp.status_code == 200, resp.text
    return resp


def error(resp: requests.Response, code: int) -> dict[str, Any]:
    """Assert a Barbican JSON error body ``{"code", "title", "description"}``; return it."""
    assert resp.status_code == code, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"code", "title", "description"}, body
    assert body["code"] == code
    return body


def needs_consumers(t: Target) -> None:
    if not t.era.consumers:
        pytest.skip(f"{t.era.name}: no consumer endpoints (covered by test_train_has_no_consumers)")


# --- secrets ----------------------------------------------------------------------------------


def test_store_get_metadata_and_payload(target: Target, projects: Projects) -> None:
    payload = bytes(range(256)) * 3
    ref = store_secret(target, projects.a, payload)
    secret_id = ref.rsplit("/", 1)[1]
    assert ref == f"{target.url}/v1/secrets/{secret_id}"
    assert str(uuid.UUID(secret_id)) == secret_id

    meta = call("GET", ref, projects.a)
    assert meta.status_code == 200, meta.text
    assert meta.headers["Content-Type"].startswith("application/json")
    body = meta.json()
    assert body["secret_ref"] == ref
    assert body["status"] == "ACTIVE"
    assert body["name"] == "contract"
    assert body["secret_type"] == "opaque"
    assert (body["algorithm"], body["bit_length"], body["mode"]) == ("aes", 256, "cbc")
    assert body["content_types"] == {"default": "application/octet-stream"}

    got = call("GET", f"{ref}/payload", projects.a, headers={"Accept": "application/octet-stream"})
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.content == payload


def test_secret_listing_is_per_project(target: Target, projects: Projects) -> None:
    ref = store_secret(target, projects.a)
    mine = call("GET", f"{target.url}/v1/secrets", projects.a)
    assert mine.status_code == 200, mine.text
    assert mine.json()["total"] == 1
    assert [s["secret_ref"] for s in mine.json()["secrets"]] == [ref]
    theirs = call("GET", f"{target.url}/v1/secrets", projects.b)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json() == {"secrets": [], "total": 0}


def test_delete_then_get_404(target: Target, projects: Projects) -> None:
    ref = store_secret(target, projects.a)
    resp = call("DELETE", ref, projects.a)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    not_found = target.era.secret_not_found
    assert error(call("GET", ref, projects.a), 404)["description"] == not_found
    error(call("GET", f"{ref}/payload", projects.a), 404)
    error(call("DELETE", ref, projects.a), 404)


def test_unknown_secret_404(target: Target, projects: Projects) -> None:
    ref = f"{target.url}/v1/secrets/{uuid.uuid4()}"
    not_found = target.era.secret_not_found
    assert error(call("GET", ref, projects.a), 404)["description"] == not_found
    error(call("GET", f"{ref}/payload", projects.a), 404)
    error(call("DELETE", ref, projects.a), 404)


# --- orders -----------------------------------------------------------------------------------


def test_order_aes_256_key(target: Target, projects: Projects) -> None:
    meta = {
        "name": "generated",
        "algorithm": "aes",
        "bit_length": 256,
        "mode": "cbc",
        "payload_content_type": "application/octet-stream",
    }
    resp = call("POST", f"{target.url}/v1/orders", projects.a, json={"type": "key", "meta": meta})
    assert resp.status_code == 202, resp.text
    order_ref = resp.json()["order_ref"]
    assert order_ref.startswith(f"{target.url}/v1/orders/")

    deadline = time.monotonic() + 10
    while True:
        order = call("GET", order_ref, projects.a)
        assert order.status_code == 200, order.text
        if order.json()["status"] != "PENDING" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    body = order.json()
    assert body["status"] == "ACTIVE", body
    assert body["type"] == "key"
    assert body["order_ref"] == order_ref
    assert {k: body["meta"][k] for k in meta} == meta

    secret_ref = body["secret_ref"]
    assert secret_ref.startswith(f"{target.url}/v1/secrets/")
    secret = call("GET", secret_ref, projects.a)
    assert secret.status_code == 200, secret.text
    sbody = secret.json()
    assert sbody["status"] == "ACTIVE"
    assert sbody["secret_type"] == "symmetric"
    assert (sbody["algorithm"], sbody["bit_length"], sbody["mode"]) == ("aes", 256, "cbc")
    assert sbody["name"] == "generated"
    payload = call(
        "GET", f"{secret_ref}/payload", projects.a, headers={"Accept": "application/octet-stream"}
    )
    assert payload.status_code == 200, payload.text
    assert len(payload.content) == 32

    # another project does not see the order at all (404, not 403), and cannot read the key
    not_found = target.era.order_not_found
    assert error(call("GET", order_ref, projects.b), 404)["description"] == not_found
    error(call("GET", secret_ref, projects.b), 403)


# --- consumers --------------------------------------------------------------------------------


def test_train_has_no_consumers(target: Target, projects: Projects) -> None:
    if target.era.consumers:
        pytest.skip("consumer endpoints exist in this era")
    ref = store_secret(target, projects.a)
    assert call("GET", f"{ref}/consumers", projects.a).status_code == 404
    assert call("POST", f"{ref}/consumers", projects.a, json=consumer()).status_code == 404
    assert call("DELETE", f"{ref}/consumers", projects.a, json=consumer()).status_code == 404
    assert call("GET", ref, projects.a).status_code == 200  # the secret itself is fine


@pytest.mark.parametrize("version", [None, "1.1", "1.2"])
def test_add_consumer_returns_secret(
    target: Target, projects: Projects, version: str | None
) -> None:
    needs_consumers(target)
    if version is not None and target.era.microversioned and not target.era.knows(version):
        pytest.skip(f"{target.era.name} does not know {version} (see test_unknown_version_406)")
    ref = store_secret(target, projects.a)
    resp = call("POST", f"{ref}/consumers", projects.a, version, json=consumer())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["secret_ref"] == ref
    assert body["status"] == "ACTIVE"
    assert body["name"] == "contract"
    # 2026.2 (live): "content_types" and "consumers" whatever the microversion; older eras
    # (upstream source) return the bare secret fields: "consumers" from 15.0, "content_types"
    # from 16.0
    if target.era.reply_content_types:
        assert body["content_types"] == {"default": "application/octet-stream"}
    else:
        assert "content_types" not in body
    if target.era.reply_consumers:
        assert body["consumers"] == [consumer()]
    else:
        assert "consumers" not in body


def test_add_consumer_is_idempotent(target: Target, projects: Projects) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    first = add_consumer(target, ref, projects.a, consumer())
    second = add_consumer(target, ref, projects.a, consumer())
    if target.era.reply_consumers:
        assert first.json()["consumers"] == second.json()["consumers"] == [consumer()]
    listing = call("GET", f"{ref}/consumers", projects.a)
    assert listing.status_code == 200, listing.text
    assert listing.json()["total"] == 1
    assert len(listing.json()["consumers"]) == 1


def test_list_consumers_fields(target: Target, projects: Projects) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    empty = call("GET", f"{ref}/consumers", projects.a)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"consumers": [], "total": 0}

    add_consumer(target, ref, projects.a, consumer("r1"))
    add_consumer(target, ref, projects.a, consumer("r2", service="volume"))
    resp = call("GET", f"{ref}/consumers", projects.a)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"consumers", "total"}  # no next/previous on a single page
    assert body["total"] == 2
    for item in body["consumers"]:
        assert set(item) == CONSUMER_FIELDS, item
        assert item["status"] == "ACTIVE"
        assert isinstance(item["created"], str)
        assert isinstance(item["updated"], str)
    assert [{k: c[k] for k in CONSUMER_KEYS} for c in body["consumers"]] == [
        consumer("r1"), consumer("r2", service="volume"),
    ]


def test_list_consumers_paging(target: Target, projects: Projects) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    for i in range(5):
        add_consumer(target, ref, projects.a, consumer(f"r{i}"))

    def page(limit: int, offset: int) -> dict[str, Any]:
        resp = call(
            "GET", f"{ref}/consumers", projects.a, params={"limit": limit, "offset": offset}
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        assert body["total"] == 5
        return body

    def ids(body: dict[str, Any]) -> list[str]:
        return [c["resource_id"] for c in body["consumers"]]

    first = page(2, 0)
    assert ids(first) == ["r0", "r1"]
    assert first["next"] == f"{ref}/consumers?limit=2&offset=2"
    assert "previous" not in first

    middle = page(2, 2)
    assert ids(middle) == ["r2", "r3"]
    assert middle["previous"] == f"{ref}/consumers?limit=2&offset=0"
    assert middle["next"] == f"{ref}/consumers?limit=2&offset=4"

    last = page(2, 4)
    assert ids(last) == ["r4"]
    assert last["previous"] == f"{ref}/consumers?limit=2&offset=2"
    assert "next" not in last

    beyond = page(2, 10)
    assert beyond == {"consumers": [], "total": 5}


def test_remove_consumer(target: Target, projects: Projects) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    add_consumer(target, ref, projects.a, consumer("r1"))
    add_consumer(target, ref, projects.a, consumer("r2"))
    resp = call("DELETE", f"{ref}/consumers", projects.a, json=consumer("r1"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["secret_ref"] == ref
    if target.era.reply_consumers:
        assert body["consumers"] == [consumer("r2")]
    else:
        assert "consumers" not in body
    listing = call("GET", f"{ref}/consumers", projects.a).json()
    assert listing["total"] == 1
    assert listing["consumers"][0]["resource_id"] == "r2"


def test_remove_unknown_consumer_404(target: Target, projects: Projects) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    add_consumer(target, ref, projects.a, consumer("r1"))
    resp = call("DELETE", f"{ref}/consumers", projects.a, json=consumer("nope"))
    assert error(resp, 404) == {
        "code": 404, "title": "Not Found", "description": "Consumer not found."
    }
    # and removing the same consumer twice: the second time it is unknown
    assert call("DELETE", f"{ref}/consumers", projects.a, json=consumer("r1")).status_code == 200
    resp = call("DELETE", f"{ref}/consumers", projects.a, json=consumer("r1"))
    assert error(resp, 404)["description"] == "Consumer not found."


def test_remove_consumer_matches_all_three_fields(target: Target, projects: Projects) -> None:
    """23.0.0 (and 15.0 on) matches service, resource_type and resource_id; 10.0-14.x matched
    resource_id only, so another service's DELETE removed the consumer."""
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    add_consumer(target, ref, projects.a, consumer("r1", service="image"))
    resp = call("DELETE", f"{ref}/consumers", projects.a, json=consumer("r1", service="volume"))
    listing = call("GET", f"{ref}/consumers", projects.a).json()
    if target.era.remove_by_resource_id:
        assert resp.status_code == 200, resp.text
        assert listing["total"] == 0
    else:
        assert error(resp, 404)["description"] == "Consumer not found."
        assert listing["total"] == 1
    other_type = {**consumer("r1"), "resource_type": "volume"}
    if not target.era.remove_by_resource_id:
        error(call("DELETE", f"{ref}/consumers", projects.a, json=other_type), 404)


def test_consumers_of_unknown_secret_404(target: Target, projects: Projects) -> None:
    needs_consumers(target)
    ref = f"{target.url}/v1/secrets/{uuid.uuid4()}"
    for method in ("GET", "POST", "DELETE"):
        body = None if method == "GET" else consumer()
        resp = call(method, f"{ref}/consumers", projects.a, json=body)
        assert error(resp, 404)["description"] == target.era.secret_not_found, method


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("missing", sorted(CONSUMER_KEYS))
def test_consumer_missing_field_400(
    target: Target, projects: Projects, method: str, missing: str
) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    body = {k: v for k, v in consumer().items() if k != missing}
    resp = call(method, f"{ref}/consumers", projects.a, json=body)
    description = error(resp, 400)["description"]
    assert f"'{missing}' is a required property" in description


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_consumer_wrong_type_and_bad_json_400(
    target: Target, projects: Projects, method: str
) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    resp = call(method, f"{ref}/consumers", projects.a, json={**consumer(), "service": 5})
    error(resp, 400)
    resp = call(
        method, f"{ref}/consumers", projects.a,
        headers={"Content-Type": "application/json"}, data=b"{not json",
    )
    assert error(resp, 400)["description"] == "Malformed JSON"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_consumer_wrong_content_type_415(target: Target, projects: Projects, method: str) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    resp = call(
        method, f"{ref}/consumers", projects.a,
        headers={"Content-Type": "text/plain"}, data=b'{"service": "image"}',
    )
    assert error(resp, 415)["title"] == "Unsupported Media Type"


# --- delete with consumers (microversion 1.2) -------------------------------------------------


@pytest.mark.parametrize("version", [None, "1.0", "1.1", "1.2"])
def test_delete_secret_with_consumers(
    target: Target, projects: Projects, version: str | None
) -> None:
    needs_consumers(target)
    ref = store_secret(target, projects.a)
    add_consumer(target, ref, projects.a, consumer())
    resp = call("DELETE", ref, projects.a, version)
    era = target.era
    if version is not None and era.microversioned and not era.knows(version):
        assert resp.status_code == 406, resp.text
        assert call("GET", ref, projects.a).status_code == 200
        return
    if version == "1.2" and era.microversioned:
        assert error(resp, 400) == {
            "code": 400, "title": "Bad Request", "description": HAS_CONSUMERS
        }
        assert call("GET", ref, projects.a).status_code == 200  # still there, consumers too
        assert call("GET", f"{ref}/consumers", projects.a).json()["total"] == 1
        resp = call("DELETE", ref, projects.a, version, params={"force": "true"})
    assert resp.status_code == 204, resp.text
    assert call("GET", ref, projects.a).status_code == 404


@pytest.mark.parametrize(
    ("force", "status"),
    [("true", 204), ("True", 204), ("1", 204), ("false", 400), ("0", 400), ("bogus", 400)],
)
def test_delete_force_parameter_at_1_2(
    target: Target, projects: Projects, force: str, status: int
) -> None:
    """barbicanclient sends ``force=1``; castellan goes through barbicanclient."""
    if target.era.max_version != "1.2":
        pytest.skip("force only matters at microversion 1.2")
    ref = store_secret(target, projects.a)
    add_consumer(target, ref, projects.a, consumer())
    resp = call("DELETE", ref, projects.a, "1.2", params={"force": force})
    assert resp.status_code == status, resp.text
    if status == 400:
        expected = HAS_CONSUMERS if force != "bogus" else BAD_QUERY
        assert error(resp, 400)["description"] == expected


def test_delete_secret_without_consumers_at_1_2(target: Target, projects: Projects) -> None:
    if target.era.max_version != "1.2":
        pytest.skip("microversion 1.2 only")
    ref = store_secret(target, projects.a)
    assert call("DELETE", ref, projects.a, "1.2").status_code == 204
    ref = store_secret(target, projects.a)
    add_consumer(target, ref, projects.a, consumer())
    assert call("DELETE", f"{ref}/consumers", projects.a, json=consumer()).status_code == 200
    assert call("DELETE", ref, projects.a, "1.2").status_code == 204


# --- projects ---------------------------------------------------------------------------------


def test_cross_project_403(target: Target, projects: Projects) -> None:
    ref = store_secret(target, projects.a)
    b = projects.b
    assert error(call("GET", ref, b), 403)["title"] == "Forbidden"
    error(call("GET", f"{ref}/payload", b, headers={"Accept": "application/octet-stream"}), 403)
    error(call("DELETE", ref, b), 403)
    error(call("DELETE", ref, b, "latest" if target.era.microversioned else None), 403)
    if target.era.consumers:
        add_consumer(target, ref, projects.a, consumer("mine"))
        error(call("GET", f"{ref}/consumers", b), 403)
        error(call("POST", f"{ref}/consumers", b, json=consumer("theirs")), 403)
        error(call("DELETE", f"{ref}/consumers", b, json=consumer("mine")), 403)
        listing = call("GET", f"{ref}/consumers", projects.a).json()
        assert [c["resource_id"] for c in listing["consumers"]] == ["mine"]
    else:
        for method in ("GET", "POST", "DELETE"):
            body = None if method == "GET" else consumer()
            assert call(method, f"{ref}/consumers", b, json=body).status_code == 404
    assert call("GET", ref, projects.a).status_code == 200  # untouched


# --- microversions and version discovery -------------------------------------------------------


def assert_old_version_document(t: Target, resp: requests.Response) -> None:
    assert resp.status_code == 300, resp.text
    body = resp.json()
    assert set(body) == {"versions"}
    assert set(body["versions"]) == {"values"}
    (v1,) = body["versions"]["values"]
    assert v1["id"] == "v1"
    assert v1["status"] == "stable"
    keys = {"id", "status", "links", "media-types"}
    if t.era.version_updated is not None:
        keys.add("updated")
        assert v1["updated"] == t.era.version_updated
    assert set(v1) == keys
    assert {"rel": "self", "href": f"{t.url}/v1/"} in v1["links"]
    assert {"base": "application/json",
            "type": "application/vnd.openstack.key-manager-v1+json"} in v1["media-types"]


def assert_new_version_document(t: Target, resp: requests.Response) -> None:
    assert resp.status_code == 300, resp.text
    body = resp.json()
    assert set(body) == {"versions"}
    (v1,) = body["versions"]
    assert v1["id"] == "v1"
    assert v1["status"] == "CURRENT"
    assert v1["min_version"] == "1.0"
    assert v1["max_version"] == t.era.max_version
    assert {"rel": "self", "href": f"{t.url}/v1/"} in v1["links"]
    assert set(v1) == {"id", "status", "min_version", "max_version", "links"}


def assert_echo(t: Target, resp: requests.Response, version: str) -> None:
    if t.era.microversioned:
        assert resp.headers.get(VERSION_HEADER) == f"key-manager {version}"
        assert VERSION_HEADER.lower() in resp.headers.get("Vary", "").lower()
    else:
        assert VERSION_HEADER not in resp.headers


def test_version_document_without_header(target: Target) -> None:
    resp = call("GET", f"{target.url}/", None)
    assert_old_version_document(target, resp)
    assert_echo(target, resp, "1.0")


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "latest"])
def test_version_document_with_header(target: Target, version: str) -> None:
    resp = call("GET", f"{target.url}/", None, version)
    era = target.era
    if not era.microversioned:
        assert_old_version_document(target, resp)  # the header is ignored
        assert VERSION_HEADER not in resp.headers
        return
    if version != "latest" and not era.knows(version):
        assert resp.status_code == 406, resp.text
        return
    if version == "1.0":
        assert_old_version_document(target, resp)
    else:
        assert_new_version_document(target, resp)
    assert_echo(target, resp, era.max_version if version == "latest" else version)


def test_unknown_version_406(target: Target, projects: Projects) -> None:
    root = call("GET", f"{target.url}/", None, "9.9")
    api = call("GET", f"{target.url}/v1/secrets", projects.a, "9.9")
    if target.era.microversioned:
        assert root.status_code == 406, root.text
        assert api.status_code == 406, api.text
    else:
        assert_old_version_document(target, root)
        assert api.status_code == 200, api.text


def test_unparseable_version_400(target: Target, projects: Projects) -> None:
    resp = call("GET", f"{target.url}/v1/secrets", projects.a, "foo")
    if target.era.microversioned:
        assert resp.status_code == 400, resp.text
    else:
        assert resp.status_code == 200, resp.text


def test_api_requests_echo_version(target: Target, projects: Projects) -> None:
    ref = store_secret(target, projects.a)
    assert_echo(target, call("GET", ref, projects.a), "1.0")
    if target.era.microversioned:
        assert_echo(target, call("GET", ref, projects.a, "1.1"), "1.1")
        top = target.era.max_version
        assert_echo(target, call("GET", ref, projects.a, "latest"), top)


@pytest.mark.parametrize("version", [None, "1.0", "1.1", "latest"])
def test_secret_get_consumers_key_from_1_1(
    target: Target, projects: Projects, version: str | None
) -> None:
    ref = store_secret(target, projects.a)
    if target.era.consumers:
        add_consumer(target, ref, projects.a, consumer())
    resp = call("GET", ref, projects.a, version)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    effective = "1.0"
    if target.era.microversioned and version is not None:
        effective = target.era.max_version if version == "latest" else version
    if effective == "1.0":
        assert "consumers" not in body
    else:
        assert body["consumers"] == [consumer()]
    listing = call("GET", f"{target.url}/v1/secrets", projects.a, version)
    assert listing.status_code == 200, listing.text
    (item,) = listing.json()["secrets"]
    assert ("consumers" in item) == (effective != "1.0")


# --- python-barbicanclient against the target -------------------------------------------------


def test_barbicanclient_negotiation(target: Target, projects: Projects) -> None:
    from barbicanclient import client as bclient
    from barbicanclient import exceptions as bexc

    cli = bclient.Client(endpoint=target.url, project_id=projects.a)
    negotiated = cli.secrets._api.microversion
    assert negotiated == target.era.max_version

    secret = cli.secrets.create(name="via-client", payload=b"\x01\x02client")
    ref = secret.store()
    assert ref.startswith(f"{target.url}/v1/secrets/")
    assert cli.secrets.get(ref).payload == b"\x01\x02client"

    if negotiated == "1.0":
        with pytest.raises(NotImplementedError):
            cli.secrets.register_consumer(ref, "image", "image", "r1")
        cli.secrets.delete(ref)
        return
    cli.secrets.register_consumer(ref, "image", "image", "r1")
    assert len(cli.secrets.list_consumers(ref)) == 1
    with pytest.raises(bexc.SecretHasConsumers):
        cli.secrets.delete(ref)  # 1.2: the server's 400; 1.1: the client's own check
    cli.secrets.delete(ref, force=True)
    assert call("GET", ref, projects.a).status_code == 404

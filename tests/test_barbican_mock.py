"""The Barbican mock: eras, python-barbicanclient against it, consumers, faults, CLI.

Expected texts and shapes were recorded from a real barbican 23.0.0 (keystone-less
paste pipeline, see shared/notes/real-servers.md) and the older releases' sources.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from barbican_mock import ERAS, Faults, MockBarbican

barbicanclient = pytest.importorskip("barbicanclient")
from barbicanclient import client as bclient  # noqa: E402
from barbicanclient import exceptions as bexc  # noqa: E402

pytest_plugins = ["barbican_mock.fixture"]

P = {"X-Project-Id": "p1"}
MV_HEADER = "OpenStack-API-Version"
NEGOTIATED = {"train": "1.0", "yoga": "1.0", "zed": "1.1", "2026.2": "1.2"}
CONSUMER = {"service": "image", "resource_type": "image", "resource_id": "img-1"}
ROOT = Path(__file__).resolve().parents[1]


def mv(version: str) -> dict[str, str]:
    return {**P, MV_HEADER: f"key-manager {version}"}


@pytest.fixture(params=ERAS)
def era_mock(request: pytest.FixtureRequest) -> Iterator[MockBarbican]:
    with MockBarbican(era=request.param) as mock:
        yield mock


def new_secret(url: str, headers: dict[str, str] = P, payload: bytes = b"k" * 32) -> str:
    import base64

    body = {"name": "s", "payload": base64.b64encode(payload).decode(),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64"}
    r = requests.post(f"{url}/v1/secrets", json=body, headers=headers, timeout=5)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == r.json()["secret_ref"]
    return str(r.json()["secret_ref"])


def add_consumer(ref: str, headers: dict[str, str] = P, **fields: str) -> requests.Response:
    return requests.post(f"{ref}/consumers", json={**CONSUMER, **fields}, headers=headers,
                         timeout=5)


# -- python-barbicanclient in every era -------------------------------------------------


def test_client_negotiates_microversion_per_era(era_mock: MockBarbican) -> None:
    client = bclient.Client(endpoint=era_mock.url, project_id="p1")
    assert client.client.microversion == NEGOTIATED[era_mock.era.name]


def test_client_store_get_list_delete(era_mock: MockBarbican) -> None:
    client = bclient.Client(endpoint=era_mock.url, project_id="p1")
    ref = client.secrets.create(name="bin", payload=b"\x00\x01\xfe\xff").store()
    tref = client.secrets.create(name="txt", payload="some text").store()
    assert client.secrets.get(ref).payload == b"\x00\x01\xfe\xff"
    assert client.secrets.get(tref).payload == "some text"
    assert client.secrets.get(tref).content_types == {"default": "text/plain"}
    assert sorted(s.name for s in client.secrets.list()) == ["bin", "txt"]
    assert [s.name for s in client.secrets.list(name="bin")] == ["bin"]
    client.secrets.delete(ref)
    with pytest.raises(bexc.HTTPClientError) as err:
        client.secrets.get(ref).payload  # noqa: B018 - lazy load sends the request
    assert err.value.status_code == 404
    assert era_mock.counts()["secrets"] == 1


def test_client_key_order_like_castellan(era_mock: MockBarbican) -> None:
    client = bclient.Client(endpoint=era_mock.url, project_id="p1")
    order_ref = client.orders.create_key(name="k", algorithm="aes", bit_length=256,
                                         mode="cbc").submit()
    order = client.orders.get(order_ref)
    assert order.status == "ACTIVE"
    key = client.secrets.get(order.secret_ref)
    assert len(key.payload) == 32
    assert (key.algorithm, key.bit_length, key.secret_type) == ("aes", 256, "symmetric")
    assert era_mock.counts()["orders"] == 1


def test_client_consumers_where_supported(era_mock: MockBarbican) -> None:
    client = bclient.Client(endpoint=era_mock.url, project_id="p1")
    ref = client.secrets.create(name="c", payload=b"x").store()
    if era_mock.era.name in ("train", "yoga"):
        with pytest.raises(NotImplementedError):
            client.secrets.register_consumer(ref, "image", "image", "i1")
        return
    secret = client.secrets.register_consumer(ref, "image", "image", "i1")
    assert secret.consumers == [{"service": "image", "resource_type": "image",
                                 "resource_id": "i1"}]
    assert [c.resource_id for c in client.secrets.list_consumers(ref)] == ["i1"]
    with pytest.raises(bexc.SecretHasConsumers):
        client.secrets.delete(ref)
    client.secrets.remove_consumer(ref, "image", "image", "i1")
    assert era_mock.consumers(ref.rsplit("/", 1)[1]) == []
    client.secrets.delete(ref)


# -- version documents ------------------------------------------------------------------


@pytest.mark.parametrize(("era", "header", "status", "shape", "echo"), [
    ("train", "1.1", 300, "old", None),
    ("train", "9.9", 300, "old", None),
    ("yoga", "1.1", 300, "old", None),
    ("zed", None, 300, "old", "1.0"),
    ("zed", "1.0", 300, "old", "1.0"),
    ("zed", "1.1", 300, "1.1", "1.1"),
    ("zed", "latest", 300, "1.1", "1.1"),
    ("zed", "1.2", 406, None, None),
    ("2026.2", "1.1", 300, "1.2", "1.1"),
    ("2026.2", "latest", 300, "1.2", "1.2"),
    ("2026.2", "1.01", 300, "1.2", "1.1"),
    ("2026.2", "1.3", 406, None, None),
    ("2026.2", "garbage", 400, None, None),
    ("2026.2", "1", 400, None, None),
])
def test_version_document(era: str, header: str | None, status: int, shape: str | None,
                          echo: str | None) -> None:
    headers = {MV_HEADER: f"key-manager {header}"} if header else {}
    with MockBarbican(era=era) as m:
        r = requests.get(f"{m.url}/", headers=headers, timeout=5)
        v1 = requests.get(f"{m.url}/v1", headers={**P, **headers}, timeout=5)
    assert r.status_code == status
    assert r.headers.get("openstack-api-version") == (echo and f"key-manager {echo}")
    assert ("vary" in r.headers) == (echo is not None)
    if shape == "old":
        (doc,) = r.json()["versions"]["values"]
        assert doc["status"] == "stable"
        assert doc["links"][0] == {"rel": "self", "href": f"{m.url}/v1/"}
        assert doc["media-types"][0]["type"] == "application/vnd.openstack.key-manager-v1+json"
        assert ("updated" in doc) == (era in ("train", "yoga"))
        assert v1.status_code == 200
        assert v1.json()["version"]["status"] == "stable"
    elif shape:
        (doc,) = r.json()["versions"]
        assert (doc["status"], doc["min_version"], doc["max_version"]) == ("CURRENT", "1.0",
                                                                          shape)
        assert doc["links"][0]["href"] == f"{m.url}/v1/"
        assert v1.json()["version"]["max_version"] == shape
    else:
        assert "Invalid microversion" in r.text
        assert v1.status_code == status


def test_version_app_odds_and_ends(barbican_mock: MockBarbican) -> None:
    url = barbican_mock.url
    home = requests.get(f"{url}/", headers={"Accept": "application/json-home"},
                        allow_redirects=False, timeout=5)
    assert (home.status_code, home.headers["Location"]) == (302, f"{url}/v1/")
    assert requests.get(f"{url}/?build", timeout=5).json() == {"build": "23.0.0"}
    assert requests.post(f"{url}/", timeout=5).status_code == 405
    assert requests.get(f"{url}/", headers={"Accept": "text/html"}, timeout=5).status_code == 406
    assert requests.get(f"{url}/v2", timeout=5).status_code == 404


# -- secrets over HTTP ------------------------------------------------------------------


def test_missing_project_is_400_like_real_barbican(barbican_mock: MockBarbican) -> None:
    r = requests.get(f"{barbican_mock.url}/v1/secrets", timeout=5,
                     headers={"Accept": "application/json"})
    assert r.status_code == 400
    assert "Missing X-Project-Id" in r.json()["message"]
    assert "openstack-api-version" not in r.headers


def test_secret_metadata_payload_and_errors(barbican_mock: MockBarbican) -> None:
    url = barbican_mock.url
    ref = new_secret(url, payload=b"\x00\xff")
    meta = requests.get(ref, headers=P, timeout=5).json()
    assert list(meta) == ["created", "updated", "status", "name", "secret_type", "expiration",
                          "algorithm", "bit_length", "mode", "creator_id", "content_types",
                          "secret_ref"]
    assert meta["content_types"] == {"default": "application/octet-stream"}
    assert "consumers" in requests.get(ref, headers=mv("1.1"), timeout=5).json()
    octet = {**P, "Accept": "application/octet-stream"}
    assert requests.get(f"{ref}/payload", headers=octet, timeout=5).content == b"\x00\xff"
    wrong = requests.get(f"{ref}/payload", headers={**P, "Accept": "text/plain"}, timeout=5)
    assert wrong.status_code == 406
    unknown = requests.get(f"{url}/v1/secrets/{uuid.uuid4()}", headers=P, timeout=5)
    assert unknown.json() == {"code": 404, "title": "Not Found",
                              "description": "Secret not found."}
    bad = requests.get(f"{url}/v1/secrets/not-a-uuid", headers=P, timeout=5)
    assert bad.json()["description"] == "Not Found. Provided secret id is invalid."
    r = requests.post(f"{url}/v1/secrets", data="x", headers={**P, "Content-Type": "text/plain"},
                      timeout=5)
    assert r.status_code == 415
    r = requests.post(f"{url}/v1/secrets", json={"payload": "x"}, headers=P, timeout=5)
    assert r.status_code == 400
    assert "'payload_content_type' must also be supplied" in r.json()["description"]


def test_secret_list_paging(barbican_mock: MockBarbican) -> None:
    url = barbican_mock.url
    for _ in range(3):
        new_secret(url)
    new_secret(url, headers={"X-Project-Id": "other"})
    doc = requests.get(f"{url}/v1/secrets?limit=1&offset=1&name=s", headers=P,
                       timeout=5).json()
    assert doc["total"] == 3 and len(doc["secrets"]) == 1
    assert doc["previous"] == f"{url}/v1/secrets?limit=1&offset=0&name=s"
    assert doc["next"] == f"{url}/v1/secrets?limit=1&offset=2&name=s"
    assert len(barbican_mock.secrets("p1")) == 3 and len(barbican_mock.secrets()) == 4


def test_cross_project_is_403(barbican_mock: MockBarbican) -> None:
    ref = new_secret(barbican_mock.url)
    other = {"X-Project-Id": "p2"}
    for method, path in [("GET", ""), ("GET", "/payload"), ("DELETE", ""),
                         ("GET", "/consumers"), ("POST", "/consumers"),
                         ("DELETE", "/consumers")]:
        r = requests.request(method, ref + path, headers=other, json=CONSUMER, timeout=5)
        assert r.status_code == 403, (method, path)
        assert r.json()["description"].endswith(
            "attempt not allowed - please review your user/project privileges")


@pytest.mark.parametrize(("era", "header", "query", "status"), [
    ("train", None, "", 204),
    ("yoga", None, "", 204),
    ("zed", "1.1", "", 204),
    ("2026.2", None, "", 204),
    ("2026.2", "1.1", "", 204),
    ("2026.2", "1.2", "", 400),
    ("2026.2", "1.2", "?force=false", 400),
    ("2026.2", "1.2", "?force=maybe", 400),
    ("2026.2", "1.2", "?force=true", 204),
    ("2026.2", "1.2", "?force=1", 204),
])
def test_delete_with_consumers(era: str, header: str | None, query: str, status: int) -> None:
    with MockBarbican(era=era) as m:
        ref = new_secret(m.url)
        sid = ref.rsplit("/", 1)[1]
        if era != "train":
            assert add_consumer(ref).status_code == 200
        r = requests.delete(ref + query, headers=mv(header) if header else P, timeout=5)
        assert r.status_code == status, r.text
        if status == 400 and not query.endswith("maybe"):
            assert r.json()["description"] == ("Secret deletion issue seen - Secret cannot be "
                                               "deleted as it has consumers..")
        assert (m.counts()["secrets"], m.consumers(sid) == []) == (
            (0, True) if status == 204 else (1, False))


# -- consumers over HTTP ----------------------------------------------------------------


@pytest.mark.parametrize("era", ["yoga", "zed", "2026.2"])
def test_consumers_lifecycle(era: str) -> None:
    with MockBarbican(era=era) as m:
        ref = new_secret(m.url)
        first = add_consumer(ref)
        assert first.status_code == 200
        assert first.headers["Location"].endswith("/consumers")
        assert add_consumer(ref).json() == first.json()  # idempotent
        doc = first.json()
        assert ("consumers" in doc) == (era != "yoga")
        assert ("content_types" in doc) == (era == "2026.2")
        for i in range(11):
            assert add_consumer(ref, resource_id=f"r{i:02d}").status_code == 200
        listed = requests.get(f"{ref}/consumers", headers=P, timeout=5).json()
        assert listed["total"] == 12 and len(listed["consumers"]) == 10
        assert listed["next"] == f"{ref}/consumers?limit=10&offset=10"
        assert set(listed["consumers"][0]) == {"created", "updated", "status", "service",
                                               "resource_type", "resource_id"}
        paged = requests.get(f"{ref}/consumers?limit=3&offset=3", headers=P, timeout=5).json()
        assert [c["resource_id"] for c in paged["consumers"]] == ["r02", "r03", "r04"]
        assert paged["previous"] == f"{ref}/consumers?limit=3&offset=0"
        gone = requests.delete(f"{ref}/consumers", json=CONSUMER, headers=P, timeout=5)
        assert gone.status_code == 200
        again = requests.delete(f"{ref}/consumers", json=CONSUMER, headers=P, timeout=5)
        assert again.json() == {"code": 404, "title": "Not Found",
                                "description": "Consumer not found."}
        assert m.counts()["consumers"] == 11


@pytest.mark.parametrize(("era", "kept"), [("yoga", 1), ("2026.2", 2)])
def test_consumer_uniqueness_per_era(era: str, kept: int) -> None:
    """Ussuri to Yoga key consumers on (secret, resource_id) only (fixed in Zed)."""
    with MockBarbican(era=era) as m:
        ref = new_secret(m.url)
        add_consumer(ref)
        add_consumer(ref, service="volume")
        assert len(m.consumers(ref.rsplit("/", 1)[1])) == kept
        r = requests.delete(f"{ref}/consumers", json={**CONSUMER, "service": "other"},
                            headers=P, timeout=5)
        assert r.status_code == (200 if era == "yoga" else 404)


def test_consumer_request_errors(barbican_mock: MockBarbican) -> None:
    ref = new_secret(barbican_mock.url)
    r = requests.post(f"{ref}/consumers", data='{"service": "x"}', timeout=5,
                      headers={**P, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(f"{ref}/consumers", json={"service": "x", "resource_type": "y"},
                      headers=P, timeout=5)
    assert r.status_code == 400
    assert "'resource_id' is a required property" in r.json()["description"]
    r = requests.post(f"{ref}/consumers", json={**CONSUMER, "service": ""}, headers=P, timeout=5)
    assert r.status_code == 400
    r = requests.post(f"{barbican_mock.url}/v1/secrets/{uuid.uuid4()}/consumers", json=CONSUMER,
                      headers=P, timeout=5)
    assert r.status_code == 404
    assert requests.put(f"{ref}/consumers", headers=P, timeout=5).status_code == 405


def test_train_has_no_consumer_routes() -> None:
    with MockBarbican(era="train") as m:
        ref = new_secret(m.url)
        r = add_consumer(ref)
        assert r.status_code == 404
        assert r.json() == {"code": 404, "title": "Not Found", "description": ""}
        unknown = requests.get(f"{m.url}/v1/secrets/{uuid.uuid4()}", headers=P, timeout=5)
        assert "another castle" in unknown.json()["description"]


# -- faults -----------------------------------------------------------------------------


def test_error_burst_then_normal(barbican_mock: MockBarbican) -> None:
    barbican_mock.faults.error_burst = 3
    codes = [requests.get(f"{barbican_mock.url}/", timeout=5).status_code for _ in range(5)]
    assert codes == [503, 503, 503, 300, 300]
    assert [s for _, _, s in barbican_mock.requests_log()] == codes
    assert barbican_mock.counts()["requests"] == 5


def test_error_rate_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        with MockBarbican(faults=Faults(error_rate=0.5, seed=7)) as m:
            runs.append([requests.get(f"{m.url}/", timeout=5).status_code for _ in range(12)])
    assert runs[0] == runs[1]
    assert {503, 300} == set(runs[0])


def test_drop_closes_connection(barbican_mock: MockBarbican) -> None:
    barbican_mock.faults.drop_next = 1
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{barbican_mock.url}/v1/secrets", headers=P, timeout=5)
    assert requests.get(f"{barbican_mock.url}/v1/secrets", headers=P, timeout=5).ok
    assert barbican_mock.requests_log() == [("GET", "/v1/secrets", 0),
                                            ("GET", "/v1/secrets", 200)]


def test_latency(barbican_mock: MockBarbican) -> None:
    barbican_mock.faults.latency = 0.3
    start = time.monotonic()
    requests.get(f"{barbican_mock.url}/", timeout=5)
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize("status", [403, 500])
def test_consumers_fail(barbican_mock: MockBarbican, status: int) -> None:
    ref = new_secret(barbican_mock.url)
    barbican_mock.faults.consumers_fail = status
    assert add_consumer(ref).status_code == status
    r = requests.delete(f"{ref}/consumers", json=CONSUMER, headers=P, timeout=5)
    assert r.status_code == status
    assert requests.get(f"{ref}/consumers", headers=P, timeout=5).status_code == 200
    barbican_mock.faults.consumers_fail = None
    assert add_consumer(ref).status_code == 200


# -- CLI and loopback -------------------------------------------------------------------


def test_cli_serves_and_stops() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "barbican_mock", "--port", "0", "--era", "yoga"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            doc = requests.get(f"{url}/", timeout=5).json()
            assert doc["versions"]["values"][0]["status"] == "stable"
        finally:
            proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_non_loopback_refused() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        MockBarbican(host="0.0.0.0")
    out = subprocess.run([sys.executable, "-m", "barbican_mock", "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=10,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 2
    assert "--allow-remote" in out.stderr

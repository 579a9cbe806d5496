"""The import plugin acts in Barbican as the importing user: their token, unchanged.

``glance.keys.for_request`` builds its own keystoneauth plugin from the request context (no
castellan private function): the token goes out as it came in, the endpoint is
``[barbican] barbican_endpoint`` or the catalog's, TLS verification is castellan's options.
A :class:`TokenGate` in front of barbican_mock plays keystonemiddleware.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from castellan.key_manager import barbican_key_manager
from oslo_config import cfg

from barbican_mock import MockBarbican
from img_crypt.errors import CredentialsError, KeyManagerError
from img_crypt.glance import keys as glance_keys
from img_crypt.glance.context_auth import ContextAuth
from tests.support.glance_import import glance_conf
from tests.support.token_gate import TokenGate

TOKEN = "gAAAAABk-user-token/with+odd=chars"
ELSEWHERE = "http://127.0.0.1:9"  # nothing listens: choosing it would fail loudly


@dataclass
class FakeContext:
    """What the plugin reads from Glance's RequestContext."""

    auth_token: str | None = TOKEN
    project_id: str | None = "p1"
    service_catalog: list[dict[str, Any]] = field(default_factory=list)


def v2_catalog(public: str, internal: str = ELSEWHERE,
               region: str = "RegionOne") -> list[dict[str, Any]]:
    """keystonemiddleware's X-Service-Catalog form."""
    return [{"type": "key-manager", "name": "barbican", "endpoints": [
        {"region": region, "publicURL": public, "internalURL": internal}]}]


@pytest.fixture
def gate() -> Iterator[TokenGate]:
    with MockBarbican() as mock, TokenGate(mock.url, {TOKEN: "p1"}) as front:
        yield front


def conf_for(endpoint: str | None, **barbican: Any) -> cfg.ConfigOpts:
    conf = glance_conf(endpoint)
    for name, value in barbican.items():
        conf.set_override(name, value, group="barbican")
    return conf


def test_the_context_token_is_sent_unchanged_on_every_call(gate: TokenGate) -> None:
    manager = glance_keys.for_request(conf_for(gate.url), FakeContext())
    key_id = manager.create_key("k")
    assert len(manager.get_key(key_id)) == 32
    v1_calls = [s for s in gate.seen if s[1].startswith("/v1/")]
    assert v1_calls and {token for _, _, token in v1_calls} == {TOKEN}
    assert not [s for s in gate.seen if s[1].startswith("/v3")]  # no rescoping at Keystone


def test_the_session_auth_is_the_context_token_not_a_new_one(gate: TokenGate) -> None:
    manager = glance_keys.for_request(conf_for(gate.url), FakeContext())
    auth = manager.http.session.auth
    assert isinstance(auth, ContextAuth)
    assert auth.get_token(manager.http.session) == TOKEN
    assert manager.http.project_id is None  # the token scopes the call, not X-Project-Id


def test_a_token_barbican_refuses_is_a_credentials_error(gate: TokenGate) -> None:
    manager = glance_keys.for_request(conf_for(gate.url), FakeContext(auth_token="stale"))
    with pytest.raises(CredentialsError):
        manager.create_key("k")


@pytest.mark.parametrize("context", [FakeContext(auth_token=None), FakeContext(auth_token=""),
                                     None], ids=["none", "empty", "no-context"])
def test_a_context_without_a_token_is_a_key_manager_error(context: FakeContext | None) -> None:
    with pytest.raises(KeyManagerError, match="carries no token") as caught:
        glance_keys.for_request(conf_for(ELSEWHERE), context)
    assert "\n" not in str(caught.value)


def test_the_configured_endpoint_wins_over_the_catalog(gate: TokenGate) -> None:
    context = FakeContext(service_catalog=v2_catalog(ELSEWHERE))
    manager = glance_keys.for_request(conf_for(gate.url), context)
    assert manager.http.root == gate.url


def test_without_a_configured_endpoint_the_context_catalog_names_it(gate: TokenGate) -> None:
    context = FakeContext(service_catalog=v2_catalog(gate.url + "/"))
    manager = glance_keys.for_request(conf_for(None), context)
    assert manager.http.root == gate.url
    manager.create_key("k")


def test_the_endpoint_type_and_region_options_choose_the_catalog_entry() -> None:
    catalog = v2_catalog("http://public.test:9311", "http://internal.test:9311", "R1")
    catalog[0]["endpoints"].append({"region": "R2", "publicURL": "http://r2.test:9311",
                                    "internalURL": "http://r2-internal.test:9311"})
    internal = conf_for(None, barbican_endpoint_type="internal", barbican_region_name="R1")
    r2 = conf_for(None, barbican_region_name="R2")
    context = FakeContext(service_catalog=catalog)
    assert glance_keys.for_request(internal, context).http.root == "http://internal.test:9311"
    assert glance_keys.for_request(r2, context).http.root == "http://r2.test:9311"


def test_without_any_catalog_keystone_is_asked_with_the_same_token(gate: TokenGate) -> None:
    conf = conf_for(None, auth_endpoint=gate.url + "/v3")
    manager = glance_keys.for_request(conf, FakeContext())
    assert manager.http.root == gate.url
    assert ("GET", "/v3/auth/catalog", TOKEN) in gate.seen


def test_a_catalog_without_barbican_is_a_key_manager_error() -> None:
    context = FakeContext(service_catalog=[{"type": "image", "endpoints": [
        {"region": "RegionOne", "publicURL": "http://glance.test"}]}])
    with pytest.raises(KeyManagerError, match="barbican_endpoint"):
        glance_keys.for_request(conf_for(None), context)


def test_keystone_refusing_the_token_for_the_catalog_is_a_credentials_error(
        gate: TokenGate) -> None:
    conf = conf_for(None, auth_endpoint=gate.url + "/v3")
    with pytest.raises(CredentialsError):
        glance_keys.for_request(conf, FakeContext(auth_token="stale"))


@pytest.mark.parametrize(("options", "expected"), [
    ({}, True),
    ({"verify_ssl": False}, False),
    ({"verify_ssl_path": "/etc/ssl/barbican-ca.pem"}, "/etc/ssl/barbican-ca.pem"),
    ({"verify_ssl": False, "verify_ssl_path": "/etc/ssl/barbican-ca.pem"}, False),
], ids=["default", "off", "ca-bundle", "off-wins"])
def test_tls_verification_follows_the_barbican_options(options: dict[str, Any],
                                                       expected: bool | str) -> None:
    manager = glance_keys.for_request(conf_for(ELSEWHERE, **options), FakeContext())
    assert manager.http.session.verify == expected


def test_no_private_castellan_function_is_called(monkeypatch: pytest.MonkeyPatch,
                                                 gate: TokenGate) -> None:
    def private(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("castellan's private API was called")

    cls = barbican_key_manager.BarbicanKeyManager
    for name in ("_get_keystone_auth", "_get_barbican_endpoint", "_get_barbican_client"):
        monkeypatch.setattr(cls, name, private)
    manager = glance_keys.for_request(conf_for(gate.url), FakeContext())
    manager.create_key("k")

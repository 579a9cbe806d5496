"""The Barbican key manager: KEKs as Barbican secrets, images as their consumers.

Works on every Barbican era (see :mod:`img_crypt.keys._barbican_http`): python-barbicanclient
for secrets and orders, and for consumers where it allows them (microversion >= 1.1); direct
REST calls over the same keystoneauth session for the consumer API of unmicroversioned servers
(Ussuri to Yoga), which the client refuses. Deleting a key refuses while consumers remain on
every era, not only where the server enforces it (1.2).
"""

from __future__ import annotations

import base64
import logging
import re
import secrets as rnd
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Literal

from barbicanclient import client as bc_client
from barbicanclient import exceptions as bc_exc
from keystoneauth1.session import Session

from img_crypt.errors import (
    ConsumerNotFoundError,
    ConsumersUnsupportedError,
    CredentialsError,
    ForbiddenError,
    ImgCryptError,
    KeyHasConsumersError,
    KeyManagerError,
    KeyNotFoundError,
    UnavailableError,
)
from img_crypt.keys._barbican_http import Endpoint, Era, Http
from img_crypt.keys.base import (
    KEK_BYTES,
    Consumer,
    ConsumerList,
    KeyInfo,
    KeyManager,
    UnreadableConsumer,
)

LOG = logging.getLogger("img_crypt.barbican")
ConsumerPolicy = Literal["required", "best_effort"]
_PAGE = 100
_BINARY = "application/octet-stream"
_DEFAULT_NAME = "img-crypt-kek"
_SUFFIX_HEX = 12
_SUFFIX = re.compile(rf"-[0-9a-f]{{{_SUFFIX_HEX}}}\Z")


class BarbicanKeyManager(KeyManager):
    """KEKs in Barbican, for one project, through one keystoneauth session.

    ``endpoint`` is a URL or an :class:`Endpoint` shared with other managers of the same
    server, which then discover its era and consumer API once between them.
    """

    kind: ClassVar[str] = "barbican"

    def __init__(self, session: Session, endpoint: str | Endpoint, *, project_id: str | None = None,
                 service: str = "image", consumers: ConsumerPolicy = "required",
                 retries: int = 3, backoff: float = 0.5, order_timeout: float = 30.0) -> None:
        self.http = Http(session, endpoint, project_id, retries=retries, backoff=backoff)
        self.service, self.consumer_policy = service, consumers
        self.order_timeout = order_timeout
        self._client: Any = None
        self._made: set[str] = set()  # secrets this manager created: binary, 256-bit

    # --- plumbing ------------------------------------------------------------------------

    @property
    def era(self) -> Era:
        """The endpoint's era (discovered once per :class:`Endpoint` object)."""
        return self.http.era()

    @property
    def client(self) -> Any:
        """A python-barbicanclient client at the discovered microversion."""
        if self._client is None:
            era = self.era
            self._client = self.http.call("connect to Barbican", lambda: bc_client.Client(
                session=self.http.session, endpoint=self.http.root,
                project_id=self.http.project_id, microversion=era.microversion))
        return self._client

    @staticmethod
    def _ref(key_id: str) -> str:
        try:
            return str(uuid.UUID(key_id))
        except ValueError:
            raise KeyNotFoundError(f"{key_id!r} is not a Barbican secret id") from None

    # --- keys ----------------------------------------------------------------------------

    def create_key(self, name: str | None = None) -> str:
        """Generate a KEK server-side through an order; store a local one if orders fail."""
        label = _label(name)
        _ = self.client  # discover and connect first: a failure here created nothing
        try:
            ref = self._order_key(label)
        except (CredentialsError, ForbiddenError, UnavailableError):
            self._delete_by_name(label)
            raise
        except (KeyManagerError, TimeoutError) as e:
            LOG.warning("key order failed (%s); storing a locally generated key instead", e)
            self._delete_by_name(label)
            ref = self._store_key(label)
        self._made.add(_secret_id(ref))
        return _secret_id(ref)

    def _order_key(self, label: str) -> str:
        order = self.client.orders.create_key(name=label, algorithm="aes", bit_length=256,
                                              mode="cbc",
                                              payload_content_type="application/octet-stream")
        order_ref = self.http.call("order a key", order.submit, idempotent=False)
        deadline = time.monotonic() + self.order_timeout
        while time.monotonic() < deadline:
            status, secret_ref = self.http.call("check the key order",
                                                lambda: self._order_state(order_ref))
            if status == "ACTIVE" and secret_ref:
                self.http.call("tidy the key order", lambda: self.client.orders.delete(order_ref))
                return str(secret_ref)
            if status == "ERROR":
                self.http.call("tidy the key order", lambda: self.client.orders.delete(order_ref))
                raise KeyManagerError(f"the key order {order_ref} failed")
            time.sleep(0.2)
        raise TimeoutError(f"the key order {order_ref} did not complete")

    def _order_state(self, order_ref: str) -> tuple[str, str | None]:
        order = self.client.orders.get(order_ref)
        return str(order.status), order.secret_ref

    def _store_key(self, label: str) -> str:
        """Store a locally generated key (a direct call, so no library logs its body)."""
        body = {"name": label, "payload": base64.b64encode(rnd.token_bytes(KEK_BYTES)).decode(),
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64", "algorithm": "aes", "bit_length": 256,
                "mode": "cbc", "secret_type": "symmetric"}
        era = self.era
        try:
            reply = self.http.call("store a key", lambda: self.http.rest(
                "POST", "secrets", era, json=body, ok=(201,), secret_body=True),
                idempotent=False)
        except KeyManagerError:
            self._delete_by_name(label)  # the store may have landed before the error
            raise
        return str(reply["secret_ref"])

    def _delete_by_name(self, label: str) -> None:
        """Best effort: delete secrets a failed create may have left under ``label``."""
        try:
            found = self.http.call("look for a half-created key",
                                   lambda: self.client.secrets.list(name=label, limit=10))
            for secret in found:
                self.http.call("delete a half-created key", secret.delete)
        except KeyManagerError as e:
            LOG.warning("could not check for a half-created key %s: %s", label, e)

    def get_key(self, key_id: str) -> bytes:
        """Fetch the KEK's 32 bytes.

        The metadata comes through python-barbicanclient; the payload of a binary secret only
        through :meth:`Http.payload` (never logged). Any other secret (a text passphrase, say)
        is refused without fetching it: the client would fetch it with its own content type,
        and keystoneauth logs text bodies at DEBUG. A key this manager created (binary, by
        :meth:`create_key`) skips the metadata: only its payload is fetched.
        """
        ref = self._ref(key_id)
        era = self.era

        def fetch() -> bytes | None:
            # a key this manager created is binary: one request, not two, for the import
            if ref not in self._made and \
                    self.client.secrets.get(ref).payload_content_type != _BINARY:
                return None
            return self.http.payload(ref, era)

        payload = self.http.call(f"fetch key {ref}", fetch)
        if payload is None or len(payload) != KEK_BYTES:
            raise KeyManagerError(f"Barbican secret {ref} is not a 256-bit key")
        return payload

    @property
    def delete_is_atomic(self) -> bool:
        """Only Barbican itself can refuse atomically, from microversion 1.2 on.

        Below 1.2 :meth:`delete_key` lists the consumers, then deletes: a consumer
        registered between the two goes with the key.
        """
        return self.era.protects_consumers

    def key_info(self, key_id: str) -> KeyInfo:
        """The secret's metadata (one GET), never its payload."""
        ref = self._ref(key_id)

        def fetch() -> KeyInfo:
            secret = self.client.secrets.get(ref)
            return KeyInfo(key_id=ref, name=_given_name(secret.name), created=secret.created,
                           consumers=len(getattr(secret, "consumers", None) or []))

        return self.http.call(f"fetch key {ref}", fetch)

    def delete_key(self, key_id: str, *, force: bool = False) -> None:
        """Delete a KEK; without ``force`` refuse while consumers remain, on every era."""
        ref = self._ref(key_id)
        if not force and not self.era.protects_consumers:
            try:
                remaining = self.list_consumers(ref)
            except ConsumersUnsupportedError:
                remaining = []  # a pre-consumer server: nothing can be registered on it
            if remaining:
                raise KeyHasConsumersError(f"key {ref} has {len(remaining)} consumer(s), "
                                           f"e.g. {_show(remaining[0])}; not deleted")
        tried = False

        def delete() -> None:
            nonlocal tried
            try:
                self.client.secrets.delete(ref, force=force)
            except bc_exc.HTTPClientError as e:
                if not (tried and e.status_code == 404):
                    raise
                # 404 on a retry: the attempt whose answer was lost deleted it
            finally:
                tried = True

        self.http.call(f"delete key {ref}", delete)

    def list_keys(self) -> list[KeyInfo]:
        """List the project's secrets (every page)."""
        infos: list[KeyInfo] = []
        while True:
            page = self.http.call("list keys", partial(self.client.secrets.list, limit=_PAGE,
                                                       offset=len(infos)))
            infos += [KeyInfo(key_id=_secret_id(s.secret_ref), name=_given_name(s.name),
                              created=s.created, consumers=len(s.consumers or []))
                      for s in page]
            if len(page) < _PAGE:
                return infos

    # --- consumers -----------------------------------------------------------------------

    def _consumer_call(self, what: str, ref: str, via_client: Callable[[], Any],
                       via_rest: Callable[[Era], Any]) -> Any:
        """Run a consumer operation on this era, learning whether the API exists at all."""
        era = self.era
        if era.microversioned:
            return self.http.call(what, via_client, not_found=ConsumerNotFoundError)
        if self.http.consumer_api() is False:
            raise ConsumersUnsupportedError("this Barbican has no secret-consumer API "
                                            "(Train or older)")
        try:
            result = self.http.call(what, lambda: via_rest(era))
        except KeyNotFoundError:
            if self.http.consumer_api() is None:
                self._learn_consumer_api(ref, era)
                return self._consumer_call(what, ref, via_client, via_rest)
            raise ConsumerNotFoundError(f"{what}: consumer not found") from None
        self.http.set_consumer_api(True)
        return result

    def _learn_consumer_api(self, ref: str, era: Era) -> None:
        """A 404 on a consumer route: list the consumers to tell "no API" from "not found"."""
        try:
            self.http.call(f"probe the consumer API with key {ref}", lambda: self.http.rest(
                "GET", f"secrets/{ref}/consumers", era, params={"limit": 1}))
        except KeyNotFoundError:
            # the listing 404s too: no consumer API, or no such secret; the secret says which
            self.http.call(f"fetch key {ref}", lambda: self.http.rest("GET", f"secrets/{ref}",
                                                                     era))
            self.http.set_consumer_api(False)
            return
        self.http.set_consumer_api(True)

    def _unsupported(self, error: ConsumersUnsupportedError, what: str) -> None:
        if self.consumer_policy == "required":
            raise error
        LOG.warning("%s skipped: %s (consumers = best_effort)", what, error)

    def add_consumer(self, key_id: str, consumer: Consumer) -> None:
        """Register ``consumer`` on the key (idempotent)."""
        ref, data = self._ref(key_id), consumer.to_dict()
        try:
            self._consumer_call(
                f"register consumer {_show(consumer)} on key {ref}", ref,
                lambda: self.client.secrets.register_consumer(ref, **data),
                lambda era: self.http.rest("POST", f"secrets/{ref}/consumers", era, json=data))
        except ConsumersUnsupportedError as e:
            self._unsupported(e, "registering a consumer")
        except ConsumerNotFoundError:
            raise KeyNotFoundError(f"key {ref} not found in Barbican") from None

    def remove_consumer(self, key_id: str, consumer: Consumer) -> None:
        """Remove ``consumer`` from the key; ConsumerNotFoundError if it was not there."""
        ref, data = self._ref(key_id), consumer.to_dict()
        what = f"remove consumer {_show(consumer)} from key {ref}"
        try:
            self._consumer_call(
                what, ref, lambda: self.client.secrets.remove_consumer(ref, **data),
                lambda era: self.http.rest("DELETE", f"secrets/{ref}/consumers", era,
                                           json=data))
        except ConsumersUnsupportedError as e:
            self._unsupported(e, "removing a consumer")
        except ConsumerNotFoundError:
            self._raise_missing(ref, what)

    def _raise_missing(self, ref: str, what: str) -> None:
        """A 404 from a consumer call: tell a missing key from a missing consumer."""
        self.http.call(f"fetch key {ref}", lambda: self.http.rest("GET", f"secrets/{ref}",
                                                                 self.era))
        raise ConsumerNotFoundError(f"{what}: no such consumer")

    def list_consumers(self, key_id: str) -> list[Consumer]:
        """Every consumer of the key (all pages); [] on a pre-consumer server if best_effort."""
        ref = self._ref(key_id)
        found = ConsumerList()
        offset = 0
        try:
            while True:
                page = self._consumer_call(
                    f"list the consumers of key {ref}", ref,
                    partial(self._client_consumers, ref, offset),
                    partial(self._rest_consumers, ref, offset))
                offset += len(page)
                for raw in page:
                    parsed = _consumer(raw)
                    if isinstance(parsed, Consumer):
                        found.append(parsed)
                    else:
                        found.unreadable.append(parsed)
                if len(page) < _PAGE:
                    return found
        except ConsumersUnsupportedError as e:
            self._unsupported(e, "listing consumers")
            return []
        except ConsumerNotFoundError:
            raise KeyNotFoundError(f"key {ref} not found in Barbican") from None


    def _client_consumers(self, ref: str, offset: int) -> list[Any]:
        # A direct GET at the client's microversion, not secrets.list_consumers: the client
        # raises TypeError on a record with a missing field, losing the whole page.
        return self._rest_consumers(ref, offset, self.era)

    def _rest_consumers(self, ref: str, offset: int, era: Era) -> list[Any]:
        body = self.http.rest("GET", f"secrets/{ref}/consumers", era,
                              params={"limit": _PAGE, "offset": offset})
        page = body.get("consumers") if isinstance(body, dict) else None
        if not isinstance(page, list):
            raise KeyManagerError(f"Barbican's consumer list of key {ref} is not a list")
        return page


def _label(name: str | None) -> str:
    """The secret name of a key its caller names ``name``, made unique by a random suffix.

    A create whose answer was lost finds (and deletes) what it left by this label.
    """
    return f"{name or _DEFAULT_NAME}-{uuid.uuid4().hex[:_SUFFIX_HEX]}"


def _given_name(label: str | None) -> str | None:
    """The name the caller gave: ``label`` without the suffix :func:`_label` adds.

    Every name that ends like one (``-`` and 12 lowercase hex digits) loses it, keys made by
    older versions included.
    """
    if label and _SUFFIX.search(label):
        return label[:-_SUFFIX_HEX - 1]
    return label


def _secret_id(secret_ref: str) -> str:
    """The UUID at the end of a secret reference URL."""
    return secret_ref.rstrip("/").rsplit("/", 1)[-1]


def _consumer(raw: object) -> Consumer | UnreadableConsumer:
    """One record of a consumer listing, or why it is not a consumer we can act on.

    Its ``created`` is the later of Barbican's ``created`` and ``updated``: a consumer removed
    and registered again is revived with its first ``created`` and a new ``updated``.
    """
    if not isinstance(raw, dict):
        return UnreadableConsumer({}, "not a JSON object")
    fields = {k: raw.get(k) for k in ("service", "resource_type", "resource_id")}
    missing = [k for k, v in fields.items() if v is None]
    if missing:
        return UnreadableConsumer(raw, f"missing {', '.join(missing)}")
    try:
        return Consumer(service=raw["service"], resource_type=raw["resource_type"],
                        resource_id=raw["resource_id"],
                        created=_latest(raw.get("created"), raw.get("updated")))
    except (ValueError, TypeError, ImgCryptError) as e:
        return UnreadableConsumer(raw, str(e))


def _latest(*stamps: object) -> datetime | None:
    """The latest of Barbican's timestamps (naive ISO 8601 is UTC); None if none reads."""
    times = []
    for stamp in stamps:
        try:
            when = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        except ValueError:
            when = None
        if when is not None:
            times.append(when if when.tzinfo else when.replace(tzinfo=UTC))
    return max(times, default=None)


def _show(consumer: Consumer) -> str:
    return f"{consumer.service}/{consumer.resource_type}/{consumer.resource_id}"

"""HTTP plumbing of the Barbican adapter: eras, retries, error translation, direct REST calls.

Barbican eras (shared/notes/openstack.md section 2): microversioned servers (Zed and later)
answer the version document with ``max_version``; older ones answer the "stable" document and
are treated as microversion 1.0. Whether a 1.0 server has the consumer API (Ussuri to Yoga)
or not (Train) is learnt from the first consumer call. Both facts live on an :class:`Endpoint`
object, which managers of one server may share by passing it in. A long-lived process that
makes a manager per request (Glance) takes its Endpoint from :func:`shared_endpoint`: one per
URL, rediscovered after :data:`SHARED_TTL` seconds; the CLI caches nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from barbicanclient import exceptions as bc_exc
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1.session import Session

from img_crypt.errors import (
    CredentialsError,
    ForbiddenError,
    KeyHasConsumersError,
    KeyManagerError,
    KeyNotFoundError,
    UnavailableError,
)

LOG = logging.getLogger("img_crypt.barbican")
T = TypeVar("T")
_CONNECTION_ERRORS = (ks_exc.ConnectionError, requests.ConnectionError, requests.Timeout)
_HEADER = "OpenStack-API-Version"


@dataclass(frozen=True)
class Era:
    """What a Barbican endpoint speaks."""

    microversion: str
    """The microversion we use: ``1.0`` (unmicroversioned), ``1.1`` or ``1.2``."""

    @property
    def microversioned(self) -> bool:
        """True from Zed on; python-barbicanclient then serves consumer calls itself."""
        return self.microversion != "1.0"

    @property
    def protects_consumers(self) -> bool:
        """True when the server itself refuses to delete a secret with consumers (1.2)."""
        return _parse(self.microversion) >= (1, 2)


class Endpoint:
    """One Barbican server and what was learnt about it: its era and its consumer API.

    Share one between the managers of one server to discover once; a new one rediscovers
    (an upgraded server, a test starting a mock on a reused port).
    """

    def __init__(self, url: str) -> None:
        self.root = url.rstrip("/").removesuffix("/v1")
        self._lock = threading.Lock()
        self._era: Era | None = None
        self._consumer_api: bool | None = None

    @property
    def known_era(self) -> Era | None:
        """The era, if discovered yet."""
        with self._lock:
            return self._era

    def learn_era(self, era: Era) -> Era:
        """Remember the era; the first one learnt wins (two discoveries raced)."""
        with self._lock:
            if self._era is None:
                self._era = era
            return self._era

    @property
    def consumer_api(self) -> bool | None:
        """Whether the server serves consumers, if known yet."""
        with self._lock:
            return self._consumer_api

    def learn_consumer_api(self, present: bool) -> None:
        """Remember whether the server serves consumers."""
        with self._lock:
            self._consumer_api = present


SHARED_TTL = 300.0
"""Seconds a process keeps what it learnt about an endpoint (an upgraded Barbican is seen)."""
_shared: dict[str, tuple[float, Endpoint]] = {}
_shared_lock = threading.Lock()


def shared_endpoint(url: str, *, ttl: float = SHARED_TTL,
                    clock: Callable[[], float] = time.monotonic) -> Endpoint:
    """The :class:`Endpoint` of ``url`` in this process; a new one once ``ttl`` seconds old."""
    fresh = Endpoint(url)
    now = clock()
    with _shared_lock:
        known = _shared.get(fresh.root)
        if known is not None and now - known[0] < ttl:
            return known[1]
        _shared[fresh.root] = (now, fresh)
        return fresh


def _parse(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


class HttpStatusError(Exception):
    """A non-success answer from a direct REST call, before translation."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(f"HTTP {status}: {description}")
        self.status = status
        self.description = description


def _status_of(error: BaseException) -> tuple[int, str]:
    if isinstance(error, HttpStatusError):
        return error.status, error.description
    if isinstance(error, bc_exc.HTTPAuthError | ks_exc.Unauthorized):
        return 401, ""
    if isinstance(error, ks_exc.HttpError):
        return int(error.http_status or 0), str(error.details or error.message or "")
    if isinstance(error, bc_exc.HTTPError):
        return int(getattr(error, "status_code", 0) or 0), str(error)
    if isinstance(error, bc_exc.SecretHasConsumers):
        return 409, str(error)
    return 0, str(error)


def translate(what: str, error: BaseException,
              not_found: type[KeyManagerError] = KeyNotFoundError) -> KeyManagerError:
    """Map a barbicanclient, keystoneauth or REST error to our exception tree."""
    if isinstance(error, _CONNECTION_ERRORS):
        return UnavailableError(f"{what}: cannot reach Barbican ({type(error).__name__})")
    status, text = _status_of(error)
    if status == 401:
        return CredentialsError()
    detail = f"{what}: HTTP {status}" + (f": {text}" if text else "")
    if status == 409 or (status == 400 and "has consumers" in text):
        return KeyHasConsumersError(f"{what}: the key still has consumers (use --force)")
    mapped: dict[int, type[KeyManagerError]] = {403: ForbiddenError, 404: not_found}
    if status in mapped:
        return mapped[status](detail)
    if status >= 500:
        return UnavailableError(detail)
    return KeyManagerError(detail)


def _retryable(error: BaseException) -> bool:
    status, _ = _status_of(error)
    return isinstance(error, _CONNECTION_ERRORS) or status >= 500


class Http:
    """One endpoint and project over one keystoneauth session, with bounded retries."""

    def __init__(self, session: Session, endpoint: str | Endpoint,
                 project_id: str | None = None, *, retries: int = 3, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.session = session
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint(endpoint)
        self.root = self.endpoint.root
        self.project_id = project_id
        self.retries, self.backoff, self._sleep = retries, backoff, sleep

    def call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True,
             not_found: type[KeyManagerError] = KeyNotFoundError) -> T:
        """Run ``fn``; retry connection errors and 5xx (only if ``idempotent``); translate."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (KeyError, TypeError) as e:
                status = _unparsed_error_status(e)
                if status is None:
                    raise
                raise translate(what, HttpStatusError(status, "")) from None
            except (bc_exc.BarbicanException, bc_exc.HTTPError, ks_exc.ClientException,
                    requests.RequestException, HttpStatusError) as e:
                if not (idempotent and _retryable(e)) or attempt == self.retries:
                    raise translate(what, e, not_found) from None
                delay = min(self.backoff * 2 ** attempt, 8.0)
                LOG.warning("%s failed (%s); retry %d of %d in %.1f s", what,
                            type(e).__name__, attempt + 1, self.retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def headers(self, era: Era | None) -> dict[str, str]:
        """Project and microversion headers for a direct call."""
        headers = {"Accept": "application/json"}
        if self.project_id:
            headers["X-Project-Id"] = self.project_id
        if era is not None and era.microversioned:
            headers[_HEADER] = f"key-manager {era.microversion}"
        return headers

    def rest(self, method: str, path: str, era: Era | None, *,
             json: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
             ok: tuple[int, ...] = (200,), secret_body: bool = False) -> Any:
        """One direct call to ``/v1/<path>``; JSON body back, or HttpStatusError.

        ``secret_body``: the request carries key material, so keystoneauth must not log it
        (it logs request bodies at DEBUG): the call is made with ``log=False``. A logger
        silenced by its level would not do: ``logging.config`` (oslo.log's
        ``log_config_append``) resets the level of every child of a logger it configures.
        """
        resp = self.session.request(f"{self.root}/v1/{path}", method, json=json,
                                    params=params, headers=self.headers(era), raise_exc=False,
                                    log=not secret_body)
        if resp.status_code not in ok:
            raise HttpStatusError(resp.status_code, _description(resp))
        return resp.json() if resp.content else None

    def payload(self, ref: str, era: Era) -> bytes:
        """The bytes of secret ``ref`` as ``application/octet-stream``, never logged.

        keystoneauth logs response bodies at DEBUG when the server labels them JSON or text;
        with ``log=False`` no label a server or proxy puts on the key makes it log it.
        """
        headers = self.headers(era) | {"Accept": "application/octet-stream"}
        resp = self.session.request(f"{self.root}/v1/secrets/{ref}/payload", "GET",
                                    headers=headers, raise_exc=False, log=False)
        if resp.status_code != 200:
            raise HttpStatusError(resp.status_code, _description(resp))
        return bytes(resp.content)

    def era(self) -> Era:
        """The endpoint's era, discovered once per :class:`Endpoint` object."""
        known = self.endpoint.known_era
        if known is not None:
            return known
        return self.endpoint.learn_era(self.call("discover the Barbican version",
                                                 self._discover))

    def _discover(self) -> Era:
        headers = self.headers(None) | {_HEADER: "key-manager 1.1"}
        resp = self.session.get(f"{self.root}/", headers=headers, raise_exc=False,
                                authenticated=None)
        if resp.status_code >= 500:
            raise HttpStatusError(resp.status_code, _description(resp))
        try:
            versions = resp.json()["versions"]
        except (ValueError, KeyError, TypeError):
            raise KeyManagerError(f"{self.root}/ did not answer a Barbican version document "
                                  f"(HTTP {resp.status_code})") from None
        if isinstance(versions, list) and versions and "max_version" in versions[0]:
            top = min(_parse(versions[0]["max_version"]), (1, 2))
            return Era(f"{top[0]}.{top[1]}")
        return Era("1.0")

    def consumer_api(self) -> bool | None:
        """Whether this endpoint serves consumers, if known yet."""
        return self.endpoint.consumer_api

    def set_consumer_api(self, present: bool) -> None:
        """Remember whether this endpoint serves consumers."""
        self.endpoint.learn_consumer_api(present)


def _unparsed_error_status(error: BaseException) -> int | None:
    """The HTTP status of an error answer python-barbicanclient failed to parse, else None.

    Its error parser reads a top-level ``title`` from any JSON body and raises KeyError
    (TypeError for a JSON list) without one, e.g. on keystonemiddleware's own 401 body
    ``{"error": {...}}``: an expired token would otherwise end in a traceback.
    """
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_code.co_name == "_get_error_message"
                and frame.f_globals.get("__name__") == "barbicanclient.client"):
            status = getattr(frame.f_locals.get("resp"), "status_code", None)
            return status if isinstance(status, int) else None
        tb = tb.tb_next
    return None


def _description(resp: requests.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("description") or body.get("title") or "")[:300]
    except (ValueError, AttributeError):
        return resp.reason or ""


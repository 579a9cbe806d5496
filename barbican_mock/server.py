"""The HTTP side: a threaded stdlib server and the MockBarbican handle."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import v1
from .app import Context, Request, handle
from .eras import get_era
from .faults import Faults, Verdict, decide, delay, fire_triggers
from .responses import ApiError, Response
from .secrets import snapshot_all
from .state import Consumer, Store, now

CLIENT_TIMEOUT = 5.0
"""Seconds a connection may stay silent (request line, headers or body) before it is dropped."""
MAX_BODY = 1 << 20
"""Larger declared bodies are refused (413) unread; Barbican itself stops at 25000 bytes."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_in_background(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    """Serve ``server`` from a daemon thread, polling every 50 ms so that a stop is quick."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True,
                              kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


def stop_background(server: ThreadingHTTPServer | None,
                    thread: threading.Thread | None) -> None:
    """Shut ``server`` down, close its socket and join its thread (either may be None)."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mock: MockBarbican

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up, reset or stalled is normal here; anything else is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = CLIENT_TIMEOUT  # per connection: a client that stalls is dropped

    def version_string(self) -> str:
        return "barbican-mock"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; MockBarbican.requests_log records every request."""

    def _serve(self) -> None:
        body = self._body()
        if body is None:
            return
        mock = self.server.mock
        mock._begin()  # a request counts as in flight once its body is in, not before
        try:
            self._serve_one(mock, body)
        finally:
            mock._end()

    def _body(self) -> bytes | None:
        """The request body, or None after answering a bad Content-Length or a stall."""
        declared = self.headers.get_all("Content-Length") or []
        if not declared:
            return b""
        if len(set(declared)) != 1 or not declared[0].strip().isdigit():
            self._refuse(400, "Bad Content-Length.")
            return None
        length = int(declared[0])
        if length > MAX_BODY:
            self._refuse(413, "Request body too large.")
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._refuse(408, "Request body not received in time.")
            return None
        if len(body) < length:  # the client closed early
            self.close_connection = True
            return None
        return body

    def _refuse(self, status: int, text: str) -> None:
        self.server.mock._log(self.command, self.path, status)
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may be gone
            self._send(ApiError(status, text).response())

    def _serve_one(self, mock: MockBarbican, body: bytes) -> None:
        fire_triggers(mock.faults, self.command, self.path)
        verdict = decide(mock.faults, mock._next_number())
        latency = delay(mock.faults)
        if latency > 0:
            time.sleep(latency)
        if verdict is Verdict.DROP:
            mock._log(self.command, self.path, 0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if verdict is Verdict.ERROR:
            resp = ApiError(503, "Injected fault: service unavailable.").response()
        else:
            resp = mock._answer(self._request(body))
        mock._log(self.command, self.path, resp.status)
        if verdict is Verdict.LOSE:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(resp)

    def _request(self, body: bytes) -> Request:
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        pairs = parse_qsl(url.query, keep_blank_values=True)
        host = headers.get("host")
        base = f"http://{host}" if host else self.server.mock.url
        return Request(self.command, url.path, dict(pairs), headers, body, base,
                       raw_query=pairs)

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        if resp.content_type:
            self.send_header("Content-Type", resp.content_type)
        for name, value in resp.headers:
            self.send_header(name, value)
        if resp.status != 204:
            self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and resp.status not in (204, 304):
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class MockBarbican:
    """An HTTP mock of Barbican's key-manager API v1 for one era.

    Use ``with MockBarbican(era="yoga") as m:`` and point clients at ``m.url``;
    clients send ``X-Project-Id``.
    """

    def __init__(self, era: str = "2026.2", host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, *, allow_remote: bool = False) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(f"refusing to listen on non-loopback host {host!r}")
        self.era = get_era(era)
        self.host, self.port = host, port
        self.faults = faults if faults is not None else Faults()
        self.url = ""
        self._store = Store()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._count = 0
        self._log_entries: list[tuple[str, str, int]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MockBarbican:
        """Serve in a daemon thread; ``url`` is valid afterwards."""
        if self._server is not None:
            return self
        server_cls = _Server6 if ":" in self.host else _Server
        server = server_cls((self.host, self.port), _Handler)
        server.mock = self
        self.port = server.server_address[1]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._server = server
        self._thread = serve_in_background(server, "barbican-mock")
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        stop_background(server, thread)

    def __enter__(self) -> MockBarbican:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def secrets(self, project: str | None = None) -> list[dict[str, Any]]:
        """Snapshot of the stored secrets (of *project*, or all)."""
        return snapshot_all(self._context(), project)

    def consumers(self, secret_id: str) -> list[dict[str, Any]]:
        """Live consumers of a secret ([] when the secret does not exist)."""
        with self._store.lock:
            secret = self._store.get_secret(secret_id)
            if secret is None:
                return []
            return [{"service": c.service, "resource_type": c.resource_type,
                     "resource_id": c.resource_id, "created": c.created, "updated": c.updated}
                    for c in secret.live_consumers()]

    def put_consumer(self, secret_id: str, service: str, resource_type: str,
                     resource_id: str, created: str | None = None) -> None:
        """Store a consumer record as is, past the API's validation (tests only).

        For records a Barbican may hold that the API of this era would refuse: a
        ``resource_id`` longer than 36 characters, control characters, an old ``created``.
        """
        with self._store.lock:
            secret = self._store.get_secret(secret_id)
            if secret is None:
                raise KeyError(secret_id)
            stamp = created or now()
            secret.consumers.append(Consumer(service, resource_type, resource_id, stamp, stamp))

    def counts(self) -> dict[str, int]:
        """{"secrets", "consumers", "orders", "requests"} right now."""
        with self._lock:
            requests = len(self._log_entries)
        return {**self._store.counts(), "requests": requests}

    def requests_log(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request; status 0 when dropped.

        A request served but whose response was lost (``lose_next``) has the status the
        server meant to send.
        """
        with self._lock:
            return list(self._log_entries)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being served; TimeoutError if one still is.

        A request still sleeping its ``latency`` after the client gave up may yet change the
        state: count what is left only after this. A client still sending its body (or
        stalled in it) is not in flight: nothing it sent has been acted on yet.
        """
        with self._idle:
            if not self._idle.wait_for(lambda: self._inflight == 0, timeout):
                raise TimeoutError(f"{self._inflight} request(s) still in flight")

    def _begin(self) -> None:
        with self._lock:
            self._inflight += 1

    def _end(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def _context(self) -> Context:
        return Context(self.era, self._store, self.faults.consumers_fail)

    def _next_number(self) -> int:
        with self._lock:
            self._count += 1
            return self._count - 1

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log_entries.append((method, path, status))

    def _answer(self, req: Request) -> Response:
        try:
            with self._store.lock:  # one request at a time, like one sync gunicorn worker
                return handle(req, self._context(), v1.route)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return ApiError(500, "Mock failure - see the server's stderr.").response()

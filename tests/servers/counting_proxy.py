"""A recording HTTP proxy on 127.0.0.1 in front of one Barbican (real or barbican_mock).

Every request is forwarded unchanged (a new upstream connection each) and recorded as an
:class:`Exchange`: method, path, the consumer's ``resource_id`` when the body names one, the
status, and when it started and ended. ``before``/``after`` hooks see each exchange on the
proxy's request thread, outside any lock: a test blocks there to force one interleaving of
concurrent clients. ``max_in_flight`` tells whether requests really overlapped.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from barbican_mock.server import serve_in_background, stop_background

_SECRET = re.compile(r"^/v1/secrets/(?P<id>[0-9a-f-]{36})(?P<rest>/consumers)?/?$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-connection", "content-length"}


@dataclass
class Exchange:
    """One proxied request and, once answered, its status."""

    method: str
    path: str
    body: bytes
    started: float
    status: int = 0
    ended: float = 0.0

    @property
    def route(self) -> tuple[str, str | None, str | None]:
        """``(kind, secret id, resource_id)``; kind is ``consumer``, ``secret`` or ``other``."""
        match = _SECRET.match(urlsplit(self.path).path)
        if match is None:
            return "other", None, None
        if match["rest"]:
            return "consumer", match["id"], self.resource_id
        return "secret", match["id"], None

    @property
    def resource_id(self) -> str | None:
        """The ``resource_id`` of a consumer POST/DELETE body, if any."""
        try:
            value = json.loads(self.body).get("resource_id")
        except (ValueError, AttributeError):
            return None
        return str(value) if value is not None else None

    def is_(self, method: str, kind: str, secret_id: str) -> bool:
        """True for ``method`` on that kind of route of that secret."""
        route = self.route
        return self.method == method and route[0] == kind and route[1] == secret_id


Hook = Callable[[Exchange], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: CountingProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the proxy keeps its own log."""

    def _serve(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        exchange = Exchange(self.command, self.path, body, time.monotonic())
        proxy._begin(exchange)
        try:
            if proxy.before is not None:
                proxy.before(exchange)
            status, reason, headers, payload = proxy._forward(self.command, self.path,
                                                              dict(self.headers), body)
        except Exception:
            status, reason, headers, payload = 502, "Bad Gateway", [], b""
        exchange.status = status
        exchange.ended = time.monotonic()
        proxy._end()
        if proxy.after is not None:
            proxy.after(exchange)
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve


class CountingProxy:
    """``with CountingProxy(upstream_url) as p:`` clients use ``p.url``; ``p.log()`` after."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"loopback upstreams only, not {upstream}")
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.before: Hook | None = None
        self.after: Hook | None = None
        self.url = ""
        self._lock = threading.Lock()
        self._log: list[Exchange] = []
        self._in_flight = 0
        self.max_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CountingProxy:
        """Listen on a free loopback port."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = serve_in_background(server, "counting-proxy")
        return self

    def stop(self) -> None:
        """Stop listening."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        stop_background(server, thread)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> list[Exchange]:
        """Every exchange so far, in arrival order."""
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        """Forget the log and the in-flight high-water mark (between phases)."""
        with self._lock:
            self._log.clear()
            self.max_in_flight = self._in_flight

    @contextmanager
    def hooks(self, before: Hook | None = None, after: Hook | None = None) -> Iterator[None]:
        """Install hooks for the duration of a ``with`` block."""
        self.before, self.after = before, after
        try:
            yield
        finally:
            self.before = self.after = None

    def _begin(self, exchange: Exchange) -> None:
        with self._lock:
            self._log.append(exchange)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or method in ("POST", "PUT", "PATCH"):
                sent["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=sent)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()

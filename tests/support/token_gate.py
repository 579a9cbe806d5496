"""A keystonemiddleware stand-in in front of barbican_mock: tokens in, X-Project-Id out.

Each request's ``X-Auth-Token`` is recorded exactly as received. A known token is forwarded
to the mock with its project in ``X-Project-Id`` (what Barbican's keystone pipeline derives
from a token); an unknown or missing one is answered 401 (except for
the version document, which Barbican serves without a token). ``GET /v3/auth/catalog`` answers,
for a known token, a Keystone v3 catalog naming ``catalog_url`` as the key-manager endpoint.
"""

from __future__ import annotations

import http.client
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from barbican_mock.server import serve_in_background, stop_background

# keystonemiddleware's own rejection body: no top-level "title" (python-barbicanclient's
# error parser raises KeyError on it).
_KEYSTONEMIDDLEWARE_401 = json.dumps({"error": {
    "code": 401, "title": "Unauthorized",
    "message": "The request you have made requires authentication."}}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gate: TokenGate


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _serve(self) -> None:
        gate = self.server.gate
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        token = self.headers.get("X-Auth-Token")
        gate.seen.append((self.command, self.path, token))
        project = gate.tokens.get(token or "")
        if not self.path.startswith(("/v1", "/v3")):
            project = ""  # the version document, open as in Barbican's paste pipeline
        if project is None:
            self._reply(401, _KEYSTONEMIDDLEWARE_401)
        elif self.path.startswith("/v3/auth/catalog"):
            self._reply(200, json.dumps({"catalog": gate.catalog()}).encode())
        else:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection", "x-auth-token")}
            up = urlsplit(gate.upstream)
            conn = http.client.HTTPConnection(up.hostname or "", up.port, timeout=10)
            conn.request(self.command, self.path, body=body or None,
                         headers=headers | ({"X-Project-Id": project} if project else {}))
            resp = conn.getresponse()
            self._reply(resp.status, resp.read(), resp.getheader("Content-Type"))
            conn.close()

    def _reply(self, status: int, payload: bytes, ctype: str | None = "application/json") -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class TokenGate:
    """``with TokenGate(mock.url, {"tok": "p1"}) as gate:``; ``gate.url`` fronts the mock."""

    def __init__(self, upstream: str, tokens: dict[str, str],
                 catalog_url: str | None = None) -> None:
        self.upstream, self.tokens = upstream, tokens
        self.catalog_url = catalog_url
        self.seen: list[tuple[str, str, str | None]] = []
        self.url = ""
        self._server: _Server | None = None
        self._thread: Any = None

    def catalog(self) -> list[dict[str, Any]]:
        """A v3 catalog: key-manager public at ``catalog_url`` (default: this gate)."""
        url = self.catalog_url or self.url
        return [{"type": "key-manager", "name": "barbican", "endpoints": [
            {"interface": "public", "region_id": "RegionOne", "region": "RegionOne",
             "url": url}]}]

    def __enter__(self) -> TokenGate:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.gate = self
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._server = server
        self._thread = serve_in_background(server, "token-gate")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_background(self._server, self._thread)

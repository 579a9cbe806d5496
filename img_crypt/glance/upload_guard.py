"""The ``img_crypt_upload`` paste filter: no plaintext through ``PUT /v2/images/{id}/file``.

Glance runs no import plugin on ``PUT /file``, so the upload itself is checked here, in front
of Glance's API, with the uploader's own request context: the image is read through Glance
(``GET /v2/images/{id}``, the same user), the first bytes of the body are read, and
:mod:`img_crypt.glance.claims` decides. A refusal answers before Glance sees any data, with
the reason; an accepted body goes on to Glance unchanged (the bytes read are given back
first). Enabled in glance-api-paste.ini::

    [filter:img_crypt_upload]
    paste.filter_factory = img_crypt.glance.upload_guard:filter_factory

and ``img_crypt_upload`` placed just before ``rootapp`` in the pipeline (after ``context``).
With ``require_encryption = False`` it lets everything through.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from oslo_config import cfg

from img_crypt.errors import ImgCryptError
from img_crypt.glance import claims
from img_crypt.glance.keys import for_request
from img_crypt.glance.opts import GROUP, register_opts

LOG = logging.getLogger("img_crypt.glance.upload_guard")

DRAIN_LIMIT = 1 << 30
"""Bytes of a refused body read and dropped at most; a bigger upload sees its connection
closed (the reason is in Glance's log)."""
_UPLOAD = re.compile(r"/v2/images/([0-9a-fA-F-]{36})/file/?")
StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Prefixed(io.RawIOBase):
    """The request body with the bytes already read put back in front."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            data, self._head = self._head + bytes(self._rest.read()), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:  # a short read would look like a disconnection to webob
            data += bytes(self._rest.read(size - len(data)))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _read_head(environ: dict[str, Any]) -> bytes:
    """Up to :data:`claims.HEAD_SIZE` bytes of the body, never past its Content-Length."""
    length = environ.get("CONTENT_LENGTH")
    want = claims.HEAD_SIZE if not length else min(claims.HEAD_SIZE, int(length))
    stream, parts, got = environ["wsgi.input"], [], 0
    while got < want:
        part = stream.read(want - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class UploadGuard:
    """WSGI middleware: refuse a ``PUT /file`` whose image or data is not encrypted."""

    def __init__(self, app: App, conf: cfg.ConfigOpts) -> None:
        self.app, self.conf = app, conf
        register_opts(conf)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Check a ``PUT /v2/images/{id}/file``; pass everything else through."""
        found = _UPLOAD.fullmatch(environ.get("PATH_INFO", ""))
        if (environ.get("REQUEST_METHOD") != "PUT" or found is None
                or not self.conf[GROUP].require_encryption):
            return self.app(environ, start_response)
        image_id = found[1].lower()
        image = self._image(environ, image_id)
        if image is None:  # Glance answers (404, 403) itself
            return self.app(environ, start_response)
        group = self.conf[GROUP]
        refusal = claims.property_refusal(image_id, image, group.accepted_formats)
        if refusal is None:
            head = _read_head(environ)
            environ["wsgi.input"] = _Prefixed(head, environ["wsgi.input"])
            refusal = self._data_refusal(environ, image_id, image, head)
        if refusal is not None:
            LOG.warning("upload refused: %s", refusal)
            _drain(environ["wsgi.input"])
            return _refuse(start_response, refusal)
        return self.app(environ, start_response)

    def _data_refusal(self, environ: dict[str, Any], image_id: str, image: dict[str, Any],
                      head: bytes) -> str | None:
        context = (environ.get("webob.adhoc_attrs") or {}).get("context")
        try:
            manager = for_request(self.conf, context)
        except ImgCryptError as e:
            return f"image {image_id}: its key cannot be checked: {e}"
        return claims.data_refusal(image_id, image, head, manager)

    def _image(self, environ: dict[str, Any], image_id: str) -> dict[str, Any] | None:
        """The image as the uploader sees it (``GET /v2/images/{id}`` through Glance)."""
        sub = {k: v for k, v in environ.items()
               if k not in ("CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_TRANSFER_ENCODING")}
        sub.update({"REQUEST_METHOD": "GET", "PATH_INFO": f"/v2/images/{image_id}",
                    "QUERY_STRING": "", "wsgi.input": io.BytesIO(b"")})
        status: list[str] = []

        def capture(code: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
            status.append(code)
            return lambda _: None

        body = b"".join(_iterate(self.app(sub, capture)))
        if not status or not status[0].startswith("200"):
            return None
        try:
            image = json.loads(body)
        except ValueError:
            return None
        return image if isinstance(image, dict) else None


def _iterate(result: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from result
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _drain(stream: Any) -> None:
    """Read and drop the body (up to :data:`DRAIN_LIMIT`).

    The client, still sending, then gets the answer instead of a reset connection.
    """
    left = DRAIN_LIMIT
    while left > 0 and (part := stream.read(min(left, 1 << 20))):
        left -= len(part)


def _refuse(start_response: StartResponse, reason: str) -> list[bytes]:
    body = json.dumps({"error": {"code": 400, "title": "Bad Request",
                                 "message": f"img-crypt: upload refused: {reason}"}}).encode()
    start_response("400 Bad Request", [("Content-Type", "application/json"),
                                       ("Content-Length", str(len(body)))])
    return [body]


def filter_factory(global_conf: dict[str, Any], **local_conf: Any) -> Callable[[App], App]:
    """paste.deploy filter factory (``paste.filter_factory``), with Glance's global CONF."""
    def make(app: App) -> App:
        return UploadGuard(app, cfg.CONF)
    return make

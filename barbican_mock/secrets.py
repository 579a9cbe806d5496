"""``/v1/secrets``: create, list, metadata, payload, delete (barbican secrets.py)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .app import Context, Request
from .common import authorize, json_accepted, page, ref, require_json, secret_doc
from .responses import ApiError, Response, json_response
from .state import Secret, now
from .validation import (
    BINARY,
    MAX_SECRET_BYTES,
    PLAIN_TEXT,
    SUPPORTED,
    load_body,
    normalize_content_type,
    validate_secret,
)

_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")


def _like(pattern: str, value: str | None) -> bool:
    """SQL LIKE as SQLite does it: case-insensitive, % and _ wildcards."""
    if value is None:
        return False
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE | re.DOTALL) is not None


def create(req: Request, ctx: Context) -> Response:
    """POST /v1/secrets -> 201 {"secret_ref"}."""
    json_accepted(req)
    require_json(req)
    data = validate_secret(load_body(req.body))
    stamp = now()
    secret = Secret(
        id=ctx.store.new_id(), project=req.project, name=data["name"],
        secret_type=data.get("secret_type") or "opaque", algorithm=data.get("algorithm"),
        bit_length=data.get("bit_length"), mode=data.get("mode"),
        expiration=data["expiration"], creator_id=req.headers.get("x-user-id"),
        payload=data.get("payload_bytes"),
        content_type=data.get("payload_content_type") if "payload_bytes" in data else None,
        created=stamp, updated=stamp)
    ctx.store.add_secret(secret)
    url = ref(req, f"secrets/{secret.id}")
    resp = json_response(201, {"secret_ref": url})
    resp.headers.append(("Location", url))
    return resp


def listing(req: Request, ctx: Context) -> Response:
    """GET /v1/secrets with limit/offset and the name/alg/mode/bits/secret_type filters."""
    json_accepted(req)
    q = req.query
    chosen: list[Secret] = []
    for s in ctx.store.project_secrets(req.project):
        if (q.get("name") and not _like(q["name"], s.name)) or (
                q.get("alg") and not _like(q["alg"], s.algorithm)) or (
                q.get("mode") and not _like(q["mode"], s.mode)) or (
                q.get("secret_type") and s.secret_type != q["secret_type"]):
            continue
        bits = q.get("bits", "0")
        if bits.isdigit() and int(bits) > 0 and s.bit_length != int(bits):
            continue
        chosen.append(s)
    docs = [secret_doc(req, s, consumers=req.mv >= (1, 1)) for s in chosen]
    return json_response(200, page(req, "secrets", "secrets", docs, with_query=True))


def get(req: Request, secret: Secret) -> Response:
    """GET /v1/secrets/{id}: metadata for JSON Accept, else the payload (deprecated)."""
    accept = req.headers.get("accept")
    if accept is not None and accept not in ("application/json", "*/*"):
        return payload(req, secret, "Secret retrieval")
    authorize(req, secret, "Secret retrieval")
    return json_response(200, secret_doc(req, secret, consumers=req.mv >= (1, 1)))


def payload(req: Request, secret: Secret, operation: str = "Secret payload retrieval") -> Response:
    """GET /v1/secrets/{id}/payload: the bytes in the media type asked for."""
    authorize(req, secret, operation)
    if req.method != "GET":
        raise ApiError(405, "")
    accept = req.headers.get("accept") or "application/octet-stream"
    if secret.payload is None:
        raise ApiError(404, "Not Found. Sorry but your secret has no payload.")
    wanted = (secret.content_type or "") if accept == "*/*" else accept
    wrong = ApiError(406, f"{operation} issue seen - Wrong payload content-type.")
    if normalize_content_type(wanted) not in SUPPORTED:
        raise wrong
    if wanted in PLAIN_TEXT:
        try:
            secret.payload.decode("utf-8")
        except UnicodeDecodeError:
            raise wrong from None
    elif wanted not in BINARY:
        raise wrong
    shown = "text/plain; charset=UTF-8" if accept == "text/plain" else accept
    return Response(200, secret.payload, shown)


def put(req: Request, ctx: Context, secret: Secret) -> Response:
    """PUT /v1/secrets/{id}: add the payload of a metadata-only secret."""
    authorize(req, secret, "Secret update")
    allowed = ["application/octet-stream", "text/plain"]
    if req.content_type not in allowed:
        raise ApiError(415, f"Unexpected content type. Expected content types are: {allowed}")
    if not req.body:
        raise ApiError(400, "Secret update issue seen - No data supplied to process..")
    if len(req.body) > MAX_SECRET_BYTES:
        raise ApiError(413, "Secret update issue seen - Provided information too large to "
                            "process.")
    if secret.payload is not None:
        raise ApiError(409, "Secret already has data, cannot modify it.")
    data = req.body
    if req.headers.get("content-encoding") == "base64":
        try:
            data = base64.b64decode(data)
        except (binascii.Error, ValueError):
            raise ApiError(400, "Secret update issue seen - Invalid payload.") from None
    with ctx.store.lock:
        secret.payload, secret.content_type, secret.updated = data, req.content_type, now()
    return Response(204)


def delete(req: Request, ctx: Context, secret: Secret) -> Response:
    """DELETE /v1/secrets/{id}; at microversion 1.2 refuse while consumers remain."""
    authorize(req, secret, "Secret deletion")
    if req.mv >= (1, 2):
        raw = req.query.get("force")
        force = False
        if raw is not None:
            word = raw.strip().lower()
            if word not in _TRUE + _FALSE:
                raise ApiError(400, "URI provided invalid query string parameters.")
            force = word in _TRUE
        if secret.live_consumers() and not force:
            raise ApiError(400, "Secret deletion issue seen - Secret cannot be deleted as it "
                                "has consumers..")
    ctx.store.delete_secret(secret.id)
    return Response(204)


def snapshot_all(ctx: Context, project: str | None) -> list[dict[str, Any]]:
    """Plain-dict copies of the stored secrets (for MockBarbican.secrets)."""
    with ctx.store.lock:
        return [s.snapshot() for s in ctx.store.project_secrets(project)]

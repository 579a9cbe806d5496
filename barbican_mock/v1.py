"""Routing below ``/v1`` (pecan's object dispatch, flattened)."""

from __future__ import annotations

from . import consumers, orders, secrets
from .app import JSON_TYPES, Context, Request, is_uuid4, version_info
from .responses import ApiError, Response, accept_q, json_response


def _version(req: Request, ctx: Context) -> Response:
    if req.method != "GET":
        raise ApiError(405, "", allow="GET")
    accept = req.headers.get("accept")
    if accept and max(accept_q(accept, t) for t in JSON_TYPES) <= 0:
        raise ApiError(406, None)
    new = ctx.era.microversioned and req.mv > (1, 0)
    return json_response(200, {"version": version_info(req, ctx.era, microversioned=new)})


def _secrets(req: Request, ctx: Context) -> Response:
    if req.method == "POST":
        return secrets.create(req, ctx)
    if req.method == "GET":
        return secrets.listing(req, ctx)
    raise ApiError(405, "", allow="GET, POST")


def _secret(req: Request, ctx: Context, rest: list[str]) -> Response:
    if not is_uuid4(rest[0]):
        raise ApiError(404, "Not Found. Provided secret id is invalid.")
    secret = ctx.store.get_secret(rest[0])
    if secret is None:
        raise ApiError(404, ctx.era.secret_not_found)
    sub = rest[1:]
    if sub == ["payload"]:
        return secrets.payload(req, secret)
    if sub and sub[0] == "consumers" and ctx.era.consumer_routes:
        return consumers.route(req, ctx, secret, sub[1:])
    if sub:
        raise ApiError(404, "")
    if req.method == "GET":
        return secrets.get(req, secret)
    if req.method == "PUT":
        return secrets.put(req, ctx, secret)
    if req.method == "DELETE":
        return secrets.delete(req, ctx, secret)
    raise ApiError(405, "", allow="DELETE, GET, PUT")


def route(req: Request, ctx: Context, parts: list[str]) -> Response:
    """Answer a request whose path below ``/v1`` is *parts*."""
    if not parts:
        return _version(req, ctx)
    if parts[0] == "orders":
        return orders.route(req, ctx, parts[1:])
    if parts[0] != "secrets":
        raise ApiError(404, "")
    return _secrets(req, ctx) if len(parts) == 1 else _secret(req, ctx, parts[1:])

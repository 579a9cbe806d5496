"""``/v1/orders``: key orders, fulfilled at once with ``os.urandom``."""

from __future__ import annotations

import os
from typing import Any

from .app import Context, Request
from .common import json_accepted, page, ref, require_json
from .responses import ApiError, Response, json_response
from .state import Order, Secret, now
from .validation import load_body, validate_order


def _doc(req: Request, order: Order) -> dict[str, Any]:
    return {
        "created": order.created, "updated": order.updated, "status": "ACTIVE",
        "type": order.type, "meta": order.meta, "sub_status": "Unknown",
        "sub_status_message": "Unknown", "secret_ref": ref(req, f"secrets/{order.secret_id}"),
        "order_ref": ref(req, f"orders/{order.id}"),
    }


def _create(req: Request, ctx: Context) -> Response:
    json_accepted(req)
    require_json(req)
    body = validate_order(load_body(req.body))
    meta: dict[str, Any] = body["meta"]
    stamp = now()
    bits = int(meta["bit_length"])
    secret = Secret(
        id=ctx.store.new_id(), project=req.project, name=meta.get("name"),
        secret_type="symmetric", algorithm=meta.get("algorithm"), bit_length=bits,
        mode=meta.get("mode"), expiration=meta.get("expiration"),
        creator_id=req.headers.get("x-user-id"), payload=os.urandom(bits // 8),
        content_type="application/octet-stream", created=stamp, updated=stamp)
    ctx.store.add_secret(secret)
    order = Order(ctx.store.new_id(), req.project, body["type"], meta, secret.id, stamp, stamp)
    ctx.store.add_order(order)
    url = ref(req, f"orders/{order.id}")
    resp = json_response(202, {"order_ref": url})
    resp.headers.append(("Location", url))
    return resp


def route(req: Request, ctx: Context, rest: list[str]) -> Response:
    """Dispatch ``/v1/orders[/<id>]``."""
    if not rest:
        if req.method == "POST":
            return _create(req, ctx)
        if req.method == "GET":
            json_accepted(req)
            docs = [_doc(req, o) for o in ctx.store.project_orders(req.project)]
            return json_response(200, page(req, "orders", "orders", docs))
        if req.method == "PUT":
            raise ApiError(405, "Order update is not supported.")
        raise ApiError(405, "", allow="GET, POST, PUT")
    order = ctx.store.get_order(rest[0], req.project)
    if order is None:
        raise ApiError(404, ctx.era.order_not_found)
    if len(rest) > 1:
        raise ApiError(404, "")
    if req.method == "GET":
        json_accepted(req)
        return json_response(200, _doc(req, order))
    if req.method == "DELETE":
        ctx.store.delete_order(order.id)
        return Response(204)
    raise ApiError(405, "", allow="DELETE, GET")

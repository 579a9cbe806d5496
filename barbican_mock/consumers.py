"""``/v1/secrets/{id}/consumers`` (barbican consumers.py SecretConsumersController)."""

from __future__ import annotations

from http import HTTPStatus

from .app import Context, Request, is_uuid4
from .common import authorize, json_accepted, page, ref, require_json, secret_doc
from .responses import ApiError, Response, json_response
from .state import Secret
from .validation import load_body, validate_consumer

_OPERATION = {"POST": "SecretConsumer creation", "DELETE": "SecretConsumer deletion"}


def _reply(req: Request, ctx: Context, secret: Secret) -> Response:
    """The secret document consumer POST/DELETE answer with, per era."""
    doc = secret_doc(req, secret, consumers=ctx.era.consumer_reply_consumers,
                     content_types=ctx.era.consumer_reply_content_types)
    return json_response(200, doc)


def _injected(status: int, operation: str) -> ApiError:
    if status == 403:
        return ApiError(403, f"{operation} attempt not allowed - please review your "
                             "user/project privileges")
    return ApiError(status, f"{operation} failure seen - please contact site administrator.")


def route(req: Request, ctx: Context, secret: Secret, rest: list[str]) -> Response:
    """Dispatch ``consumers[/<id>]`` below a secret."""
    if rest:
        if not is_uuid4(rest[0]):
            raise ApiError(404, "Not Found. Provided consumer id is invalid.")
        if req.method != "GET":
            raise ApiError(405, "", allow="GET")
        json_accepted(req)
        authorize(req, secret, "SecretConsumer retrieval")
        raise ApiError(404, "Consumer not found.")
    if req.method not in ("GET", *_OPERATION):
        raise ApiError(405, "", allow="DELETE, GET, POST")
    json_accepted(req)
    if req.method == "GET":
        authorize(req, secret, "SecretConsumers(s) retrieval")
        docs = [
            {"created": c.created, "updated": c.updated, "status": "ACTIVE",
             "service": c.service, "resource_type": c.resource_type,
             "resource_id": c.resource_id}
            for c in secret.live_consumers()
        ]
        doc = page(req, f"secrets/{secret.id}/consumers", "consumers", docs)
        return json_response(200, doc)
    operation = _OPERATION[req.method]
    if ctx.consumers_fail is not None:
        HTTPStatus(ctx.consumers_fail)  # reject nonsense early, with a clear error
        raise _injected(ctx.consumers_fail, operation)
    authorize(req, secret, operation)
    require_json(req)
    key = validate_consumer(load_body(req.body))
    loose = ctx.era.consumer_unique_resource_id
    if req.method == "POST":
        ctx.store.add_consumer(secret, key, loose)
        resp = _reply(req, ctx, secret)
        resp.headers.append(("Location", ref(req, f"consumers/{secret.id}/consumers")))
        return resp
    if not ctx.store.remove_consumer(secret, key, loose):
        raise ApiError(404, "Consumer not found.")
    return _reply(req, ctx, secret)

"""Helpers shared by the /v1 resources: refs, paging, policy, secret documents."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlencode

from .app import Request
from .responses import ApiError, accept_q
from .state import Secret

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def ref(req: Request, resource: str) -> str:
    """Barbican's hostname_for_refs: ``<base>/v1/<resource>``."""
    return f"{req.base}/v1/{resource}"


def authorize(req: Request, secret: Secret, operation: str) -> None:
    """The legacy policy outcome: only the secret's project may touch it."""
    if secret.project != req.project:
        raise ApiError(403, f"{operation} attempt not allowed - please review your "
                            "user/project privileges")


def json_accepted(req: Request) -> None:
    """Pecan's content negotiation for ``template='json'``: else 406 (description null)."""
    accept = req.headers.get("accept")
    if accept and accept_q(accept, "application/json") <= 0:
        raise ApiError(406, None)


def require_json(req: Request) -> None:
    """enforce_content_types(['application/json'])."""
    if req.content_type != "application/json":
        raise ApiError(415, "Unexpected content type. Expected content types are: "
                            "['application/json']")


def paging(req: Request) -> tuple[int, int]:
    """repositories.clean_paging_values: (offset, limit)."""
    try:
        offset = int(req.query.get("offset") or 0)
        offset = 0 if offset < 0 or offset > sys.maxsize else offset
    except ValueError:
        offset = 0
    try:
        limit = min(max(int(req.query.get("limit") or DEFAULT_LIMIT), 1), MAX_LIMIT)
    except ValueError:
        limit = DEFAULT_LIMIT
    return offset, limit


def page(req: Request, resource: str, key: str, items: list[dict[str, Any]], *,
         with_query: bool = False) -> dict[str, Any]:
    """A paged list document with ``previous``/``next`` hrefs and ``total``."""
    offset, limit = paging(req)
    shown = items[offset:offset + limit]
    if not shown:
        return {key: [], "total": len(items)}
    extra = ""
    if with_query:
        kept = [(k, v) for k, v in req.raw_query if k not in ("limit", "offset")]
        extra = urlencode(kept)

    def href(start: int) -> str:
        tail = f"&{extra}" if extra else ""
        return ref(req, f"{resource}?limit={limit}&offset={start}{tail}")

    doc: dict[str, Any] = {key: shown}
    if offset > 0:
        doc["previous"] = href(max(0, offset - limit))
    if len(items) > offset + limit:
        doc["next"] = href(offset + limit)
    doc["total"] = len(items)
    return doc


def secret_doc(req: Request, secret: Secret, *, consumers: bool,
               content_types: bool = True) -> dict[str, Any]:
    """A secret's metadata as Barbican serializes it (to_dict_fields + hrefs)."""
    doc: dict[str, Any] = {
        "created": secret.created, "updated": secret.updated, "status": "ACTIVE",
        "name": secret.name, "secret_type": secret.secret_type,
        "expiration": secret.expiration, "algorithm": secret.algorithm,
        "bit_length": secret.bit_length, "mode": secret.mode,
        "creator_id": secret.creator_id,
    }
    if consumers:
        doc["consumers"] = [
            {"service": c.service, "resource_type": c.resource_type,
             "resource_id": c.resource_id}
            for c in secret.live_consumers()
        ]
    if content_types and secret.content_type:
        doc["content_types"] = {"default": secret.content_type}
    doc["secret_ref"] = ref(req, f"secrets/{secret.id}")
    return doc

"""Paste filter that gives every request a ``request_id`` attribute for Barbican >= 22.

Barbican's ``UnauthenticatedContextMiddleware`` reads ``req.request_id``, which nothing sets any
more, so every ``/v1`` request would answer 500 ``AttributeError: request_id``. This filter sets
that webob ad-hoc attribute (from oslo's ``openstack.request_id`` when present) before calling
the next application. The server imports this file as the top-level module ``barbican_shim``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def filter_factory(global_conf: dict[str, str], **local_conf: str) -> Callable[[WsgiApp], WsgiApp]:
    """Paste ``filter_factory`` entry point."""

    def wrap(app: WsgiApp) -> WsgiApp:
        def middleware(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            request_id = environ.get("openstack.request_id") or f"req-{uuid.uuid4()}"
            environ.setdefault("webob.adhoc_attrs", {})["request_id"] = request_id
            return app(environ, start_response)

        return middleware

    return wrap

"""Response values and the two error shapes a real Barbican produces.

Inside the pecan application errors are JSON ``{"code", "title", "description"}``
(barbican/api/hooks.py JSONErrorHook). Errors raised by WSGI middleware (missing
``X-Project-Id``, a bad microversion header) and by the version app are WebOb's
default pages, whose format (HTML, JSON or plain text) follows the Accept header.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


@dataclass
class Response:
    """An HTTP answer: status, extra headers and body bytes."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class ApiError(Exception):
    """An error the pecan application answers as Barbican's JSON error body."""

    def __init__(self, status: int, description: str | None = "",
                 allow: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.allow = allow

    def response(self) -> Response:
        """Render as Barbican's JSON error body."""
        resp = json_response(self.status, {
            "code": self.status,
            "title": HTTPStatus(self.status).phrase,
            "description": self.description,
        })
        if self.allow is not None:
            resp.headers.append(("Allow", self.allow))
        return resp


def json_response(status: int, doc: Any) -> Response:
    """A JSON answer serialized like Barbican (``json.dumps`` defaults)."""
    return Response(status, json.dumps(doc).encode(), "application/json")


_EXPLANATION = {
    400: ("The server could not comply with the request since it is either "
          "malformed or otherwise incorrect."),
    404: "The resource could not be found.",
}


def accept_q(accept: str, offer: str) -> float:
    """Quality the Accept header gives *offer* (most specific range wins)."""
    best: tuple[int, float] = (-1, 0.0)
    kind = offer.split("/", maxsplit=1)[0]
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        rng, q = parts[0].lower(), 1.0
        for param in parts[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if rng == offer:
            spec = 2
        elif rng == f"{kind}/*":
            spec = 1
        elif rng == "*/*":
            spec = 0
        else:
            continue
        best = max(best, (spec, q))
    return best[1]


def webob_error(status: int, detail: str, accept: str | None, method: str = "GET") -> Response:
    """Render a WebOb default error page the way ``webob.exc`` does."""
    if status == 406:
        shown = "${HTTP_ACCEPT}" if accept is None else accept
        body = ("The resource could not be generated that was acceptable to your browser\n"
                f"(content of type {shown}. <br /><br />\n{detail}")
    elif status == 405:
        body = f"The method {method} is not allowed for this resource. <br /><br />\n{detail}"
    else:
        body = f"{_EXPLANATION.get(status, '')}<br /><br />\n{detail}\n\n"
    line = f"{status} {HTTPStatus(status).phrase}"
    offers = {o: accept_q(accept or "", o) for o in ("text/html", "application/json")}
    best = max(offers, key=lambda o: offers[o])  # ties keep text/html, as WebOb does
    if offers[best] > 0 and best == "application/json":
        doc = {"message": body, "code": line, "title": HTTPStatus(status).phrase}
        return json_response(status, doc)
    if offers[best] > 0:
        escaped = body.replace(detail, html.escape(detail)) if detail else body
        page = (f"<html>\n <head>\n  <title>{line}</title>\n </head>\n <body>\n"
                f"  <h1>{line}</h1>\n  {escaped}\n </body>\n</html>")
        return Response(status, page.encode(), "text/html; charset=UTF-8")
    text = re.sub(r"<.*?>", "", re.sub(r"<br.*?>", "\n", body.replace("\n", " ")))
    return Response(status, f"{line}\n\n{text}".encode(), "text/plain; charset=UTF-8")

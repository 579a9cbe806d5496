"""Socket-free request handling: Barbican's middleware order, then routing.

``/v1`` runs "unauthenticated-context" (X-Project-Id) then "microversion" then the
API; every other path is the version app behind "microversion" only, as in the
keystone-less paste pipeline of shared/notes/real-servers.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .eras import Era, Version
from .responses import ApiError, Response, accept_q, json_response, webob_error
from .state import Store

HEADER = "openstack-api-version"
JSON_TYPES = ("application/json", "application/json-home")


@dataclass
class Request:
    """One parsed HTTP request (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base: str
    """Scheme and authority refs are built on, e.g. ``http://127.0.0.1:9311``."""
    project: str = ""
    mv: Version = (1, 0)
    raw_query: list[tuple[str, str]] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        """The media type of the body without parameters."""
        return self.headers.get("content-type", "").split(";")[0].strip()


@dataclass
class Context:
    """What a route handler may use besides the request."""

    era: Era
    store: Store
    consumers_fail: int | None = None


Route = Callable[[Request, Context, list[str]], Response]


def is_uuid4(text: str) -> bool:
    """Barbican's utils.validate_id_is_uuid: a canonical version-4 UUID."""
    try:
        return str(uuid.UUID(text, version=4)) == text
    except ValueError:
        return False


def negotiate(req: Request, era: Era) -> Response | None:
    """microversion_parse's middleware: set ``req.mv`` or answer 400/406."""
    if not era.microversioned:
        return None
    wanted = None
    for value in reversed(req.headers.get(HEADER, "").split(",")):
        parts = value.strip().split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "key-manager":
            wanted = parts[1].strip()
            break
    top = f"{era.versions[-1][0]}.{era.versions[-1][1]}"
    text = top if wanted == "latest" else (wanted or "1.0")
    accept = req.headers.get("accept")
    try:
        numbers = [int(v) for v in text.split(".", 1)]
        if len(numbers) != 2:
            raise TypeError("Version.__new__() missing 1 required positional argument: 'minor'")
    except (ValueError, TypeError) as exc:
        detail = f"Invalid microversion: invalid version string: {text}; {exc}"
        return webob_error(400, detail, accept, req.method)
    version = (numbers[0], numbers[1])
    if version not in era.versions:
        detail = f"Invalid microversion: Unacceptable version header: {text}"
        return webob_error(406, detail, accept, req.method)
    req.mv = version
    return None


def version_info(req: Request, era: Era, *, microversioned: bool) -> dict[str, object]:
    """barbican/api/controllers/versions.py get_version_info for this era."""
    links: list[dict[str, str]] = [
        {"rel": "self", "href": f"{req.base}/v1/"},
        {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
    ]
    if microversioned:
        top = era.versions[-1]
        return {"id": "v1", "status": "CURRENT", "min_version": "1.0",
                "max_version": f"{top[0]}.{top[1]}", "links": links}
    info: dict[str, object] = {"id": "v1", "status": "stable"}
    if era.version_updated:
        info["updated"] = era.version_updated
    info["links"] = links
    info["media-types"] = [{"base": "application/json",
                            "type": "application/vnd.openstack.key-manager-v1+json"}]
    return info


def _negotiate_versions_media(req: Request) -> Response | None:
    """Pecan's 406 for a non-JSON Accept; the json-home redirect to ``/v1/``."""
    accept = req.headers.get("accept")
    if not accept:
        return None
    json_q, home_q = (accept_q(accept, t) for t in JSON_TYPES)
    if max(json_q, home_q) <= 0:
        return webob_error(406, "", accept, req.method)
    if home_q > json_q:  # VersionsController._redirect_to_default_json_home_if_needed
        url = f"{req.base}/v1/"
        text = f"302 Found\n\nThe resource was found at {url}; you should be redirected " \
               "automatically.  "
        return Response(302, text.encode(), "text/plain; charset=UTF-8", [("Location", url)])
    return None


def _version_app(req: Request, era: Era) -> Response:
    if req.path not in ("", "/"):
        return webob_error(404, "", req.headers.get("accept"), req.method)
    if req.method != "GET":
        resp = webob_error(405, "", req.headers.get("accept"), req.method)
        if req.method == "HEAD":
            resp.body = b""
        resp.headers.append(("Allow", "GET"))
        return resp
    negotiated = _negotiate_versions_media(req)
    if negotiated is not None:
        return negotiated
    if "build" in req.query:
        return json_response(200, {"build": era.build})
    new = era.microversioned and req.mv > (1, 0)
    if new:
        return json_response(300, {"versions": [version_info(req, era, microversioned=True)]})
    return json_response(300, {"versions": {"values": [
        version_info(req, era, microversioned=False)]}})


def handle(req: Request, ctx: Context, v1: Route) -> Response:
    """Answer *req* like a keystone-less Barbican of era ``ctx.era``."""
    under_v1 = req.path == "/v1" or req.path.startswith("/v1/")
    if under_v1:
        project = req.headers.get("x-project-id", "")
        if not project:
            return webob_error(400, "Missing X-Project-Id",
                               req.headers.get("accept") or "text/plain", req.method)
        req.project = project
    refused = negotiate(req, ctx.era)
    if refused is not None:
        return refused
    if under_v1:
        segments = req.path[len("/v1"):].strip("/").split("/")
        try:
            resp = v1(req, ctx, [s for s in segments if s])
        except ApiError as err:
            resp = err.response()
    else:
        resp = _version_app(req, ctx.era)
    if ctx.era.microversioned:
        resp.headers.append((HEADER, f"key-manager {req.mv[0]}.{req.mv[1]}"))
        resp.headers.append(("vary", HEADER))
    return resp

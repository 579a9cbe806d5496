"""reconcile's Glance client: is an image still there, and which active images name keys.

``GET /v2/images/{id}`` and ``GET /v2/images?status=active&owner=<project>``.

keystoneauth is imported only when a client is made; no oslo library, so the command line
can use it.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from img_crypt.errors import ImgCryptError
from img_crypt.glance.properties import key_claims
from img_crypt.reconcile import ActiveImage, ImageState

if TYPE_CHECKING:
    from keystoneauth1.session import Session
    from requests import Response

DEFAULT_TIMEOUT = 30.0
GONE_STATUSES = frozenset({"deleted", "pending_delete"})
"""Glance image statuses that count as deleted."""
NOAUTH_ROLES = "reader,member"


class GlanceError(ImgCryptError):
    """Glance cannot be asked at all: unreachable, refusing us, or not a Glance image API."""


class GlanceImages:
    """``image_state`` for :func:`reconcile`: ``GET /v2/images/{id}`` on one Glance endpoint.

    200 is EXISTS (GONE for status ``deleted``/``pending_delete``), 404 is GONE, anything else
    (401, 403, 5xx, connection errors, timeouts, a non-UUID id) is UNKNOWN, with the reason
    kept in :attr:`problems`.
    """

    def __init__(self, session: Session, endpoint: str, *,
                 headers: dict[str, str] | None = None, project_id: str | None = None) -> None:
        self.session = session
        self.project_id = project_id
        """The project whose active images :meth:`active_images` lists."""
        self.root = re.sub(r"/v2(\.\d+)?$", "", endpoint.rstrip("/"))
        self.headers = dict(headers or {})
        self.problems: dict[str, str] = {}
        """Why each UNKNOWN image was unknown."""

    @classmethod
    def noauth(cls, url: str, project_id: str, *,
               timeout: float = DEFAULT_TIMEOUT) -> GlanceImages:
        """A Glance without Keystone at ``url``, asked as a member of ``project_id``."""
        from keystoneauth1.session import Session

        return cls(Session(timeout=timeout), url,
                   headers={"X-Identity-Status": "Confirmed", "X-Project-Id": project_id,
                            "X-Roles": NOAUTH_ROLES}, project_id=project_id)

    @classmethod
    def from_cloud(cls, cloud: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> GlanceImages:
        """The ``image`` endpoint of clouds.yaml entry ``cloud`` (or the ``OS_*`` variables)."""
        from keystoneauth1 import exceptions as ks_exc

        from img_crypt.keys.clouds import session_and_endpoint

        try:
            session, endpoint = session_and_endpoint(cloud, "image", timeout)
        except ks_exc.Unauthorized:
            raise GlanceError("authentication with Keystone failed") from None
        except ks_exc.ClientException as e:
            raise GlanceError(f"cannot find Glance in the service catalog: "
                              f"{type(e).__name__}") from None
        if not endpoint:
            raise GlanceError("the service catalog has no image endpoint")
        try:
            project_id = session.get_project_id()
        except ks_exc.ClientException as e:
            raise GlanceError(f"cannot tell the project of the credentials: "
                              f"{type(e).__name__}") from None
        return cls(session, endpoint, project_id=project_id)

    def _get(self, path: str, **params: str) -> Response:
        from keystoneauth1 import exceptions as ks_exc

        try:
            return self.session.get(f"{self.root}/v2/{path}", headers=self.headers,
                                    params=params, raise_exc=False)
        except ks_exc.Unauthorized:
            raise GlanceError("authentication with Keystone failed") from None
        except ks_exc.ClientException as e:
            raise GlanceError(f"cannot reach Glance at {self.root} ({type(e).__name__})") \
                from None

    def check(self) -> None:
        """Fail unless the endpoint lists images like Glance v2 does.

        A wrong URL would answer 404 for every image, which would read as "every image is gone".
        """
        resp = self._get("images", limit="1")
        if resp.status_code == 401:
            raise GlanceError(f"authentication with Glance at {self.root} failed")
        body = _json(resp) if resp.status_code == 200 else None
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise GlanceError(f"{self.root} does not answer like the Glance image API v2 "
                              f"(GET /v2/images: HTTP {resp.status_code})")

    def active_images(self) -> list[ActiveImage]:
        """The project's active images that name a key (all pages); GlanceError if unreadable.

        Only the project's own images: a key of another project is not ours to register on.
        """
        if not self.project_id:
            raise GlanceError("no project to list the active images of")
        found: list[ActiveImage] = []
        params = {"status": "active", "owner": self.project_id, "limit": "200"}
        while True:
            resp = self._get("images", **params)
            body = _json(resp) if resp.status_code == 200 else None
            if not isinstance(body, dict) or not isinstance(body.get("images"), list):
                raise GlanceError(f"cannot list the images of {self.root} (HTTP "
                                  f"{resp.status_code})")
            found += [image for image in map(_active_image, body["images"]) if image]
            if not body.get("next") or not body["images"]:
                return found
            params["marker"] = str(body["images"][-1].get("id"))

    def __call__(self, image_id: str) -> ImageState:
        """Ask Glance about one image."""
        if not _is_uuid(image_id):
            return self._unknown(image_id, "not a Glance image id (UUID)")
        try:
            resp = self._get(f"images/{image_id}")
        except GlanceError as e:
            return self._unknown(image_id, str(e))
        if resp.status_code == 404:
            return ImageState.GONE
        if resp.status_code != 200:
            return self._unknown(image_id, f"HTTP {resp.status_code}")
        body = _json(resp)
        if not isinstance(body, dict):
            return self._unknown(image_id, "an unreadable answer")
        return ImageState.GONE if body.get("status") in GONE_STATUSES else ImageState.EXISTS

    def _unknown(self, image_id: str, reason: str) -> ImageState:
        self.problems[image_id] = reason
        return ImageState.UNKNOWN


def _json(resp: Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return None


def _active_image(image: Any) -> ActiveImage | None:
    """An image of a listing as :class:`ActiveImage`; None when it names no key."""
    if not isinstance(image, dict) or image.get("status") != "active" or not image.get("id"):
        return None
    keys = tuple(key_claims(image))
    if not keys:
        return None
    try:
        updated: datetime | None = datetime.fromisoformat(str(image.get("updated_at")))
    except ValueError:
        updated = None  # counts as young: left alone
    return ActiveImage(str(image["id"]), keys, updated)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False

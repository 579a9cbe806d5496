"""Reconcile: remove the consumers of deleted images, and the per-image keys they leave behind.

The safety net for lost Glance delete notifications. :func:`reconcile` is pure: it takes a key
manager and a function telling whether an image exists; :class:`GlanceImages` is that function
for a real Glance. A consumer is removed only when Glance said its image is gone (never on
doubt), and a key is deleted (without force) only when it is a per-image key
(:data:`~img_crypt.glance.properties.PER_IMAGE_KEY_PREFIX`) that this run left without
consumers. keystoneauth and openstacksdk are imported only by the Glance lookups.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from img_crypt.errors import (
    ConsumerNotFoundError,
    ImgCryptError,
    KeyHasConsumersError,
    KeyNotFoundError,
)
from img_crypt.glance.properties import PER_IMAGE_KEY_PREFIX, image_of_key
from img_crypt.keys.base import Consumer, KeyInfo, KeyManager

if TYPE_CHECKING:
    from keystoneauth1.session import Session
    from requests import Response

DEFAULT_TIMEOUT = 30.0
GONE_STATUSES = frozenset({"deleted", "pending_delete"})
"""Glance image statuses that count as deleted."""
NOAUTH_ROLES = "reader,member"


class ImageState(enum.Enum):
    """What Glance says about an image."""

    EXISTS = "exists"
    GONE = "gone"
    UNKNOWN = "unknown"


ImageStateLookup = Callable[[str], ImageState]


@dataclass(frozen=True)
class RemovedConsumer:
    """An image consumer removed from a key (or that would be, in a dry run)."""

    key_id: str
    image_id: str
    already_removed: bool = False
    """Someone else removed it between our listing and our removal."""


@dataclass(frozen=True)
class KeptKey:
    """A key this run looked at closely but did not delete, and why."""

    key_id: str
    reason: str


@dataclass(frozen=True)
class UnknownImage:
    """An image whose state Glance could not tell; its key was skipped."""

    image_id: str
    key_id: str


@dataclass
class Report:
    """What a reconcile run did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    checked: int = 0
    """Keys examined."""
    removed: list[RemovedConsumer] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[KeptKey] = field(default_factory=list)
    unknown: list[UnknownImage] = field(default_factory=list)

    @property
    def decided(self) -> bool:
        """True when the state of every image consumer was known."""
        return not self.unknown

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def reconcile(manager: KeyManager, image_state: ImageStateLookup, *, service: str,
              dry_run: bool, report: Report | None = None) -> Report:
    """Remove the ``service`` image consumers of gone images; delete per-image keys left empty.

    ``report`` (a new one by default) is filled as the run goes, so a caller still has what was
    done when a key-manager error ends the run early. Each image is looked up once per run.
    """
    report = report if report is not None else Report()
    report.dry_run = dry_run
    states: dict[str, ImageState] = {}

    def state(image_id: str) -> ImageState:
        if image_id not in states:
            states[image_id] = image_state(image_id)
        return states[image_id]

    for info in manager.list_keys():
        report.checked += 1
        try:
            _reconcile_key(manager, info, state, service=service, dry_run=dry_run,
                           report=report)
        except KeyNotFoundError:
            report.kept.append(KeptKey(info.key_id, "the key disappeared during the run"))
    return report


def _reconcile_key(manager: KeyManager, info: KeyInfo, state: ImageStateLookup, *,
                   service: str, dry_run: bool, report: Report) -> None:
    key_id = info.key_id
    consumers = manager.list_consumers(key_id)
    ours = [c for c in consumers if c.resource_type == "image" and c.service == service]
    verdicts = {c.resource_id: state(c.resource_id) for c in ours}
    unknown = sorted(i for i, s in verdicts.items() if s is ImageState.UNKNOWN)
    if unknown:
        report.unknown += [UnknownImage(i, key_id) for i in unknown]
        report.kept.append(KeptKey(key_id, f"state of image(s) {', '.join(unknown)} unknown; "
                                           "nothing removed"))
        return
    if not consumers:
        _reconcile_orphan(manager, info, state, dry_run=dry_run, report=report)
        return
    stale = [c for c in ours if verdicts[c.resource_id] is ImageState.GONE]
    if not stale:
        return
    for consumer in stale:
        report.removed.append(RemovedConsumer(key_id, consumer.resource_id,
                                              _remove(manager, key_id, consumer, dry_run)))
    remaining = len(consumers) - len(stale)
    if remaining:
        report.kept.append(KeptKey(key_id, f"{remaining} consumer(s) remain"))
    elif not (info.name or "").startswith(PER_IMAGE_KEY_PREFIX):
        report.kept.append(KeptKey(key_id, f"not a per-image key (name does not start with "
                                           f"{PER_IMAGE_KEY_PREFIX!r})"))
    else:
        _delete(manager, key_id, dry_run, report)


def _reconcile_orphan(manager: KeyManager, info: KeyInfo, state: ImageStateLookup, *,
                      dry_run: bool, report: Report) -> None:
    """A per-image key without consumers: delete it once the image it names is gone.

    That is what a delete hook that removed the consumer but failed to delete the key, or an
    import killed between creating the key and registering the image, leaves behind.
    """
    image_id = image_of_key(info.name)
    if image_id is None:
        return
    verdict = state(image_id)
    if verdict is ImageState.UNKNOWN:
        report.unknown.append(UnknownImage(image_id, info.key_id))
        report.kept.append(KeptKey(info.key_id, f"state of image {image_id} unknown"))
    elif verdict is ImageState.GONE:
        _delete(manager, info.key_id, dry_run, report)


def _delete(manager: KeyManager, key_id: str, dry_run: bool, report: Report) -> None:
    """Delete a key without force (a consumer that appeared meanwhile keeps it)."""
    if dry_run:
        report.deleted.append(key_id)
        return
    try:
        manager.delete_key(key_id, force=False)
    except KeyHasConsumersError:
        report.kept.append(KeptKey(key_id, "a new consumer appeared; not deleted"))
    else:
        report.deleted.append(key_id)


def _remove(manager: KeyManager, key_id: str, consumer: Consumer, dry_run: bool) -> bool:
    """Remove one consumer; True when it was already gone."""
    if dry_run:
        return False
    try:
        manager.remove_consumer(key_id, consumer)
    except ConsumerNotFoundError:
        return True
    return False


# --- Glance ----------------------------------------------------------------------------------

class GlanceError(ImgCryptError):
    """Glance cannot be asked at all: unreachable, refusing us, or not a Glance image API."""


class GlanceImages:
    """``image_state`` for :func:`reconcile`: ``GET /v2/images/{id}`` on one Glance endpoint.

    200 is EXISTS (GONE for status ``deleted``/``pending_delete``), 404 is GONE, anything else
    (401, 403, 5xx, connection errors, timeouts, a non-UUID id) is UNKNOWN, with the reason
    kept in :attr:`problems`.
    """

    def __init__(self, session: Session, endpoint: str, *,
                 headers: dict[str, str] | None = None) -> None:
        self.session = session
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
                            "X-Roles": NOAUTH_ROLES})

    @classmethod
    def from_cloud(cls, cloud: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> GlanceImages:
        """The ``image`` endpoint of clouds.yaml entry ``cloud`` (or the ``OS_*`` variables)."""
        from keystoneauth1 import exceptions as ks_exc

        from img_crypt.clouds import session_and_endpoint

        try:
            session, endpoint = session_and_endpoint(cloud, "image", timeout)
        except ks_exc.Unauthorized:
            raise GlanceError("authentication with Keystone failed") from None
        except ks_exc.ClientException as e:
            raise GlanceError(f"cannot find Glance in the service catalog: "
                              f"{type(e).__name__}") from None
        if not endpoint:
            raise GlanceError("the service catalog has no image endpoint")
        return cls(session, endpoint)

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


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False

"""Reconcile: remove the consumers of deleted images, and the per-image keys they leave behind.

The safety net for lost Glance notifications. First it adds the consumer records that active
encrypted images lack (an upload event lost, or a client image uploaded between its events),
through :class:`~img_crypt.enrollment.Enrollment`, for images whose last update is older than
the grace period. :func:`reconcile` is pure: it takes a key
manager and a function telling whether an image exists (for a real Glance:
:class:`img_crypt.glance.images.GlanceImages`). A consumer is removed only when Glance said its
image is gone (never on doubt) and the record is older than the grace period (its image may not
exist *yet*); whether a key then goes is :mod:`img_crypt.retention`'s rule, shared with the
delete hook: only a per-image key, never by force, never one younger than the grace period.
Consumer records that are not ours (another service, another resource type) or that cannot be
read are left alone and keep their key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from img_crypt import retention
from img_crypt.enrollment import Enrollment
from img_crypt.errors import ConsumerNotFoundError, ForbiddenError, KeyNotFoundError
from img_crypt.keys.base import Consumer, KeyInfo, KeyManager, unreadable_consumers
from img_crypt.keys.naming import image_of_key


class ImageState(enum.Enum):
    """What Glance says about an image."""

    EXISTS = "exists"
    GONE = "gone"
    UNKNOWN = "unknown"


ImageStateLookup = Callable[[str], ImageState]


@dataclass(frozen=True)
class ActiveImage:
    """An active image that names keys (``os_encrypt_key_id``, ``cinder_encryption_key_id``)."""

    image_id: str
    key_ids: tuple[str, ...]
    updated: datetime | None
    """Its last update (Glance's ``updated_at``; None: unknown, counts as young)."""


@dataclass(frozen=True)
class AddedConsumer:
    """A consumer record added for an active image that lacked it (or would be, dry run)."""

    key_id: str
    image_id: str


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


@dataclass(frozen=True)
class SkippedConsumer:
    """A consumer record that breaks our assumptions: reported, left alone, keeps its key."""

    key_id: str
    record: dict[str, Any]
    reason: str


@dataclass
class Report:
    """What a reconcile run did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    checked: int = 0
    """Keys examined."""
    added: list[AddedConsumer] = field(default_factory=list)
    removed: list[RemovedConsumer] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[KeptKey] = field(default_factory=list)
    unknown: list[UnknownImage] = field(default_factory=list)
    skipped: list[SkippedConsumer] = field(default_factory=list)

    @property
    def decided(self) -> bool:
        """True when the state of every image consumer was known."""
        return not self.unknown

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class _Run:
    manager: KeyManager
    state: ImageStateLookup
    service: str
    dry_run: bool
    report: Report
    now: datetime
    grace: timedelta

    def young(self, created: datetime | None) -> bool:
        return retention.is_young(created, now=self.now, grace=self.grace)


def reconcile(manager: KeyManager, image_state: ImageStateLookup, *, service: str,
              dry_run: bool, report: Report | None = None,
              grace: timedelta = retention.DEFAULT_GRACE, now: datetime | None = None,
              active: Iterable[ActiveImage] = ()) -> Report:
    """Add the missing consumers of ``active`` images; remove those of gone images.

    Then per-image keys left empty are deleted. Images updated and records made within
    ``grace`` (at ``now``, default the current time) are left alone whatever Glance says.
    ``report`` (a new one by default) is filled as the run goes, so a caller still has what
    was done when a key-manager error ends the run early. Each image is looked
    up once per run.
    """
    report = report if report is not None else Report()
    report.dry_run = dry_run
    states: dict[str, ImageState] = {}

    def state(image_id: str) -> ImageState:
        if image_id not in states:
            states[image_id] = image_state(image_id)
        return states[image_id]

    run = _Run(manager, state, service, dry_run, report, now or datetime.now(UTC), grace)
    for image in active:
        if not run.young(image.updated):
            for key_id in image.key_ids:
                _enroll(run, image.image_id, key_id)
    for info in manager.list_keys():
        report.checked += 1
        try:
            _reconcile_key(run, info)
        except KeyNotFoundError:
            report.kept.append(KeptKey(info.key_id, "the key disappeared during the run"))
    return report


def _enroll(run: _Run, image_id: str, key_id: str) -> None:
    """Add the consumer record an active image lacks on one of its keys."""
    consumer = Consumer(service=run.service, resource_type="image", resource_id=image_id)
    try:
        if run.dry_run:
            if consumer not in run.manager.list_consumers(key_id):
                run.report.added.append(AddedConsumer(key_id, image_id))
            return
        with Enrollment(run.manager) as enrollment:
            enrollment.register(consumer, [key_id])
    except (KeyNotFoundError, ForbiddenError):
        run.report.kept.append(KeptKey(key_id, f"named by active image {image_id}, but not "
                                               "found in this project; no consumer added"))
        return
    if enrollment.added:
        run.report.added.append(AddedConsumer(key_id, image_id))


def _reconcile_key(run: _Run, info: KeyInfo) -> None:
    key_id, report = info.key_id, run.report
    consumers = run.manager.list_consumers(key_id)
    unreadable = unreadable_consumers(consumers)
    report.skipped += [SkippedConsumer(key_id, u.record, u.reason) for u in unreadable]
    ours = [c for c in consumers if c.resource_type == "image" and c.service == run.service]
    verdicts = {c.resource_id: run.state(c.resource_id) for c in ours if not run.young(c.created)}
    unknown = sorted(i for i, s in verdicts.items() if s is ImageState.UNKNOWN)
    if unknown:
        report.unknown += [UnknownImage(i, key_id) for i in unknown]
        report.kept.append(KeptKey(key_id, f"state of image(s) {', '.join(unknown)} unknown; "
                                           "nothing removed"))
        return
    if not consumers and not unreadable:
        _reconcile_orphan(run, info)
        return
    stale = [c for c in ours if verdicts.get(c.resource_id) is ImageState.GONE]
    young = [c for c in ours if c.resource_id not in verdicts]
    if not stale:
        if young:
            report.kept.append(KeptKey(key_id,
                                       f"{len(young)} consumer(s) {retention.YOUNG_REASON}"))
        return
    for consumer in stale:
        report.removed.append(RemovedConsumer(key_id, consumer.resource_id,
                                              _remove(run, key_id, consumer)))
    remaining = len(consumers) + len(unreadable) - len(stale)
    if remaining:
        report.kept.append(KeptKey(key_id, f"{remaining} consumer(s) remain"))
        return
    why = retention.why_keep(run.manager, key_id, image_id=stale[0].resource_id,
                             was_consumer=True, policy_deletes=None, info=info)
    _delete(run, key_id, why)


def _reconcile_orphan(run: _Run, info: KeyInfo) -> None:
    """A per-image key without consumers: delete it once the image it names is gone.

    That is what a delete hook that removed the consumer but failed to delete the key, or an
    import killed between creating the key and registering the image, leaves behind; a young
    one may also be a client's key whose image is not created yet.
    """
    image_id = image_of_key(info.name)
    if image_id is None:
        return
    if run.young(info.created):
        run.report.kept.append(KeptKey(info.key_id, retention.YOUNG_REASON))
        return
    verdict = run.state(image_id)
    if verdict is ImageState.UNKNOWN:
        run.report.unknown.append(UnknownImage(image_id, info.key_id))
        run.report.kept.append(KeptKey(info.key_id, f"state of image {image_id} unknown"))
    elif verdict is ImageState.GONE:
        why = retention.why_keep(run.manager, info.key_id, image_id=image_id,
                                 was_consumer=False, policy_deletes=None, info=info)
        _delete(run, info.key_id, why)


def _delete(run: _Run, key_id: str, why: str) -> None:
    """Delete a key :mod:`retention` let go (never by force), or say why it stays."""
    if not why and not run.dry_run:
        why = retention.delete(run.manager, key_id)
    if why:
        run.report.kept.append(KeptKey(key_id, why.removeprefix("kept: ")))
    else:
        run.report.deleted.append(key_id)


def _remove(run: _Run, key_id: str, consumer: Consumer) -> bool:
    """Remove one consumer; True when it was already gone."""
    if run.dry_run:
        return False
    try:
        run.manager.remove_consumer(key_id, consumer)
    except ConsumerNotFoundError:
        return True
    return False

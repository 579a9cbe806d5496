"""``img-crypt reconcile``: remove the consumers of deleted images and the keys they leave."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from img_crypt._text import printable
from img_crypt.cli.managers import Managers
from img_crypt.errors import UsageError

if TYPE_CHECKING:
    from img_crypt.reconcile import Report


def reconcile(args: argparse.Namespace) -> int:
    """Remove image consumers whose image Glance no longer has; delete per-image keys left empty.

    First, the project's active images that name a key get their missing consumer records.
    Images and records younger than --grace-period are left alone. Exit code 1 when the state
    of some image was unknown: nothing was removed from its keys.
    """
    from img_crypt import reconcile as rc
    from img_crypt.glance.images import GlanceImages

    if args.glance_url:
        if not args.project_id:
            raise UsageError("--glance-url needs --project-id (or OS_PROJECT_ID)")
        glance = GlanceImages.noauth(args.glance_url, args.project_id)
    else:
        glance = GlanceImages.from_cloud(args.os_cloud)
    glance.check()  # a wrong URL must not make every image look deleted
    report = rc.Report()
    try:
        rc.reconcile(Managers(args).selected(), glance, service=args.consumer_service,
                     dry_run=args.dry_run, report=report, grace=args.grace_period,
                     active=glance.active_images())
    except BaseException:
        _show_reconcile(args, report, glance.problems, complete=False)
        raise
    _show_reconcile(args, report, glance.problems, complete=True)
    return 0 if report.decided else 1


def _show_reconcile(args: argparse.Namespace, report: Report, problems: dict[str, str], *,
                    complete: bool) -> None:
    """Print the report: one line per action and a summary, or JSON.

    Key ids, image ids and reasons come from Barbican and Glance: every line is escaped.
    """
    if args.json:
        doc = {**report.as_dict(), "complete": complete, "decided": report.decided}
        doc["unknown"] = [{**u, "reason": problems.get(u["image_id"], "")}
                          for u in doc["unknown"]]
        print(json.dumps(doc, indent=2))
        return
    dry = report.dry_run
    lines = [f"{'would add' if dry else 'added'} consumer image/{a.image_id} to key {a.key_id}"
             for a in report.added]
    lines += [f"{'would remove' if dry else 'removed'} consumer image/{r.image_id} from key "
             f"{r.key_id}{' (already removed)' if r.already_removed else ''}"
             for r in report.removed]
    lines += [f"{'would delete' if dry else 'deleted'} key {key_id}"
              for key_id in report.deleted]
    lines += [f"kept key {kept.key_id}: {kept.reason}" for kept in report.kept]
    lines += [f"skipped a consumer record of key {s.key_id}: {s.reason}: {json.dumps(s.record)}"
              for s in report.skipped]
    unknown = dict.fromkeys(u.image_id for u in report.unknown)
    lines += [f"unknown image {image}: {problems.get(image, 'no answer')}" for image in unknown]
    for line in lines:
        print(printable(line))
    state = "" if complete else ", stopped early"
    added = "to add" if dry else "added"
    print(f"reconcile{' (dry run)' if dry else ''}{state}: {report.checked} key(s) checked, "
          f"{len(report.removed)} consumer(s) {'to remove' if dry else 'removed'}, "
          f"{len(report.deleted)} key(s) {'to delete' if dry else 'deleted'}, "
          f"{len(report.kept)} kept, {len(unknown)} image(s) unknown"
          f"{f', {len(report.skipped)} record(s) skipped' if report.skipped else ''}"
          f"{f', {len(report.added)} consumer(s) {added}' if report.added else ''}")

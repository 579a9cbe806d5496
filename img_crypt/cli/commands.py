"""The ``img-crypt`` subcommands; each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import img_crypt.cli.luks as cli_luks
from img_crypt import envelope, luks
from img_crypt._io import Input
from img_crypt._text import printable
from img_crypt.cli.files import open_input, open_output, refuse_terminal
from img_crypt.cli.managers import Managers
from img_crypt.cli.progress import progress
from img_crypt.cli.threads import threads
from img_crypt.enrollment import Enrollment, KeyRef, NewKey, release
from img_crypt.errors import UsageError
from img_crypt.format import Header
from img_crypt.keys.base import Consumer, KeyManager, unreadable_consumers

if TYPE_CHECKING:
    from img_crypt.reconcile import Report

SUITE_NAMES = {1: "Cobblestone-256 payload, AES-256-GCM key slots, HMAC-SHA-256 header"}


def image_id(text: str) -> uuid.UUID:
    """Parse a UUID argument."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def byte_range(text: str) -> tuple[int, int | None]:
    """Parse a byte range ``START:END``, ``START:`` or ``:END`` (END exclusive)."""
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        first = int(start) if start else 0
        last = int(end) if end else None
        if first < 0 or (last is not None and last < first):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte range START:END: {text!r}") from None
    return first, last


def plaintext_size(text: str) -> int:
    """Parse a non-negative byte count (``--size``)."""
    try:
        size = int(text)
        if size < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r}") from None
    return size


def _info(args: argparse.Namespace, line: str) -> None:
    """Report on stdout, unless stdout carries the data."""
    stream = sys.stderr if getattr(args, "output", None) == "-" else sys.stdout
    print(line, file=stream)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):  # noqa: B007 - the last unit is used below
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _warn(line: str) -> None:
    print(f"img-crypt: warning: {printable(line)}", file=sys.stderr)


def _image(args: argparse.Namespace, image: uuid.UUID) -> Consumer:
    """The consumer record of ``image`` (InvalidValueError for a bad --consumer-service)."""
    return Consumer(service=args.consumer_service, resource_type="image",
                    resource_id=str(image))


def encrypt(args: argparse.Namespace) -> int:
    """Encrypt INPUT to OUTPUT under --kek keys or a new one; with --image-id, register it.

    On any failure the enrollment's undo removes what this command created (the new key, the
    consumer records it added), never what was there before.
    """
    refuse_terminal(args.output, args.force)
    workers = threads(args)
    image = _image(args, args.image_id) if args.image_id else None  # before creating anything
    if args.format == "luks":
        return _encrypt_luks(args, image)
    km = Managers(args).selected()
    refs: list[KeyRef] = list(args.kek) or [NewKey(f"img-crypt {args.input}")]
    with Enrollment(km, report=_warn) as enrolled:
        ids = [enrolled.key(ref) for ref in refs]
        created = set(enrolled.created_keys)
        keks = [envelope.Kek(km.kind, key_id, km.get_key(key_id)) for key_id in ids]
        if image is not None:
            enrolled.register(image, ids)
        with open_input(args.input) as (src, total), open_output(args.output,
                                                                 force=args.force) as dst, \
                progress(total, "encrypt") as bar:
            summary = envelope.encrypt(src, dst, keks, image_id=args.image_id, progress=bar,
                                       threads=workers)
    for key_id in ids:
        _info(args, f"key: {km.kind}:{printable(key_id)}"
                    f"{' (new)' if key_id in created else ''}")
    _info(args, f"encrypted {args.input} -> {args.output}: {_size(summary.plaintext_size)} "
                f"plaintext, {_size(summary.file_size)} encrypted, image "
                f"{summary.header.image_id or 'unbound'}")
    return 0


def decrypt(args: argparse.Namespace) -> int:
    """Decrypt INPUT (or a byte range of it) to OUTPUT."""
    workers = threads(args)
    lookup = Managers(args).lookup()
    with open_input(args.input) as (stream, total):
        prefix, src = cli_luks.peek(stream, total)
        if luks.is_luks(prefix):
            return _decrypt_luks(args, src)
        if args.kek is not None or args.size is not None:
            raise UsageError("--kek and --size apply to a LUKS1 INPUT only")
        if args.range is not None and total is None:
            raise UsageError("--range needs a regular file as INPUT")
        with open_output(args.output, force=args.force) as dst:
            if args.range is not None:
                start, end = args.range
                summary = envelope.decrypt_range(stream, dst, lookup, start, end,
                                                 image_id=args.image_id)
            else:
                with progress(total, "decrypt") as bar:
                    summary = envelope.decrypt(src, dst, lookup, image_id=args.image_id,
                                               progress=bar, threads=workers)
    what = f"bytes {args.range[0]}:{args.range[0] + summary.plaintext_size}" if args.range \
        else _size(summary.plaintext_size)
    _info(args, f"decrypted {args.input} -> {args.output}: {what}")
    return 0


def _encrypt_luks(args: argparse.Namespace, image: Consumer | None) -> int:
    key_id, new, size = cli_luks.encrypt(args, image, _warn)
    _info(args, f"key: {args.key_manager}:{printable(key_id)}{' (new)' if new else ''}")
    _info(args, f"encrypted {args.input} -> {args.output}: LUKS1, {size} bytes plaintext "
                f"(os_decrypt_size={size})"
                f"{f', consumer image {args.image_id}' if image else ''}")
    return 0


def _decrypt_luks(args: argparse.Namespace, src: Input) -> int:
    cli_luks.refuse_options(args)
    written = cli_luks.decrypt(args, src)
    padded = "" if args.size is not None else " (padded to 512 bytes: give --size for the " \
        "exact plaintext)"
    _info(args, f"decrypted {args.input} -> {args.output}: LUKS1, {written} bytes{padded}")
    return 0


def _describe(summary: envelope.Inspection) -> dict[str, Any]:
    """The header's facts; sizes are None when unknown (a stream) or impossible."""
    h = summary.header
    plain = summary.plaintext_size
    return {
        "format": "img-crypt", "version": h.version, "suite": h.suite,
        "suite_name": SUITE_NAMES.get(h.suite, "unknown"),
        "image_id": str(h.image_id) if h.image_id else None,
        "key_slots": [{"kind": s.kind, "key_id": s.key_id} for s in h.slots],
        "header_size": summary.header_size, "payload_size": summary.payload_size,
        "plaintext_size": plain if plain is not None and plain >= 0 else None,
    }


_UNREAD = "unknown (a stream: not read past the header)"


def inspect(args: argparse.Namespace) -> int:
    """Print what a file's header says, with no key."""
    with open_input(args.input) as (stream, total):
        prefix, src = cli_luks.peek(stream, total)
        if luks.is_luks(prefix):
            return cli_luks.inspect(args, src)
        summary = envelope.inspect(src, size=total)
    info = _describe(summary)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    plain, payload = info["plaintext_size"], info["payload_size"]
    print(f"format:     img-crypt v{info['version']}")
    print(f"suite:      {info['suite']} ({info['suite_name']})")
    print(f"image id:   {info['image_id'] or 'none (unbound)'}")
    print(f"key slots:  {len(info['key_slots'])}")
    for slot in info["key_slots"]:
        print(f"  {slot['kind']:<9} {printable(slot['key_id'])}")
    print(f"header:     {info['header_size']} bytes")
    if payload is None:
        print(f"payload:    {_UNREAD}")
        print(f"plaintext:  {_UNREAD}")
        return 0
    print(f"payload:    {payload} bytes")
    print("plaintext:  " + (f"{plain} bytes" if plain is not None else
                            "invalid payload length (truncated or trailing data)"))
    return 0


def rewrap(args: argparse.Namespace) -> int:
    """Add and remove key slots; the payload is copied byte for byte (and authenticated).

    For a file bound to an image, the image becomes a consumer of each added key before the
    output is published (undone if the rewrap fails), and stops being one of each removed key
    after.
    """
    if not args.add_kek and not args.remove_kek:
        raise UsageError("rewrap needs --add-kek or --remove-kek")
    refuse_terminal(args.output, args.force)
    managers = Managers(args)
    km = managers.selected()
    image: Consumer | None = None
    with Enrollment(km, report=_warn) as enrolled:
        add = [envelope.Kek(km.kind, key_id, km.get_key(key_id))
               for key_id in map(enrolled.key, args.add_kek)]

        def enroll(header: Header) -> None:
            nonlocal image
            if header.image_id is not None:
                image = _image(args, header.image_id)
                enrolled.register(image, args.add_kek)

        with open_input(args.input) as (src, total), \
                open_output(args.output, force=args.force) as dst, \
                progress(total, "rewrap") as bar:
            summary = envelope.rewrap(src, dst, managers.lookup(), add=add,
                                      remove=[(km.kind, key_id) for key_id in args.remove_kek],
                                      verify=not args.header_only, before_write=enroll,
                                      progress=bar)
    slots = ", ".join(f"{s.kind}:{s.key_id}" for s in summary.header.slots)
    _info(args, printable(f"rewrapped {args.input} -> {args.output}: key slots {slots}"))
    _info(args, "payload: copied without authentication (--header-only)" if args.header_only
          else "payload: authenticated, every chunk")
    if image is not None:
        _move_image(args, km, image, summary.header)
    return 0


def _move_image(args: argparse.Namespace, km: KeyManager, image: Consumer,
                header: Header) -> None:
    """Report the image's new keys; release it from the removed keys the output lacks."""
    for key_id in args.add_kek:
        _info(args, printable(f"image {image.resource_id}: consumer of key {key_id}"))
    kept = {s.key_id for s in header.slots if s.kind == km.kind}
    gone = [key_id for key_id in args.remove_kek if key_id not in kept]
    for line in release(km, image, gone):
        _warn(line)
    for key_id in gone:
        _info(args, printable(f"image {image.resource_id}: released from key {key_id}"))


def keys_create(args: argparse.Namespace) -> int:
    """Create a KEK and print its id."""
    print(Managers(args).selected().create_key(name=args.name))
    return 0


def keys_list(args: argparse.Namespace) -> int:
    """List the KEKs of the store."""
    keys = Managers(args).selected().list_keys()
    if args.json:
        print(json.dumps([k.to_json() for k in keys], indent=2))
        return 0
    for k in keys:  # ids and names are the store's or Barbican's text: escaped
        created = k.created.isoformat(timespec="seconds") if k.created else "-"
        print(f"{printable(k.key_id)}  {created}  consumers={k.consumers}  "
              f"{printable(k.name or '')}".rstrip())
    return 0


def keys_delete(args: argparse.Namespace) -> int:
    """Delete a KEK (refused while consumers remain, unless --force)."""
    Managers(args).selected().delete_key(args.key_id, force=args.force)
    print(f"deleted key {printable(args.key_id)}")
    return 0


def keys_consumers(args: argparse.Namespace) -> int:
    """List the consumers (images) of a KEK; records we cannot read are reported and skipped."""
    consumers = Managers(args).selected().list_consumers(args.key_id)
    unreadable = unreadable_consumers(consumers)
    for u in unreadable:
        print(f"img-crypt: warning: skipped a consumer record of key {printable(args.key_id)}: "
              f"{printable(u.reason)}: {printable(json.dumps(u.record))}", file=sys.stderr)
    if args.json:
        print(json.dumps([c.to_dict() | {"created": _when(c.created)} for c in consumers],
                         indent=2))
        return 0
    for c in consumers:
        print(printable(f"{c.service}  {c.resource_type}  {c.resource_id}  "
                        f"{_when(c.created) or '-'}"))
    return 0


def _when(created: datetime | None) -> str | None:
    return created.isoformat(timespec="seconds") if created else None


def grace_period(text: str) -> timedelta:
    """Parse a duration such as ``7d``, ``36h``, ``90m`` or ``0`` (for ``--grace-period``)."""
    found = re.fullmatch(r"\s*(\d{1,6})\s*([dhms]?)\s*", text)
    if found is None or (not found[2] and found[1] != "0"):
        raise argparse.ArgumentTypeError(f"not a duration like 7d, 36h or 90m: {text!r}")
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "": "seconds"}[found[2]]
    return timedelta(**{unit: int(found[1])})


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


def upload(args: argparse.Namespace) -> int:
    """Create a Glance image from IMAGE_FILE, encrypted while it is sent (img_crypt.cli.images)."""
    from img_crypt.cli import images

    image, key_id, new = images.upload(args, _warn)
    print(f"key: {args.key_manager}:{printable(key_id)}{' (new)' if new else ''}")
    print(f"uploaded {args.input} -> image {image}")
    return 0


def download(args: argparse.Namespace) -> int:
    """Decrypt Glance image IMAGE_ID into OUTPUT, published once authenticated."""
    from img_crypt.cli import images

    fmt, size = images.download(args)
    _info(args, f"downloaded image {args.image_id} -> {args.output}: {printable(fmt)}, "
                f"{size} bytes plaintext")
    return 0


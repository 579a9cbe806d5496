"""The ``img-crypt`` subcommands; each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from img_crypt import envelope
from img_crypt.cli.files import open_input, open_output, refuse_terminal
from img_crypt.cli.managers import Managers
from img_crypt.cli.progress import progress
from img_crypt.cli.text import printable
from img_crypt.errors import ConsumerNotFoundError, ImgCryptError, UnavailableError, UsageError
from img_crypt.keys.base import Consumer, KeyManager

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


def encrypt(args: argparse.Namespace) -> int:
    """Encrypt INPUT to OUTPUT under --kek keys or a new one; with --image-id, register it.

    On any failure, what this command created is undone: the consumer records it added and
    the key it created.
    """
    refuse_terminal(args.output, args.force)
    km = Managers(args).selected()
    created = None if args.kek else km.create_key(name=f"img-crypt {args.input}")
    ids: list[str] = args.kek or [created]
    image = [Consumer(service=args.consumer_service, resource_type="image",
                      resource_id=str(args.image_id))] if args.image_id else []
    registered: list[tuple[str, Consumer]] = []
    try:
        keks = [envelope.Kek(km.kind, key_id, km.get_key(key_id)) for key_id in ids]
        for key_id, consumer in ((k, c) for k in ids for c in image):
            try:
                km.add_consumer(key_id, consumer)
            except UnavailableError:  # timed out, dropped, 5xx: it may have been registered
                registered.append((key_id, consumer))
                raise
            registered.append((key_id, consumer))
        with open_input(args.input) as (src, total), open_output(args.output,
                                                                 force=args.force) as dst, \
                progress(total, "encrypt") as bar:
            summary = envelope.encrypt(src, dst, keks, image_id=args.image_id, progress=bar)
    except BaseException:
        _undo(km, registered, created)
        raise
    for key_id in ids:
        _info(args, f"key: {km.kind}:{printable(key_id)}"
                    f"{' (new)' if key_id == created else ''}")
    _info(args, f"encrypted {args.input} -> {args.output}: {_size(summary.plaintext_size)} "
                f"plaintext, {_size(summary.file_size)} encrypted, image "
                f"{summary.header.image_id or 'unbound'}")
    return 0


def _undo(km: KeyManager, registered: list[tuple[str, Consumer]], created: str | None) -> None:
    """Best-effort rollback of an encrypt; what cannot be undone is reported, not hidden."""
    def attempt(what: str, step: Callable[[], None]) -> bool:
        try:
            step()
        except ConsumerNotFoundError:
            pass  # a registration that had not landed after all: nothing to undo
        except ImgCryptError as e:
            print(f"img-crypt: warning: could not {what}: {e}", file=sys.stderr)
            return False
        return True

    # The new key first: a forced delete takes its consumers with it.
    deleted = bool(created) and attempt(f"delete the new key {created}",
                                        partial(km.delete_key, str(created), force=True))
    for key_id, consumer in registered:
        if not (deleted and key_id == created):
            attempt(f"remove the consumer from key {key_id}",
                    partial(km.remove_consumer, key_id, consumer))


def decrypt(args: argparse.Namespace) -> int:
    """Decrypt INPUT (or a byte range of it) to OUTPUT."""
    lookup = Managers(args).lookup()
    with open_input(args.input) as (src, total):
        if args.range is not None and total is None:
            raise UsageError("--range needs a regular file as INPUT")
        with open_output(args.output, force=args.force) as dst:
            if args.range is not None:
                start, end = args.range
                summary = envelope.decrypt_range(src, dst, lookup, start, end,
                                                 image_id=args.image_id)
            else:
                with progress(total, "decrypt") as bar:
                    summary = envelope.decrypt(src, dst, lookup, image_id=args.image_id,
                                               progress=bar)
    what = f"bytes {args.range[0]}:{args.range[0] + summary.plaintext_size}" if args.range \
        else _size(summary.plaintext_size)
    _info(args, f"decrypted {args.input} -> {args.output}: {what}")
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
    with open_input(args.input) as (src, total):
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
    """Add and remove key slots; the payload is copied byte for byte."""
    if not args.add_kek and not args.remove_kek:
        raise UsageError("rewrap needs --add-kek or --remove-kek")
    refuse_terminal(args.output, args.force)
    managers = Managers(args)
    km = managers.selected()
    add = [envelope.Kek(km.kind, key_id, km.get_key(key_id)) for key_id in args.add_kek]
    remove = [(km.kind, key_id) for key_id in args.remove_kek]
    with open_input(args.input) as (src, total), \
            open_output(args.output, force=args.force) as dst, progress(total, "rewrap") as bar:
        summary = envelope.rewrap(src, dst, managers.lookup(), add=add, remove=remove,
                                  progress=bar)
    slots = ", ".join(f"{s.kind}:{s.key_id}" for s in summary.header.slots)
    _info(args, f"rewrapped {args.input} -> {args.output}: key slots {slots}")
    return 0


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
    """List the consumers (images) of a KEK."""
    consumers = Managers(args).selected().list_consumers(args.key_id)
    if args.json:
        print(json.dumps([c.to_dict() for c in consumers], indent=2))
        return 0
    for c in consumers:
        print(f"{c.service}  {c.resource_type}  {c.resource_id}")
    return 0


def reconcile(args: argparse.Namespace) -> int:
    """Remove image consumers whose image Glance no longer has; delete per-image keys left empty.

    Exit code 1 when the state of some image was unknown: nothing was removed from its keys.
    """
    from img_crypt import reconcile as rc

    if args.glance_url:
        if not args.project_id:
            raise UsageError("--glance-url needs --project-id (or OS_PROJECT_ID)")
        glance = rc.GlanceImages.noauth(args.glance_url, args.project_id)
    else:
        glance = rc.GlanceImages.from_cloud(args.os_cloud)
    glance.check()  # a wrong URL must not make every image look deleted
    report = rc.Report()
    try:
        rc.reconcile(Managers(args).selected(), glance, service=args.consumer_service,
                     dry_run=args.dry_run, report=report)
    except BaseException:
        _show_reconcile(args, report, glance.problems, complete=False)
        raise
    _show_reconcile(args, report, glance.problems, complete=True)
    return 0 if report.decided else 1


def _show_reconcile(args: argparse.Namespace, report: Report, problems: dict[str, str], *,
                    complete: bool) -> None:
    """Print the report: one line per action and a summary, or JSON."""
    if args.json:
        doc = {**report.as_dict(), "complete": complete, "decided": report.decided}
        doc["unknown"] = [{**u, "reason": problems.get(u["image_id"], "")}
                          for u in doc["unknown"]]
        print(json.dumps(doc, indent=2))
        return
    dry = report.dry_run
    for r in report.removed:
        print(f"{'would remove' if dry else 'removed'} consumer image/{r.image_id} from key "
              f"{r.key_id}{' (already removed)' if r.already_removed else ''}")
    for key_id in report.deleted:
        print(f"{'would delete' if dry else 'deleted'} key {key_id}")
    for kept in report.kept:
        print(f"kept key {kept.key_id}: {kept.reason}")
    for image in dict.fromkeys(u.image_id for u in report.unknown):
        print(f"unknown image {image}: {problems.get(image, 'no answer')}")
    state = "" if complete else ", stopped early"
    print(f"reconcile{' (dry run)' if dry else ''}{state}: {report.checked} key(s) checked, "
          f"{len(report.removed)} consumer(s) {'to remove' if dry else 'removed'}, "
          f"{len(report.deleted)} key(s) {'to delete' if dry else 'deleted'}, "
          f"{len(report.kept)} kept, {len(dict.fromkeys(u.image_id for u in report.unknown))} "
          f"image(s) unknown")

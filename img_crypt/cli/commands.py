"""The ``img-crypt`` subcommands; each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from img_crypt import envelope
from img_crypt.cli.files import open_input, open_output, refuse_terminal
from img_crypt.cli.progress import progress
from img_crypt.errors import KeyNotFoundError, UsageError
from img_crypt.keys.local import LocalKeyStore

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


def _store(args: argparse.Namespace) -> LocalKeyStore:
    return LocalKeyStore(args.key_store)


def _lookup(store: LocalKeyStore) -> envelope.KekLookup:
    def lookup(kind: str, key_id: str) -> bytes | None:
        if kind != store.kind:
            return None
        try:
            return store.get_key(key_id)
        except KeyNotFoundError:
            return None
    return lookup


def _info(args: argparse.Namespace, line: str) -> None:
    """Report on stdout, unless stdout carries the data."""
    stream = sys.stderr if getattr(args, "output", None) == "-" else sys.stdout
    print(line, file=stream)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def encrypt(args: argparse.Namespace) -> int:
    """Encrypt INPUT to OUTPUT; without --kek, under a new KEK (deleted again on failure)."""
    refuse_terminal(args.output, args.force)
    store = _store(args)
    created = None if args.kek else store.create_key(name=f"img-crypt {args.input}")
    try:
        ids = args.kek or [created]
        keks = [envelope.Kek(store.kind, key_id, store.get_key(key_id)) for key_id in ids]
        with open_input(args.input) as (src, total), open_output(args.output,
                                                                 force=args.force) as dst, \
                progress(total, "encrypt") as bar:
            summary = envelope.encrypt(src, dst, keks, image_id=args.image_id, progress=bar)
    except BaseException:
        if created:
            store.delete_key(created, force=True)
        raise
    for key_id in ids:
        _info(args, f"key: {store.kind}:{key_id}{' (new)' if key_id == created else ''}")
    _info(args, f"encrypted {args.input} -> {args.output}: {_size(summary.plaintext_size)} "
                f"plaintext, {_size(summary.file_size)} encrypted, image "
                f"{summary.header.image_id or 'unbound'}")
    return 0


def decrypt(args: argparse.Namespace) -> int:
    """Decrypt INPUT (or a byte range of it) to OUTPUT."""
    lookup = _lookup(_store(args))
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


def _describe(summary: envelope.Summary) -> dict[str, Any]:
    h = summary.header
    return {
        "format": "img-crypt", "version": h.version, "suite": h.suite,
        "suite_name": SUITE_NAMES.get(h.suite, "unknown"),
        "image_id": str(h.image_id) if h.image_id else None,
        "key_slots": [{"kind": s.kind, "key_id": s.key_id} for s in h.slots],
        "header_size": summary.header_size, "payload_size": summary.payload_size,
        "plaintext_size": summary.plaintext_size if summary.plaintext_size >= 0 else None,
    }


def inspect(args: argparse.Namespace) -> int:
    """Print what a file's header says, with no key."""
    with open_input(args.input) as (src, total):
        summary = envelope.inspect(src, size=total)
    info = _describe(summary)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    plain = info["plaintext_size"]
    print(f"format:     img-crypt v{info['version']}")
    print(f"suite:      {info['suite']} ({info['suite_name']})")
    print(f"image id:   {info['image_id'] or 'none (unbound)'}")
    print(f"key slots:  {len(info['key_slots'])}")
    for slot in info["key_slots"]:
        print(f"  {slot['kind']:<9} {slot['key_id']}")
    print(f"header:     {info['header_size']} bytes")
    print(f"payload:    {info['payload_size']} bytes")
    print("plaintext:  " + (f"{plain} bytes" if plain is not None else
                            "invalid payload length (truncated or trailing data)"))
    return 0


def rewrap(args: argparse.Namespace) -> int:
    """Add and remove key slots; the payload is copied byte for byte."""
    if not args.add_kek and not args.remove_kek:
        raise UsageError("rewrap needs --add-kek or --remove-kek")
    refuse_terminal(args.output, args.force)
    store = _store(args)
    add = [envelope.Kek(store.kind, key_id, store.get_key(key_id)) for key_id in args.add_kek]
    remove = [(store.kind, key_id) for key_id in args.remove_kek]
    with open_input(args.input) as (src, total), \
            open_output(args.output, force=args.force) as dst, progress(total, "rewrap") as bar:
        summary = envelope.rewrap(src, dst, _lookup(store), add=add, remove=remove,
                                  progress=bar)
    slots = ", ".join(f"{s.kind}:{s.key_id}" for s in summary.header.slots)
    _info(args, f"rewrapped {args.input} -> {args.output}: key slots {slots}")
    return 0


def keys_create(args: argparse.Namespace) -> int:
    """Create a KEK and print its id."""
    print(_store(args).create_key(name=args.name))
    return 0


def keys_list(args: argparse.Namespace) -> int:
    """List the KEKs of the store."""
    keys = _store(args).list_keys()
    if args.json:
        print(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return 0
    for k in keys:
        created = k.created.isoformat(timespec="seconds") if k.created else "-"
        print(f"{k.key_id}  {created}  consumers={k.consumers}  {k.name or ''}".rstrip())
    return 0


def keys_delete(args: argparse.Namespace) -> int:
    """Delete a KEK (refused while consumers remain, unless --force)."""
    _store(args).delete_key(args.key_id, force=args.force)
    print(f"deleted key {args.key_id}")
    return 0

"""The ``img-crypt`` subcommands; each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from img_crypt import envelope
from img_crypt._sniff import is_luks
from img_crypt._text import printable
from img_crypt.cli.files import open_input, open_output, peek, refuse_terminal
from img_crypt.cli.managers import Managers
from img_crypt.cli.progress import progress
from img_crypt.cli.threads import threads
from img_crypt.errors import UsageError
from img_crypt.format import Header

if TYPE_CHECKING:  # decrypt and inspect never import the key-manager layer's enrollment
    import uuid

    from img_crypt._io import Input
    from img_crypt.enrollment import KeyRef
    from img_crypt.keys.base import Consumer, KeyManager

SUITE_NAMES = {1: "Cobblestone-256 payload, AES-256-GCM key slots, HMAC-SHA-256 header"}


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
    from img_crypt.keys.base import Consumer

    return Consumer(service=args.consumer_service, resource_type="image",
                    resource_id=str(image))


def encrypt(args: argparse.Namespace) -> int:
    """Encrypt INPUT to OUTPUT under --kek keys or a new one; with --image-id, register it.

    On any failure the enrollment's undo removes what this command created (the new key, the
    consumer records it added), never what was there before.
    """
    from img_crypt.enrollment import Enrollment, NewKey  # only the commands that enroll keys

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
        prefix, src = peek(stream, total)
        if is_luks(prefix):
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
    from img_crypt.cli import luks as cli_luks

    key_id, new, size = cli_luks.encrypt(args, image, _warn)
    _info(args, f"key: {args.key_manager}:{printable(key_id)}{' (new)' if new else ''}")
    _info(args, f"encrypted {args.input} -> {args.output}: LUKS1, {size} bytes plaintext "
                f"(os_decrypt_size={size})"
                f"{f', consumer image {args.image_id}' if image else ''}")
    return 0


def _decrypt_luks(args: argparse.Namespace, src: Input) -> int:
    from img_crypt.cli import luks as cli_luks

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
        prefix, src = peek(stream, total)
        if is_luks(prefix):
            from img_crypt.cli import luks as cli_luks  # only LUKS1 input imports the LUKS code

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
    from img_crypt.enrollment import Enrollment

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
    from img_crypt.enrollment import release

    for key_id in args.add_kek:
        _info(args, printable(f"image {image.resource_id}: consumer of key {key_id}"))
    kept = {s.key_id for s in header.slots if s.kind == km.kind}
    gone = [key_id for key_id in args.remove_kek if key_id not in kept]
    for line in release(km, image, gone):
        _warn(line)
    for key_id in gone:
        _info(args, printable(f"image {image.resource_id}: released from key {key_id}"))


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

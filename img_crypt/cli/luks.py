"""``--format luks`` on the command line: raw LUKS1 images whose passphrase derives from a KEK.

The passphrase is the lowercase hex of the KEK's 32 bytes (Cinder's and Nova's convention); it
is computed here and never appears on a command line or in a log. A LUKS1 header names no
key, so decrypting needs ``--kek``; it has no integrity, so plaintext is released as decrypted
(a wrong key still fails, before any output, on the header's master-key digest).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from img_crypt import luks
from img_crypt._io import Input
from img_crypt._text import printable
from img_crypt.cli.files import open_input, open_output
from img_crypt.cli.managers import Managers
from img_crypt.enrollment import Enrollment, KeyRef, NewKey
from img_crypt.errors import UsageError
from img_crypt.keys.base import Consumer


def encrypt(args: argparse.Namespace, image: Consumer | None,
            report: Callable[[str], None]) -> tuple[str, bool, int]:
    """Write INPUT as a raw LUKS1 image under one KEK; return (key id, is new, plaintext size).

    Keys and the image's consumer record go through the one :class:`Enrollment`: a failure
    undoes what this command created, never what was there before.
    """
    if len(args.kek) > 1:
        raise UsageError("--format luks takes at most one --kek: a LUKS1 image made here has "
                         "one passphrase")
    km = Managers(args).selected()
    ref: KeyRef = args.kek[0] if args.kek else NewKey(f"img-crypt {args.input}")
    with Enrollment(km, report=report) as enrolled:
        key_id = enrolled.key(ref)
        created = key_id in enrolled.created_keys
        secret = luks.passphrase(km.get_key(key_id), key_id)
        if image is not None:
            enrolled.register(image, [key_id])
        with open_input(args.input) as (src, _total), \
                open_output(args.output, force=args.force) as dst:
            size = luks.encrypt(src, dst, secret)
    return key_id, created, size


def refuse_options(args: argparse.Namespace) -> None:
    """Usage errors for decrypt options that LUKS1 input cannot honour, or that it needs."""
    if args.image_id is not None:
        raise UsageError("--image-id does not apply to a LUKS1 image: it records no image id")
    if args.range is not None:
        raise UsageError("--range is not supported for a LUKS1 image")
    if not args.kek:
        raise UsageError("a LUKS1 image names no key: give its KEK with --kek")


def decrypt(args: argparse.Namespace, src: Input) -> int:
    """Decrypt the LUKS1 image ``src`` to OUTPUT under --kek; return the bytes written."""
    secret = luks.passphrase(Managers(args).selected().get_key(args.kek), args.kek)
    with open_output(args.output, force=args.force) as dst:
        return luks.decrypt(src, dst, secret, size=args.size)


def describe(src: Input) -> dict[str, Any]:
    """The facts of a LUKS1 header, read without a key."""
    info = luks.inspect(src)
    return {"format": "luks", "version": info.version,
            "cipher": f"{info.cipher}-{info.mode}", "hash": info.hash,
            "key_bits": info.key_bits, "key_slots": list(info.active_slots),
            "payload_offset": info.payload_offset, "uuid": info.uuid}


def inspect(args: argparse.Namespace, src: Input) -> int:
    """Print what a LUKS1 header says."""
    info = describe(src)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"format:     LUKS{info['version']}")
    print(f"cipher:     {printable(info['cipher'])}")
    print(f"hash:       {printable(info['hash'])}")
    print(f"key bits:   {info['key_bits']}")
    print(f"key slots:  {', '.join(map(str, info['key_slots']))} in use")
    print(f"payload:    at byte {info['payload_offset']}")
    print(f"uuid:       {printable(info['uuid'])}")
    return 0

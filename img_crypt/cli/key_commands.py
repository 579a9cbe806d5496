"""The ``img-crypt keys`` sub-commands: create, list, delete and the consumers of KEKs.

They import only a key manager: none of the payload or LUKS modules, nor cryptography for the
local store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from img_crypt._text import printable
from img_crypt.cli.managers import Managers
from img_crypt.keys.base import unreadable_consumers


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

"""The ``img-crypt`` argument parser, built from light modules only.

Every run builds it, ``--version`` and ``--help`` included, so it imports no command module,
key store or cryptography: each sub-command's ``func`` is a name in :data:`COMMANDS`, whose
module :func:`command` imports when that command runs, and the ``type=`` validators come from
:mod:`img_crypt.cli.args`. Only the command a run names gets its arguments; the others get
their name and one-line help, all the program's help shows of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TypeAlias

from img_crypt import __version__
from img_crypt.cli.args import (
    DEFAULT_GRACE,
    byte_range,
    grace_period,
    image_id,
    output_path,
    plaintext_size,
)
from img_crypt.cli.managers import add_options
from img_crypt.cli.threads import add_option as add_threads

PROG = "img-crypt"

_COMMANDS = "img_crypt.cli.commands"
_KEYS = "img_crypt.cli.key_commands"
COMMANDS = {
    "encrypt": _COMMANDS, "decrypt": _COMMANDS, "inspect": _COMMANDS, "rewrap": _COMMANDS,
    "upload": _COMMANDS, "download": _COMMANDS,
    "keys_create": _KEYS, "keys_list": _KEYS, "keys_delete": _KEYS, "keys_consumers": _KEYS,
    "reconcile": "img_crypt.cli.reconcile_command",
}
"""Each command function's name -> the module defining it (imported on use)."""


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function of command ``name``, its module imported now."""
    function: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(COMMANDS[name]), name)
    return function


Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

HELP = {
    "encrypt": "encrypt an image",
    "decrypt": "decrypt an image",
    "inspect": "show a file's header (no key needed)",
    "rewrap": "add or remove key slots; the payload is authenticated and copied unchanged",
    "keys": "manage key-encryption keys",
    "reconcile": "remove the consumers of deleted images, and the per-image keys they leave "
                 "(for cron)",
    "upload": "create a Glance image from IMAGE_FILE, encrypted on the way",
    "download": "decrypt a Glance image into OUTPUT",
}
"""Each command's line in the program's help, in the order shown."""


class _Parents:
    """The option groups commands share, each built when a command first asks for it."""

    @cached_property
    def common(self) -> argparse.ArgumentParser:
        """The key-manager options."""
        common = argparse.ArgumentParser(add_help=False)
        add_options(common)
        return common

    @cached_property
    def out(self) -> argparse.ArgumentParser:
        """``--force``, for commands that write OUTPUT."""
        out = argparse.ArgumentParser(add_help=False)
        out.add_argument("-f", "--force", action="store_true",
                         help="replace an existing regular-file OUTPUT whole (through a "
                              "symlink: the file it leads to; the symlink stays), write in "
                              "place to a device other than /dev/null, and write ciphertext to "
                              "a terminal")
        return out

    @cached_property
    def par(self) -> argparse.ArgumentParser:
        """``--threads``."""
        par = argparse.ArgumentParser(add_help=False)
        add_threads(par)
        return par

    @cached_property
    def glance(self) -> argparse.ArgumentParser:
        """The key-manager options defaulting to Barbican, and ``--glance-url``."""
        glance = argparse.ArgumentParser(add_help=False)
        add_options(glance, default="barbican")  # the image is in the cloud: its keys too
        glance.add_argument("--glance-url", metavar="URL",
                            default=os.environ.get("IMG_CRYPT_GLANCE_URL"),
                            help="talk to this Glance without Keystone, as --project-id "
                                 "(default: $IMG_CRYPT_GLANCE_URL, else the image endpoint of "
                                 "the cloud)")
        return glance


def build(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``img-crypt`` parser; each command's ``func`` is a :data:`COMMANDS` name.

    With ``argv``, only the command it names (its first word not starting with ``-``) gets its
    arguments, which is all ``parse_args(argv)`` and any help it prints need; without, all do.
    """
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    parser = argparse.ArgumentParser(prog=PROG, description="Envelope encryption of disk "
                                     "images: streaming Cobblestone-256 payloads under keys "
                                     "from a key manager. '-' is stdin/stdout.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="log every step at DEBUG level on stderr, HTTP requests to the key "
                             "manager included, and show the traceback of a failure (key "
                             "material is never logged)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = _Parents()
    for name, add in _ADD.items():
        if wanted in (None, name):
            add(sub, parents)
        else:
            sub.add_parser(name, help=HELP[name])
    return parser


def _add_encrypt(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("encrypt", parents=[parents.common, parents.out, parents.par],
                       help=HELP["encrypt"])
    p.add_argument("input", metavar="INPUT")
    p.add_argument("output", metavar="OUTPUT", type=output_path)
    p.add_argument("--kek", action="append", default=[], metavar="ID",
                   help="wrap the data key under this KEK (repeatable); default: a new key")
    p.add_argument("--image-id", type=image_id, metavar="UUID",
                   help="bind the file to this image id and register the image as a consumer "
                        "of its keys")
    p.add_argument("--format", choices=("img-crypt", "luks"), default="img-crypt",
                   help="img-crypt (default), or a raw LUKS1 image (aes-xts-plain64) whose "
                        "passphrase is the hex of one KEK, as Cinder and Nova open it")
    p.set_defaults(func="encrypt")


def _add_decrypt(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("decrypt", parents=[parents.common, parents.out, parents.par],
                       help=HELP["decrypt"])
    p.add_argument("input", metavar="INPUT")
    p.add_argument("output", metavar="OUTPUT", type=output_path)
    p.add_argument("--image-id", type=image_id, metavar="UUID",
                   help="require the file to be bound to this image id")
    p.add_argument("--range", type=byte_range, metavar="START:END",
                   help="decrypt only plaintext bytes [START, END) (seekable INPUT only)")
    p.add_argument("--kek", metavar="ID",
                   help="LUKS1 INPUT only (required): the KEK whose hex is the passphrase")
    p.add_argument("--size", type=plaintext_size, metavar="N",
                   help="LUKS1 INPUT only: the plaintext size (os_decrypt_size); without it "
                        "the output is padded with zeros to a multiple of 512 bytes")
    p.set_defaults(func="decrypt")


def _add_inspect(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("inspect", help=HELP["inspect"])
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func="inspect")


def _add_rewrap(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("rewrap", parents=[parents.common, parents.out], help=HELP["rewrap"])
    p.add_argument("input", metavar="INPUT")
    p.add_argument("output", metavar="OUTPUT", type=output_path)
    p.add_argument("--add-kek", action="append", default=[], metavar="ID",
                   help="wrap the data key under this KEK too (repeatable); a file bound to an "
                        "image registers the image as its consumer before OUTPUT is published")
    p.add_argument("--remove-kek", action="append", default=[], metavar="ID",
                   help="drop this KEK's key slot (repeatable); the image stops being its "
                        "consumer once OUTPUT is published")
    p.add_argument("--header-only", action="store_true",
                   help="authenticate only the header and copy the payload unchecked (fast); "
                        "by default every payload chunk is authenticated before OUTPUT is "
                        "published, so a corrupt or tampered file is never rewrapped")
    p.set_defaults(func="rewrap")


def _add_upload(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("upload", parents=[parents.glance], help=HELP["upload"])
    p.add_argument("input", metavar="IMAGE_FILE")
    p.add_argument("--name", required=True, help="the image's name")
    p.add_argument("--disk-format", default="raw", metavar="FORMAT",
                   help="disk_format of the plaintext (default: raw)")
    p.add_argument("--container-format", default="bare", metavar="FORMAT",
                   help="container format of the plaintext, kept in "
                        "os_decrypt_container_format (default: bare); the image's own is "
                        "'encrypted'")
    p.add_argument("--kek", metavar="ID",
                   help="use this KEK (kept when the image is deleted); default: a new key "
                        "for the image, img-crypt-image-<id>, deleted with it")
    p.add_argument("--format", choices=("img-crypt-v1", "luks"), default="img-crypt-v1",
                   help="img-crypt-v1 (default: authenticated, container_format encrypted), "
                        "or a raw LUKS1 image (os_encrypt_format LUKSv1, disk_format raw, "
                        "container_format bare) that Cinder and Nova open with the KEK's hex")
    p.set_defaults(func="upload")


def _add_download(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("download", parents=[parents.glance, parents.out], help=HELP["download"])
    p.add_argument("image_id", type=image_id, metavar="IMAGE_ID")
    p.add_argument("output", metavar="OUTPUT", type=output_path)
    p.add_argument("--kek", metavar="ID",
                   help="LUKS1 images only: the KEK whose hex is the passphrase (default: "
                        "the image's os_encrypt_key_id)")
    p.set_defaults(func="download")


def _add_keys(sub: Sub, parents: _Parents) -> None:
    common = parents.common
    keys = sub.add_parser("keys", help=HELP["keys"])
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = ksub.add_parser("create", parents=[common], help="create a new KEK")
    p.add_argument("--name", help="a label stored with the key")
    p.set_defaults(func="keys_create")
    p = ksub.add_parser("list", parents=[common], help="list KEKs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func="keys_list")
    p = ksub.add_parser("delete", parents=[common], help="delete a KEK")
    p.add_argument("key_id", metavar="ID")
    p.add_argument("--force", action="store_true", help="delete even if consumers remain")
    p.set_defaults(func="keys_delete")
    p = ksub.add_parser("consumers", parents=[common], help="list the consumers of a KEK")
    p.add_argument("key_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func="keys_consumers")


def _add_reconcile(sub: Sub, parents: _Parents) -> None:
    p = sub.add_parser("reconcile", parents=[parents.common], help=HELP["reconcile"])
    p.add_argument("--glance-url", metavar="URL", default=os.environ.get("IMG_CRYPT_GLANCE_URL"),
                   help="talk to this Glance without Keystone, as --project-id (default: "
                        "$IMG_CRYPT_GLANCE_URL, else the image endpoint of the cloud)")
    p.add_argument("--dry-run", action="store_true", help="report what would be done; "
                   "change nothing")
    p.add_argument("--grace-period", type=grace_period, default=DEFAULT_GRACE,
                   metavar="DURATION",
                   help="leave consumers and per-image keys younger than this (e.g. 7d, 36h, "
                        "90m; default 7d): their image may not exist yet, as when a client "
                        "encrypts with --image-id before it creates the image")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func="reconcile")


_ADD: dict[str, Callable[[Sub, _Parents], None]] = {
    "encrypt": _add_encrypt, "decrypt": _add_decrypt, "inspect": _add_inspect,
    "rewrap": _add_rewrap, "keys": _add_keys, "reconcile": _add_reconcile,
    "upload": _add_upload, "download": _add_download,
}
"""Each command (in :data:`HELP`'s order) -> the function adding its sub-parser in full."""

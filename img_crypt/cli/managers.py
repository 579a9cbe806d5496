"""Choosing key managers from the command line, and resolving key slots through them."""

from __future__ import annotations

import argparse
import os
from functools import cache
from typing import TYPE_CHECKING

from img_crypt.errors import KeyNotFoundError

if TYPE_CHECKING:  # the parser imports this module: it must not import the stores
    from img_crypt.envelope import KekLookup
    from img_crypt.keys.base import KeyManager
    from img_crypt.keys.local import LocalKeyStore


def add_options(parser: argparse.ArgumentParser, *, default: str = "local") -> None:
    """Key-manager options shared by every subcommand that touches keys.

    ``default`` is the --key-manager when neither it nor $IMG_CRYPT_KEY_MANAGER is given.
    """
    env = os.environ.get
    group = parser.add_argument_group("key manager")
    group.add_argument("--key-manager", choices=("local", "barbican"),
                       default=env("IMG_CRYPT_KEY_MANAGER", default),
                       help=f"where new and named KEKs live (default: {default}, or "
                            f"$IMG_CRYPT_KEY_MANAGER)")
    group.add_argument("--key-store", metavar="DIR",
                       help="local key store directory (default: $IMG_CRYPT_KEY_STORE, "
                            "else the XDG data directory)")
    group.add_argument("--os-cloud", metavar="NAME", default=env("OS_CLOUD"),
                       help="clouds.yaml entry for Barbican (default: $OS_CLOUD, else OS_* "
                            "variables)")
    group.add_argument("--barbican-url", metavar="URL", default=env("IMG_CRYPT_BARBICAN_URL"),
                       help="talk to this Barbican without Keystone (development setups)")
    group.add_argument("--project-id", metavar="ID", default=env("OS_PROJECT_ID"),
                       help="project for --barbican-url (default: $OS_PROJECT_ID)")
    group.add_argument("--consumer-service", metavar="NAME", default="image",
                       help="service name in consumer records (default: image)")
    group.add_argument("--consumers", choices=("required", "best_effort"), default="required",
                       help="on a Barbican without the consumer API: fail (required) or warn "
                            "and go on (best_effort)")


class Managers:
    """The key managers a command may use: the local store always, Barbican when configured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @cache  # noqa: B019 - one Managers per command run
    def local(self) -> LocalKeyStore:
        """The local key store."""
        from img_crypt.keys.local import LocalKeyStore

        return LocalKeyStore(self.args.key_store)

    @cache  # noqa: B019 - one Managers per command run
    def barbican(self) -> KeyManager:
        """The Barbican key manager (imports OpenStack libraries on first use)."""
        from img_crypt.keys.connect import connect

        a = self.args
        return connect(url=a.barbican_url, project_id=a.project_id, cloud=a.os_cloud,
                       service=a.consumer_service, consumers=a.consumers)

    def selected(self) -> KeyManager:
        """The manager named by --key-manager."""
        return self.barbican() if self.args.key_manager == "barbican" else self.local()

    def _by_kind(self, kind: str) -> KeyManager | None:
        if kind == "local":
            return self.local()
        if kind == "barbican" and (self.args.key_manager == "barbican" or
                                   self.args.barbican_url or self.args.os_cloud):
            return self.barbican()
        return None

    def lookup(self) -> KekLookup:
        """Resolve a slot's (kind, key id) through the manager of that kind, if configured.

        Every failure (not configured, not found, forbidden, unreachable) is raised as a
        KeyManagerError: the envelope records it as that slot's reason and tries the next.
        """
        def find(kind: str, key_id: str) -> bytes:
            manager = self._by_kind(kind)
            if manager is None:
                raise KeyNotFoundError(f"no {kind} key manager configured" + (
                    " (--barbican-url or --os-cloud)" if kind == "barbican" else ""))
            return manager.get_key(key_id)
        return find

"""Per-era behaviour of the mocked Barbican (docs: shared notes, openstack.md section 2).

| era    | consumer routes | version document            | delete with consumers     |
|--------|-----------------|-----------------------------|---------------------------|
| train  | 404             | old "stable", header ignored | 204, consumers go with it |
| yoga   | work            | old "stable", header ignored | 204                       |
| zed    | work            | microversioned, max 1.1      | 204                       |
| 2026.2 | work            | microversioned, max 1.2      | 400 at 1.2 unless force   |
"""

from __future__ import annotations

from dataclasses import dataclass

ERAS: tuple[str, ...] = ("train", "yoga", "zed", "2026.2")

Version = tuple[int, int]


@dataclass(frozen=True)
class Era:
    """What differs between Barbican releases, as far as the mock cares."""

    name: str
    build: str
    max_microversion: Version | None
    """None: no microversion middleware (header ignored, never echoed)."""
    consumer_routes: bool
    consumer_reply_consumers: bool
    """Consumer POST/DELETE replies carry the "consumers" key (Zed on)."""
    consumer_reply_content_types: bool
    """Consumer POST/DELETE replies carry "content_types" (Barbican 16.0 on)."""
    consumer_unique_resource_id: bool
    """Ussuri to Yoga: consumers are unique per (secret, resource_id) only, so a second
    POST with another service is a no-op and DELETE matches on resource_id alone."""
    version_updated: str | None
    """The "updated" field of the old version document (gone since Zed)."""
    secret_not_found: str
    order_not_found: str

    @property
    def microversioned(self) -> bool:
        """True when the era parses and echoes OpenStack-API-Version."""
        return self.max_microversion is not None

    @property
    def versions(self) -> list[Version]:
        """All microversions this era accepts, oldest first."""
        top = self.max_microversion or (1, 0)
        return [(1, minor) for minor in range(top[1] + 1)]


_OLD_UPDATED = "2015-04-28T00:00:00Z"
_CASTLE_SECRET = "Not Found. Sorry but your secret is in another castle."
_CASTLE_ORDER = "Not Found. Sorry but your order is in another castle."

ERA_TABLE: dict[str, Era] = {
    "train": Era("train", "9.0.0", None, False, False, False, False, _OLD_UPDATED,
                 _CASTLE_SECRET, _CASTLE_ORDER),
    "yoga": Era("yoga", "14.0.0", None, True, False, False, True, _OLD_UPDATED,
                "Secret not found.", "Order not found."),
    "zed": Era("zed", "15.0.0", (1, 1), True, True, False, False, None,
               "Secret not found.", "Order not found."),
    "2026.2": Era("2026.2", "23.0.0", (1, 2), True, True, True, False, None,
                  "Secret not found.", "Order not found."),
}


def get_era(name: str) -> Era:
    """Return the behaviour table of era *name* (one of ERAS)."""
    try:
        return ERA_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown era {name!r}; choose one of {', '.join(ERAS)}") from None

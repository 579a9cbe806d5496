"""The argparse ``type=`` validators of the command line, light enough for every start-up.

The parser imports this module whatever the command (``--version`` and ``--help`` too), so it
imports nothing of the stream layer, the key stores or cryptography; a validator that needs a
heavier module imports it when it runs.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uuid
    from datetime import timedelta

STDOUT_NAMES = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
"""OUTPUT names that mean standard output."""

DEFAULT_GRACE = "7d"
"""``--grace-period``'s default as typed (argparse parses it): ``retention.DEFAULT_GRACE``."""


def output_path(text: str) -> str:
    """The argparse type of OUTPUT: every name of standard output becomes ``-``."""
    return "-" if text in STDOUT_NAMES else text


def image_id(text: str) -> uuid.UUID:
    """Parse a UUID argument."""
    import uuid

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


def grace_period(text: str) -> timedelta:
    """Parse a duration such as ``7d``, ``36h``, ``90m`` or ``0`` (for ``--grace-period``)."""
    from datetime import timedelta

    found = re.fullmatch(r"\s*(\d{1,6})\s*([dhms]?)\s*", text)
    if found is None or (not found[2] and found[1] != "0"):
        raise argparse.ArgumentTypeError(f"not a duration like 7d, 36h or 90m: {text!r}")
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "": "seconds"}[found[2]]
    return timedelta(**{unit: int(found[1])})

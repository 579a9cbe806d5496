"""Terminal-safe text for the CLI (the rule lives in :mod:`img_crypt._text`)."""

from __future__ import annotations

from img_crypt._text import printable

__all__ = ["printable"]

r"""Terminal-safe text: what a hostile file or server puts in a message must not drive a terminal.

Key ids come from file headers, secret names and error descriptions from Barbican. FORMAT.md
bans control characters (C0, DEL, C1) in key ids, but other characters a terminal or a
line-splitting reader acts on remain valid UTF-8: line and paragraph separators (U+2028,
U+2029) and bidirectional overrides (U+202E ...). Everything Python does not consider
printable is shown as a ``\uXXXX`` escape instead. It imports nothing of the CLI, so the
stream layer escapes key ids with it too.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character (spaces excepted) as a Python escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)

"""The Glance configuration block of README.md, as operators paste it and as the tests use it.

:func:`glance_block` extracts the ``ini`` block following the heading
"## Glance: encrypt every imported image"; :func:`inline_comments` finds values that carry a
``# comment`` (oslo.config keeps it as part of the value); :func:`operator_conf` puts a test
cloud's addresses and password in place of the README's placeholders, so the real-auth Glance
runs exactly what the README tells operators.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Glance: encrypt every imported image"

BARBICAN_PLACEHOLDER = "https://barbican.example.com:9311"
KEYSTONE_PLACEHOLDER = "https://keystone.example.com/v3"
AUTH_SECTION = "[image_encryption_auth]"


def glance_block(readme: Path = README) -> str:
    """The text of the first ```ini block after :data:`HEADING` (AssertionError if absent)."""
    text = readme.read_text()
    start = text.find(HEADING)
    assert start >= 0, f"README.md has no heading {HEADING!r}"
    match = re.compile(r"^```ini\n(.*?)^```", re.M | re.S).search(text, start)
    assert match is not None, f"README.md has no ```ini block after {HEADING!r}"
    return match.group(1)


def inline_comments(block: str) -> list[str]:
    """The lines of ``block`` where a ``#`` follows a value or a section header.

    oslo.config's parser keeps everything after ``=`` as the value, so
    ``image_import_plugins = ['image_encryption']  # ...`` is not the list it looks like.
    """
    found = []
    for line in block.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            rest = stripped[stripped.find("]") + 1:]
        else:
            rest = stripped.partition("=")[2] if "=" in stripped else stripped.partition(":")[2]
        if "#" in rest:
            found.append(line)
    return found


def operator_conf(block: str, *, barbican_url: str, keystone_url: str,
                  glance_password: str) -> str:
    """``block`` with the test cloud in place of the placeholders; each must be there once
    or more (AssertionError otherwise, so the README and the tests cannot drift apart)."""
    for placeholder in (BARBICAN_PLACEHOLDER, KEYSTONE_PLACEHOLDER, AUTH_SECTION):
        assert placeholder in block, f"the README's Glance block lost {placeholder!r}"
    text = block.replace(BARBICAN_PLACEHOLDER, barbican_url)
    text = text.replace(KEYSTONE_PLACEHOLDER, keystone_url)
    head, _, auth = text.partition(AUTH_SECTION)
    auth, count = re.subn(r"^password = .*$", f"password = {glance_password}", auth, flags=re.M)
    assert count == 1, "the README's [image_encryption_auth] needs one password line"
    return head + AUTH_SECTION + auth

"""specs/THREAT_MODEL.md links every promise to tests that exist (issue 6: "the threat model
links each promise to its test").

Every promise row (``| C1 |``, ``| I3 |``, ``| K2 |`` ...) must name at least one test file,
every named file must exist, every ``file::name`` must be a test function defined in that
file, and every attacker of section 2 must be the subject of at least one promise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "specs" / "THREAT_MODEL.md").read_text()
ROW = re.compile(r"^\| ([CIK]\d+) \| (.+) \| (.+) \| (.+) \|$", re.MULTILINE)
REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
PROMISES = {m.group(1): m.groups()[1:] for m in ROW.finditer(TEXT)}


def test_the_promises_are_found() -> None:
    assert {"C1", "C4", "I1", "I2", "I5", "K1", "K2", "K3", "K4"} <= set(PROMISES)


@pytest.mark.parametrize("promise", sorted(PROMISES))
def test_each_promise_names_existing_tests(promise: str) -> None:
    refs = REF.findall(PROMISES[promise][2])
    assert refs, f"{promise} names no test"
    for path, name in refs:
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{path}::{name}"


def test_every_attacker_is_covered() -> None:
    attackers = set(re.findall(r"^\| (A\d) \|", TEXT, re.MULTILINE))
    assert attackers == {f"A{n}" for n in range(1, 7)}
    covered = {a for _, against, _ in PROMISES.values() for a in re.findall(r"A\d", against)}
    assert covered == attackers

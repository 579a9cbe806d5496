"""Fault injection: 503s, dropped connections, latency, failing consumer calls."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


@dataclass
class Trigger:
    """Change the faults when a matching request arrives: faults that start mid-operation.

    ``Trigger("POST", r"/consumers/?$", {"error_burst": 4})``: the first consumer POST, and
    whatever follows it, meets the new faults (the request that fires the trigger too).
    ``method`` "" matches every method; ``path`` is a regular expression searched in the path
    (query excluded); ``after`` matching requests pass unchanged before it fires, once.
    """

    method: str
    path: str
    change: dict[str, Any]
    after: int = 0
    seen: int = 0
    fired: bool = False

    def __post_init__(self) -> None:
        known = {f.name for f in fields(Faults)} - {"triggers"}
        unknown = set(self.change) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")


@dataclass
class Faults:
    """Faults applied to every request; mutable while the server runs.

    ``error_rate`` and ``drop_rate`` draw from a sequence that depends only on
    ``seed`` and the request number, so a run is reproducible.
    """

    error_rate: float = 0.0
    """Fraction of requests answered 503."""
    error_burst: int = 0
    """The next N requests answer 503 (counts down)."""
    latency: float = 0.0
    """Seconds slept before answering (or dropping)."""
    drop_rate: float = 0.0
    """Fraction of requests whose connection is closed without a response."""
    drop_next: int = 0
    """The next N requests are dropped (counts down)."""
    lose_next: int = 0
    """The next N requests are served (the state changes) but their connection is closed
    without the response, as when a proxy or the network fails after the commit (counts
    down)."""
    latency_burst: int = 0
    """If > 0, only the next N requests sleep ``latency`` (counts down); the last resets
    ``latency`` to 0."""
    consumers_fail: int | None = None
    """If set, every consumer POST/DELETE answers this HTTP status."""
    seed: int = 0
    triggers: list[Trigger] = field(default_factory=list)
    """Fault changes applied when matching requests arrive (see :class:`Trigger`)."""


class Verdict(Enum):
    """What to do with one request."""

    SERVE = "serve"
    ERROR = "error"
    DROP = "drop"
    LOSE = "lose"
    """Serve, then close the connection without sending the response."""


_lock = threading.Lock()


def fire_triggers(faults: Faults, method: str, path: str) -> None:
    """Apply the triggers this request fires, before its fate is decided."""
    path = path.split("?", 1)[0]
    with _lock:
        for trigger in faults.triggers:
            if trigger.fired or trigger.method not in ("", method) \
                    or not re.search(trigger.path, path):
                continue
            trigger.seen += 1
            if trigger.seen > trigger.after:
                trigger.fired = True
                for name, value in trigger.change.items():
                    setattr(faults, name, value)


def delay(faults: Faults) -> float:
    """Seconds to sleep before answering this request, consuming ``latency_burst``."""
    with _lock:
        latency = faults.latency
        if faults.latency_burst > 0:
            faults.latency_burst -= 1
            if faults.latency_burst == 0:
                faults.latency = 0.0
        return latency


def decide(faults: Faults, number: int) -> Verdict:
    """Pick the fate of request *number* (0-based), consuming burst counters."""
    with _lock:
        if faults.drop_next > 0:
            faults.drop_next -= 1
            return Verdict.DROP
        if faults.error_burst > 0:
            faults.error_burst -= 1
            return Verdict.ERROR
        if faults.lose_next > 0:
            faults.lose_next -= 1
            return Verdict.LOSE
    draw = random.Random(f"{faults.seed}:{number}")
    drop, error = draw.random(), draw.random()
    if drop < faults.drop_rate:
        return Verdict.DROP
    if error < faults.error_rate:
        return Verdict.ERROR
    return Verdict.SERVE

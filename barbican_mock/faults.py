"""Fault injection: 503s, dropped connections, latency, failing consumer calls."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from enum import Enum


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
    consumers_fail: int | None = None
    """If set, every consumer POST/DELETE answers this HTTP status."""
    seed: int = 0


class Verdict(Enum):
    """What to do with one request."""

    SERVE = "serve"
    ERROR = "error"
    DROP = "drop"


_lock = threading.Lock()


def decide(faults: Faults, number: int) -> Verdict:
    """Pick the fate of request *number* (0-based), consuming burst counters."""
    with _lock:
        if faults.drop_next > 0:
            faults.drop_next -= 1
            return Verdict.DROP
        if faults.error_burst > 0:
            faults.error_burst -= 1
            return Verdict.ERROR
    draw = random.Random(f"{faults.seed}:{number}")
    drop, error = draw.random(), draw.random()
    if drop < faults.drop_rate:
        return Verdict.DROP
    if error < faults.error_rate:
        return Verdict.ERROR
    return Verdict.SERVE

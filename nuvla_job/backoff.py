"""Exponential back-off: the one formula behind every wait that grows with failures."""

from __future__ import annotations

import random


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """The wait after ``failures`` failures in a row: base, 2 base, 4 base, ... at most cap.

    ``failures`` of 0 or 1 both give ``base``; the exponent is bounded so that a long run of
    failures cannot overflow a float.
    """
    return min(cap, base * 2 ** min(max(0, failures - 1), 64))


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """``delay`` with "equal jitter": between half of it and all of it.

    Many waiters that failed together (a job API outage ends for every executor at once)
    then come back spread out instead of in one burst, and none waits longer than planned.
    """
    return delay / 2 + (rng or random).random() * delay / 2


def jittered_backoff(
    failures: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """:func:`backoff_delay` with :func:`jittered` applied."""
    return jittered(backoff_delay(failures, base, cap), rng)

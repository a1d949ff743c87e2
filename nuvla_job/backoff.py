"""Exponential back-off: the one formula behind every wait that grows with failures."""

from __future__ import annotations


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """The wait after ``failures`` failures in a row: base, 2 base, 4 base, ... at most cap.

    ``failures`` of 0 or 1 both give ``base``; the exponent is bounded so that a long run of
    failures cannot overflow a float.
    """
    return min(cap, base * 2 ** min(max(0, failures - 1), 64))

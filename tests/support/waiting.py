"""Waiting for a condition in tests: poll with a deadline instead of sleeping blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = 15.0,
    pause: Callable[[float], Any] = time.sleep,
    interval: float = 0.05,
) -> Any:
    """Poll until `predicate()` is truthy and return its value; AssertionError on timeout.

    `pause` is `gevent.sleep` where the test drives a gevent-handler client in-process.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause(interval)

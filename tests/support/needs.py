"""What a test needs of the machine: skipped where it is missing, a failure under CI.

CI (``CI`` set, as `.ci/run` does) installs everything the suite needs (the Makefile's
TEST_NEEDS), so a need it does not meet is a lost install step: it must fail, not hide
as a skip.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require(condition: object, reason: str) -> None:
    """Skip the test with ``reason`` unless ``condition`` holds; under CI, fail instead."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI installs it: see .ci/run and the Makefile's TEST_NEEDS)")
    pytest.skip(reason)

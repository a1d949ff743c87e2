"""The fault-injection suite's settings and its table (see docs/reliability.md).

Two modes:
- full (`make faults`, i.e. `pytest tests/faults -m faults`, or FAULTS_FULL=1): all seven
  scenarios, FAULTS_JOBS jobs each (default 1,000); the table goes to build/faults/table.md,
  and into docs/reliability.md only when asked (FAULTS_PUBLISH=1);
- quick (any other run, e.g. `make test` in CI): only the scenarios marked `faults_ci`,
  with 200 jobs each (the others are deselected, not skipped); the table is printed only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.faults.report import Row, table, write_table

FULL_JOBS = 1000
QUICK_JOBS = 200
# A full scenario (1,000 jobs, a fault of up to 30 s, then the drain) takes one to three
# minutes here; the suite's default per-test timeout (setup.cfg) is for the quick subset.
FULL_TIMEOUT = 900
_ROWS = pytest.StashKey[list[Row]]()


@dataclass(frozen=True)
class FaultSettings:
    full: bool
    jobs: int


def _full(config: pytest.Config) -> bool:
    return (
        os.environ.get("FAULTS_FULL") == "1"
        or (config.getoption("markexpr", "") or "").strip() == "faults"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection scenario (tests/faults)")
    config.addinivalue_line("markers", "faults_ci: fault scenario of the quick CI subset")
    config.stash[_ROWS] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _full(config):
        for item in items:
            if item.get_closest_marker("faults"):
                item.add_marker(pytest.mark.timeout(FULL_TIMEOUT))
        return
    # Deselected, not skipped: a skip in CI means a test that should have run did not.
    full_only = [
        item
        for item in items
        if item.get_closest_marker("faults") and not item.get_closest_marker("faults_ci")
    ]
    if full_only:
        config.hook.pytest_deselected(items=full_only)
        items[:] = [item for item in items if item not in full_only]


@pytest.fixture(scope="session")
def fault_settings(pytestconfig: pytest.Config) -> FaultSettings:
    full = _full(pytestconfig)
    jobs = int(os.environ.get("FAULTS_JOBS", FULL_JOBS if full else QUICK_JOBS))
    return FaultSettings(full, jobs)


@pytest.fixture(scope="session")
def fault_rows(pytestconfig: pytest.Config) -> list[Row]:
    """Scenarios append their row here; the table is reported at the end of the session."""
    return pytestconfig.stash[_ROWS]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("fault-injection table")
    terminalreporter.write_line(table(rows))
    if _full(config):
        publish = os.environ.get("FAULTS_PUBLISH") == "1"
        written = write_table(rows, publish=publish)
        terminalreporter.write_line(f"(written to {', '.join(map(str, written))})")

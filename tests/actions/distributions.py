"""Distributions the distributor tests run (loaded with `--actions-path tests/actions`).

`crashy` counts its calls in the file named by CRASHY_COUNTER and raises on the first
CRASHY_FAILURES (default 3) of them; without CRASHY_COUNTER it yields nothing.
"""

import os
from pathlib import Path

from nuvla_job.registry import distribute, distribution

# The one-line form: one test_ok job every second.
distribute("test_ok", 1, priority=50)


@distribution("tick", interval=1)
def tick(api):
    yield {"action": "test_ok"}


@distribution("multi", interval=1)
def multi(api):
    for index in range(3):
        yield {"action": "test_ok", "tags": [f"multi:{index}"]}


@distribution("partly_bad", interval=1)
def partly_bad(api):
    """The job API refuses the middle body (an unknown attribute): 2 created, 1 failed."""
    yield {"action": "test_ok"}
    yield {"action": "test_ok", "no-such-attribute": True}
    yield {"action": "test_ok"}


@distribution("crashy", interval=1)
def crashy(api):
    counter = os.environ.get("CRASHY_COUNTER")
    if not counter:
        return
    path = Path(counter)
    calls = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= int(os.environ.get("CRASHY_FAILURES", "3")):
        raise RuntimeError(f"crashy fails on purpose (call {calls})")
    yield {"action": "test_ok"}

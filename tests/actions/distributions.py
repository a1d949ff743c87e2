"""Distributions the distributor tests run (loaded with `--actions-path tests/actions`).

`keyed` (with KEYED_TARGET) yields one pull job for that target twice per tick, under the
unique key action:target, so that only one is ever unfinished. `crashy` counts its calls in
the file named by CRASHY_COUNTER and raises on the first CRASHY_FAILURES (default 3) of
them; without CRASHY_COUNTER it yields nothing. `recorded`, `odd_yields` and `gated_tick`
serve the tick tests (tests/integration/test_distributor_ticks.py).
"""

import os
import time
from pathlib import Path

from nuvla_job.registry import action_and_target, distribute, distribution

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


@distribution("recorded", interval=1)
def recorded(api):
    """Appends the time of each call to the file RECORDED_LOG, sleeps RECORDED_SECONDS (a
    tick that outlasts its interval), then yields one job; without RECORDED_LOG, nothing."""
    path = os.environ.get("RECORDED_LOG")
    if not path:
        return
    with open(path, "a") as handle:
        handle.write(f"{time.time()}\n")
    time.sleep(float(os.environ.get("RECORDED_SECONDS", "0")))
    yield {"action": "test_ok"}


@distribution("odd_yields", interval=1)
def odd_yields(api):
    """Yields things that are not job bodies between two that are (with ODD_YIELDS=1)."""
    if not os.environ.get("ODD_YIELDS"):
        return
    yield {"action": "test_ok", "tags": ["odd:first"]}
    yield "not a job body"
    yield None
    yield ["action", "test_ok"]
    yield {"action": "test_ok", "tags": ["odd:last"]}


@distribution("gated_tick", interval=1)
def gated_tick(api):
    """Call N yields a job tagged gated:N:first, waits until the file GATED_TICK_GATE exists,
    then yields gated:N:second; without GATED_TICK_GATE, nothing. N counts the calls in
    GATED_TICK_GATE + ".calls"."""
    gate = os.environ.get("GATED_TICK_GATE")
    if not gate:
        return
    counter = Path(gate + ".calls")
    call = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(call))
    yield {"action": "test_ok", "tags": [f"gated:{call}:first"]}
    while not os.path.exists(gate):
        time.sleep(0.02)
    yield {"action": "test_ok", "tags": [f"gated:{call}:second"]}


@distribution("keyed", interval=1, unique_key=action_and_target)
def keyed(api):
    target = os.environ.get("KEYED_TARGET")
    if not target:
        return
    for _ in range(2):
        yield {"action": "test_ok", "execution-mode": "pull", "target-resource": {"href": target}}

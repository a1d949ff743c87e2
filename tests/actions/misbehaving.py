"""Actions that misbehave (loaded by tests/integration/test_executor_bad_input.py)."""

import ast
import time

from nuvla_job.registry import action


class CustomBaseException(BaseException):
    """Neither an Exception nor one of Python's own BaseExceptions."""


@action("test_returns")
class Returns:
    """Returns payload["value"], a Python literal such as "None", "'0'" or "1.5"."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        return ast.literal_eval(self.job.payload["value"])


_RAISES = {
    "SystemExit": lambda: SystemExit(3),
    "SystemExit0": lambda: SystemExit(0),
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "CustomBaseException": lambda: CustomBaseException("not an Exception"),
    "StopIteration": StopIteration,
}


@action("test_raises_base")
class RaisesBase:
    """Raises the BaseException named by payload["kind"]."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        raise _RAISES[self.job.payload["kind"]]()


@action("test_hangs")
class Hangs:
    """Never returns (but waits cooperatively, so a time limit can interrupt it)."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        while True:
            try:
                time.sleep(3600)
            except Exception:  # noqa: S110 - a careless action must still be stoppable
                pass


@action("test_hangs_own_limit", timeout=0.5)
class HangsOwnLimit(Hangs):
    """Hangs too, with its own time limit."""


@action("test_busy_loop")
class BusyLoop:
    """Computes for payload["seconds"] without ever yielding to other greenlets."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        end = time.monotonic() + float(self.job.payload.get("seconds", 2))
        count = 0
        while time.monotonic() < end:
            count += 1
        return 0

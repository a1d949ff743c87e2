"""The hook protocol (nuvla_job/middleware/hooks.py): which hooks run, and in which order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nuvla_job.middleware import Chain, JobRun, Middleware
from nuvla_job.outcome import Outcome


class Tracing(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def after_take(self, run: JobRun) -> None:
        self.calls.append(f"{self.name}.after_take")

    def after_fetch(self, run: JobRun) -> None:
        self.calls.append(f"{self.name}.after_fetch")

    def around_action(self, run: JobRun, call: Callable[[], object]) -> object:
        self.calls.append(f"{self.name}.around:enter")
        result = call()
        self.calls.append(f"{self.name}.around:exit")
        return result

    def after_action(self, run: JobRun, exception: BaseException | None) -> None:
        self.calls.append(f"{self.name}.after_action")

    def after_error(self, run: JobRun, exception: Exception) -> None:
        self.calls.append(f"{self.name}.after_error")

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        self.calls.append(f"{self.name}.after_settle")


def test_before_hooks_in_order_after_hooks_in_reverse_first_around_outermost() -> None:
    calls: list[str] = []
    chain = Chain([Tracing("a", calls), Tracing("b", calls)])
    run = JobRun(None, "job/1")
    chain.after_take(run)
    chain.after_fetch(run)
    assert chain.around_action(run, lambda: calls.append("action") or 7) == 7
    chain.after_action(run, None)
    chain.after_error(run, RuntimeError())
    chain.after_settle(run, Outcome.consume())
    assert calls == [
        "a.after_take",
        "b.after_take",
        "a.after_fetch",
        "b.after_fetch",
        "a.around:enter",
        "b.around:enter",
        "action",
        "b.around:exit",
        "a.around:exit",
        "b.after_action",
        "a.after_action",
        "b.after_error",
        "a.after_error",
        "b.after_settle",
        "a.after_settle",
    ]


def test_a_middleware_defining_no_hook_costs_no_call() -> None:
    chain = Chain([Middleware(), Middleware()])
    assert chain.around_action(JobRun(None, None), lambda: "ran") == "ran"
    for hook in ("after_take", "after_fetch", "around_action", "after_settle"):
        assert getattr(chain, f"_{hook}") == []


def test_an_around_hook_can_replace_what_the_action_raised() -> None:
    class Translating(Middleware):
        def around_action(self, run: JobRun, call: Callable[[], object]) -> object:
            try:
                return call()
            except KeyError as exc:
                raise ValueError("translated") from exc

    def action() -> object:
        raise KeyError("x")

    try:
        Chain([Translating()]).around_action(JobRun(None, "job/1"), action)
    except ValueError as exc:
        assert str(exc) == "translated"
    else:
        raise AssertionError("the around hook's exception did not propagate")


def test_a_failing_after_hook_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    class Broken(Middleware):
        def after_action(self, run: JobRun, exception: BaseException | None) -> None:
            raise RuntimeError("broken middleware")

        def after_error(self, run: JobRun, exception: Exception) -> None:
            raise RuntimeError("broken middleware")

        def after_settle(self, run: JobRun, outcome: Outcome) -> None:
            raise RuntimeError("broken middleware")

    chain = Chain([Tracing("a", calls), Broken()])  # Broken's after hooks run first
    run = JobRun(None, "job/1")
    chain.after_action(run, None)
    chain.after_error(run, ValueError())
    chain.after_settle(run, Outcome.consume())
    assert calls == ["a.after_action", "a.after_error", "a.after_settle"]
    failures = [r for r in caplog.records if "middleware" in r.getMessage()]
    assert len(failures) == 3 and all("Broken.after_" in r.getMessage() for r in failures)
    assert all(r.exc_info for r in failures)

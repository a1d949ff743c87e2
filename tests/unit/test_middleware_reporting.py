"""The log context, Sentry and metrics middleware (nuvla_job/middleware/)."""

from __future__ import annotations

from typing import Any

import gevent

from nuvla_job import metrics, monitoring
from nuvla_job.job import Job
from nuvla_job.middleware import JobRun
from nuvla_job.middleware.log_context import LogContext
from nuvla_job.middleware.metrics import Metrics
from nuvla_job.middleware.sentry import Sentry
from nuvla_job.outcome import Decision, Outcome
from nuvla_job.registry import ActionSpec


def fetched_run(job_id: str = "job/abc", action: str = "act") -> JobRun:
    run = JobRun(None, job_id)
    run.job = Job(None, {"id": job_id, "action": action, "state": "RUNNING"})  # type: ignore[arg-type]
    run.spec = ActionSpec(action, object)
    return run


def test_log_context_names_the_job_once_taken_and_its_action_once_fetched() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def handling() -> None:
        context = LogContext()
        context.after_take(JobRun(None, "job/abc"))
        seen.append(monitoring.current_job_context())
        context.after_fetch(fetched_run())
        seen.append(monitoring.current_job_context())

    gevent.spawn(handling).get()
    assert seen == [("job/abc", None), ("job/abc", "act")]
    assert monitoring.current_job_context() == (None, None)  # this greenlet ran no job


def test_sentry_reports_action_exceptions_and_unexpected_errors_tagged() -> None:
    captured: list[tuple[BaseException, dict[str, Any]]] = []
    sentry = Sentry("exec-1", capture=lambda exc, **tags: captured.append((exc, tags)))
    run = fetched_run()
    boom, error = RuntimeError("boom"), ValueError("bad")
    sentry.after_action(run, None)  # the action returned: nothing to report
    sentry.after_action(run, boom)
    sentry.after_error(run, error)
    assert captured == [
        (boom, {"job_id": "job/abc", "action": "act", "executor": "exec-1"}),
        (error, {"job_id": "job/abc", "executor": "exec-1"}),
    ]


def sample(metric: Any, name: str, **labels: str) -> float:
    for family in metric.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_metrics_count_takes_and_each_outcome_by_action() -> None:
    middleware = Metrics()
    run = fetched_run(action="metrics_probe")
    jobs = "nuvla_job_jobs_processed_total"
    before = {
        "takes": sample(metrics.TAKES, "nuvla_job_queue_takes_total"),
        "lost": sample(metrics.JOBS, jobs, action="metrics_probe", outcome="lost"),
        "success": sample(metrics.JOBS, jobs, action="metrics_probe", outcome="success"),
        "releases": sample(metrics.RELEASES, "nuvla_job_queue_releases_total"),
    }
    middleware.after_take(run)
    middleware.after_settle(run, Outcome.consume("SUCCESS"))
    middleware.after_settle(run, Outcome.lost())
    middleware.after_settle(run, Outcome.release(after=1.0))
    assert sample(metrics.TAKES, "nuvla_job_queue_takes_total") == before["takes"] + 1
    assert sample(metrics.JOBS, jobs, action="metrics_probe", outcome="success") == (
        before["success"] + 1
    )
    assert sample(metrics.JOBS, jobs, action="metrics_probe", outcome="lost") == before["lost"] + 1
    assert sample(metrics.RELEASES, "nuvla_job_queue_releases_total") == before["releases"] + 1
    # Only consumed entries are timed: a release may have waited out its delay.
    count = "nuvla_job_job_duration_seconds_count"
    assert sample(metrics.JOB_DURATION, count, action="metrics_probe") == 1


def test_every_outcome_has_its_label() -> None:
    labels = {
        Outcome.consume("SUCCESS"): "success",
        Outcome.consume("FAILED"): "failed",
        Outcome.consume("QUEUED"): "pull_mode",
        Outcome.consume(): "dropped",
        Outcome.release(): "released",
        Outcome.release(after=3.0): "released",
        Outcome.lost(): "lost",
        Outcome(Decision.CONSUME, "ODD"): "consume_odd",
    }
    assert {outcome: metrics.outcome_label(outcome) for outcome in labels} == labels

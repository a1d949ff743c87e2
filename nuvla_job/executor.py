"""Executor: runs up to N jobs at once, each in its own greenlet, from the ZooKeeper queue.

The take loop (:meth:`Executor.run`) waits for a free slot, takes the next entry and spawns a
greenlet that handles it (:meth:`Executor.handle`). The decision table, engine-behaviour.md's
executor table, turns each entry into one :class:`~nuvla_job.outcome.Outcome`, carried out
on the queue: consume (the entry is done, also when the action left its job RUNNING for a
monitor), release (back to the queue), or nothing when the entry is lost (the session that
took it ended). What else a job goes through (metrics, log context, time limit, Sentry, the
blocked-loop warning) is middleware hooked around it (nuvla_job/middleware/). A job whose
action has a concurrency limit (limits.py) waits for it between its fetch and RUNNING
without occupying a slot: an executor runs up to N jobs and holds at most N more waiting.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

import gevent
import gevent.event
import gevent.pool
from kazoo.protocol.states import KazooState
from nuvla.api import Api

from . import attempts, monitoring
from .backoff import backoff_delay, jittered_backoff
from .fetcher import JobFetcher
from .job import (
    SUPPORTED_VERSION,
    ApiUnavailable,
    CredentialsRefused,
    Job,
    JobConflict,
    JobError,
    JobMalformed,
    JobNotFound,
)
from .limits import LimitLost, Limits
from .middleware import Chain, JobRun, Middleware
from .newer_version import NewerVersionWaits
from .outcome import Decision, Outcome, leaves_running
from .queue import Entry
from .registry import ActionRegistry, ActionSpec
from .states import FINAL_STATES, JOB_QUEUED
from .timeutil import format_time
from .zk import ZkSettings

log = logging.getLogger(__name__)


class JobLost(gevent.GreenletExit):
    """Raised into a job's greenlet when the ZooKeeper session holding its entry ended."""


class JobReleased(gevent.GreenletExit):
    """Raised into a job's greenlet when shutdown's grace period is over."""


class Consumer(Protocol):
    """What the executor needs of the queue: a :class:`~nuvla_job.queue.QueueConsumer`, or
    an in-memory double in unit tests."""

    @property
    def depth(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def take(self, timeout: float | None = None) -> Entry | None: ...

    def consume(self, entry: Entry) -> bool: ...

    def release(self, entry: Entry) -> bool: ...

    def holds(self, entry: Entry) -> bool: ...


# Takes in flight at once: each waits a ZooKeeper round trip, and one at a time would cap
# the executor near a thousand jobs a second on a quiet machine, far less on a busy one.
TAKERS = 4
# How long a job for a newer engine is kept before it goes back to the queue.
NEWER_VERSION_DELAY = 5.0
# Release delays after failed calls to the job API: doubled per failure in a row, up to the cap.
API_RETRY_FIRST, API_RETRY_MAX = 0.5, 30.0
# Waits between attempts to write an action's outcome (jittered): the action has run, so the
# entry is kept and the write retried until it lands; the cap keeps the landing prompt once
# the job API is back.
OUTCOME_RETRY_FIRST, OUTCOME_RETRY_MAX = 0.2, 10.0


class Executor:
    """Takes entries from ``consumer`` and runs their jobs, ``concurrency`` at a time.

    ``consumer`` is None in pull mode (:meth:`run_pull`), which needs no queue. The
    ZooKeeper session behind the consumer reports to :meth:`session_changed`.
    """

    def __init__(
        self,
        api: Api,
        consumer: Consumer | None,
        actions: ActionRegistry,
        *,
        middleware: Iterable[Middleware] = (),
        concurrency: int = 100,
        grace_period: float = 120.0,
        name: str = "executor",
        nuvlaedge_fs: str | None = None,
        zookeeper: ZkSettings | None = None,
        newer_versions: NewerVersionWaits | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.api = api
        self.consumer = consumer
        self.actions = actions
        self.middleware = Chain(middleware)
        self.concurrency = concurrency
        self.grace_period = grace_period
        self.name = name
        self.nuvlaedge_fs = nuvlaedge_fs
        self.zookeeper = zookeeper  # handed to each Job (job.zookeeper)
        # Concurrent fetches share one search on this project's job API (fetcher.py).
        self.fetcher = JobFetcher(
            api, nuvlaedge_fs=nuvlaedge_fs, executor_name=name, zookeeper=zookeeper
        )
        self.limits = limits or Limits()
        # Unbounded: the slots are counted by _busy(), since jobs waiting for a limit are
        # greenlets that hold none.
        self.pool = gevent.pool.Group()
        self._running: dict[gevent.Greenlet, Entry] = {}
        self._waiting: set[gevent.Greenlet] = set()  # waiting for a limit: no slot held
        # Taken but not yet at their limit check: each may still join the waiting set.
        self._undecided: set[gevent.Greenlet] = set()
        self._claims = 0  # jobs that got their limit's place and wait for a slot (first served)
        self._stopping = gevent.event.Event()
        self._slot_freed = gevent.event.Event()
        self._reserved = 0  # slots held by takes in flight
        self._stop_requests = 0
        self._api_failures = 0  # calls to the job API that failed in a row
        self._delaying: set[gevent.Greenlet] = set()  # waiting out a delay before a release
        # Jobs for a newer engine released by this executor: failed past the bounds.
        self.newer_versions = newer_versions or NewerVersionWaits()

    @property
    def queue(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("this executor runs in pull mode: it has no queue")
        return self.consumer

    # -- ZooKeeper session ------------------------------------------------------------------

    def session_changed(self, state: str) -> None:
        """Listener of the consumer's ZooKeeper session (``KazooClient.add_listener``)."""
        if state == KazooState.LOST:
            # Every taken node of the old session is gone and another executor may already
            # run these jobs: stop ours and never write their final state.
            lost = list(self._running)
            if lost:
                log.error("ZooKeeper session lost: stopping %d job(s) held by it", len(lost))
            for greenlet in lost:
                gevent.spawn(greenlet.kill, JobLost, block=False)
        elif state == KazooState.SUSPENDED:
            log.warning("ZooKeeper connection suspended: no new jobs until it is back")
        else:
            log.info("ZooKeeper connected")

    # -- the take loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Take and run jobs until :meth:`stop`; then drain. Returns the exit status."""
        self.queue.start()
        log.info("executor %s running up to %d job(s) at once", self.name, self.concurrency)
        takers = [gevent.spawn(self._take_loop) for _ in range(min(TAKERS, self.concurrency))]
        gevent.joinall(takers, raise_error=True)
        self._drain()
        return 0

    def _take_loop(self) -> None:
        """Reserve a slot, take an entry, start its greenlet; until stopped."""
        while not self._stopping.is_set():
            self._wait_for_slot()
            if self._stopping.is_set():
                break
            self._reserved += 1
            try:
                entry = self.queue.take(timeout=1.0)
            finally:
                self._reserved -= 1
                if self._claims:
                    self._slot_freed.set()  # a job that got its limit's place wants the slot
            if entry is None:
                continue
            if self._stopping.is_set():
                self.queue.release(entry)
                break
            # The slot was reserved: this spawn never waits.
            greenlet = self.pool.spawn(self.handle, entry)
            self._running[greenlet] = entry
            self._undecided.add(greenlet)
            greenlet.link(self._forget)

    def _busy(self) -> int:
        """Slots occupied: by jobs (not those waiting for a limit) and by takes in flight."""
        return len(self.pool) - len(self._waiting) + self._reserved

    def _wait_for_slot(self) -> None:
        """Wait for a slot no job or take occupies and no job that got its limit's place is
        waiting for, with room for one more waiting job; or for a stop request (its grace
        period starts at once)."""
        while (
            self._busy() >= self.concurrency
            or self._claims
            # Takes in flight and jobs not yet at their limit check may each bring one more
            # waiting job: counted, so the bound holds.
            or len(self._waiting) + len(self._undecided) + self._reserved >= self.concurrency
        ) and not self._stopping.is_set():
            self._slot_freed.clear()
            gevent.wait([self._slot_freed, self._stopping], count=1)

    def _forget(self, greenlet: gevent.Greenlet) -> None:
        self._running.pop(greenlet, None)
        self._undecided.discard(greenlet)
        self._slot_freed.set()

    def in_flight(self) -> list[str]:
        """The ids of the jobs running now, not those waiting for a limit (for the executor's
        presence node)."""
        return [
            entry.job_id
            for greenlet, entry in self._running.items()
            if entry.job_id and greenlet not in self._waiting
        ]

    def waiting(self) -> int:
        """Jobs taken and waiting for a concurrency limit."""
        return len(self._waiting)

    def stop(self) -> None:
        """Stop taking jobs; a second call also ends the grace period at once."""
        self._stop_requests += 1
        if self._stop_requests == 1:
            log.info(
                "stopping: no new jobs; %d running may finish within %.0f s",
                len(self._running),
                self.grace_period,
            )
        else:
            log.warning("second stop request: releasing running jobs now")
        self._stopping.set()
        if self.consumer is not None:
            self.consumer.pause()
        # Entries kept only to delay their release, or waiting for a limit, have nothing to
        # finish.
        for greenlet in list(self._delaying | self._waiting):
            greenlet.kill(JobReleased, block=False)
        if self._stop_requests > 1:
            self._release_running()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.stop)

    def _drain(self) -> None:
        if self._running and self._stop_requests < 2:
            log.info("no longer taking: waiting for %d running job(s)", len(self._running))
            self.pool.join(timeout=self.grace_period)
        self._release_running()
        self.pool.join(timeout=10)
        self.queue.stop()
        log.info("executor %s stopped", self.name)

    def _release_running(self) -> None:
        running = list(self._running)
        if running:
            log.warning("releasing %d unfinished job(s) back to the queue", len(running))
        gevent.killall(running, JobReleased, block=True, timeout=10)

    # -- one entry: the decision table ------------------------------------------------------

    def handle(self, entry: Entry) -> Outcome:
        """One taken entry, from its job's fetch to its consume, release or loss."""
        run = JobRun(entry, entry.job_id)  # job_id: None for anything but a job id
        try:
            self.middleware.after_take(run)
            outcome = self._decide(run)
        except JobLost:
            log.warning("%s: abandoned, its queue entry is no longer ours", entry.job_id)
            outcome = Outcome.lost()
        except JobReleased:
            outcome = Outcome.release()
        except Exception as exc:  # nothing a single job does may stop the executor
            log.exception("%s: unexpected error; the entry is consumed", entry.job_id)
            self.middleware.after_error(run, exc)
            outcome = Outcome.consume()
        outcome = self._settle(entry, outcome)
        self.middleware.after_settle(run, outcome)
        return outcome

    def _decide(self, run: JobRun) -> Outcome:
        """The outcome of a taken entry: its job fetched, then run."""
        job_id = run.job_id
        if job_id is None:
            assert run.entry is not None
            data = run.entry.data[:100]
            log.error("queue entry %s holds no job id (%r): dropped", run.entry.name, data)
            return Outcome.consume()
        try:
            job = self._fetch(job_id)
        except JobNotFound:
            log.warning("%s: not found in the job API: entry dropped", job_id)
            return Outcome.consume()
        except JobMalformed as exc:
            log.error("%s: malformed job: %s: entry dropped", job_id, exc)
            return Outcome.consume()
        except ApiUnavailable as exc:
            return self._api_unavailable(job_id, exc)
        self._api_failures = 0
        if job.get("execution-mode") == "pull":
            # The job API queues push and mixed jobs only: a pull job is run by whoever pulls
            # it, with its own rights. An entry holding one was made by someone else (the
            # queue's ACLs are open by default), and running it would lend it ours.
            log.warning(
                "%s: a pull-mode job in queue entry %s: consumed without running it",
                job_id,
                run.entry.name if run.entry else "?",
            )
            return Outcome.consume()
        return self._run_job(run, job)

    def _run_job(self, run: JobRun, job: Job) -> Outcome:
        """Run a fetched job and write its outcome (also the path of pull mode)."""
        run.job, run.spec = job, self.actions.spec(job["action"])
        self.middleware.after_fetch(run)
        job_id, state = job.id, job["state"]
        if state in FINAL_STATES:
            log.info("%s: already %s: entry dropped", job_id, state)
            return Outcome.consume()
        if state == JOB_QUEUED and job.get(attempts.NOT_BEFORE):
            # An entry left over by an executor that died after writing a retry: the job
            # waits in the job store, and the scheduler queues it when it is due.
            log.info(
                "%s: waits until %s for the scheduler: entry dropped",
                job_id,
                job[attempts.NOT_BEFORE],
            )
            return Outcome.consume()
        version = job.get("version", SUPPORTED_VERSION)
        try:
            if version > SUPPORTED_VERSION:
                return self._newer_version(run, job, version)
            if version < SUPPORTED_VERSION:
                return self._fail(
                    job,
                    f"job version {version} is older than the version "
                    f"{SUPPORTED_VERSION} this engine supports",
                )
            if run.spec is None:
                return self._fail(job, f"no action '{job['action']}' is registered in this engine")
            with self._limited(run, run.spec, job.id):
                # The attempt is counted in the same edit: a crash during the action keeps it.
                retried = run.spec.retries > 0
                job.write({"state": "RUNNING", **attempts.start(job, retried)})
                # A process frozen between the take and here would start a job another
                # executor may run already: ask first (free while the take is recent).
                self._check_still_ours(run)
                return self._run_action(run, job, run.spec)
        except ApiUnavailable as exc:
            return self._api_unavailable(job_id, exc)
        except JobConflict as exc:
            log.warning("%s: the job API refused the update (%s): entry dropped", job_id, exc)
            return Outcome.consume()

    @contextlib.contextmanager
    def _limited(self, run: JobRun, spec: ActionSpec, job_id: str) -> Iterator[None]:
        """Hold the action's concurrency limits (limits.py) around the job's run. While it
        waits for them the job holds no slot; once it has them it gets the next free slot
        before any new take does."""
        current = gevent.getcurrent()
        if run.entry is None or not self.limits.applies(spec):
            self._decided(current)
            yield  # pull mode runs one job: no limit to wait for
            return
        self._waiting.add(current)
        self._decided(current)
        try:
            try:
                held = self.limits.acquire(spec, job_id)
            except LimitLost:
                raise JobLost() from None
            try:
                self._claim_slot(current)
            except BaseException:
                held.release()
                raise
        finally:
            self._waiting.discard(current)
        try:
            yield
        finally:
            held.release()

    def _decided(self, current: gevent.Greenlet) -> None:
        """The job is past its limit check: waiting (counted there) or running."""
        self._undecided.discard(current)
        self._slot_freed.set()  # the take loop re-checks its bound on waiting jobs

    def _claim_slot(self, current: gevent.Greenlet) -> None:
        """Wait for a free slot and occupy it (leave the waiting set)."""
        self._claims += 1
        try:
            while self._busy() + 1 > self.concurrency:
                self._slot_freed.clear()
                self._slot_freed.wait()
            self._waiting.discard(current)
        finally:
            self._claims -= 1
            self._slot_freed.set()  # the take loop re-checks: claims may be down to 0

    def _newer_version(self, run: JobRun, job: Job, version: int) -> Outcome:
        """Leave the job for a newer engine, unless it has waited for one too long."""
        if run.entry is None:  # pull mode: nothing to leave it to
            return Outcome.release(after=NEWER_VERSION_DELAY)
        waits = self.newer_versions
        wait = waits.release(job.id)
        if not waits.exceeded(wait):
            log.info(
                "%s: version %s is newer than this engine's %s: left for a newer engine",
                job.id,
                version,
                SUPPORTED_VERSION,
            )
            return Outcome.release(after=NEWER_VERSION_DELAY)
        waits.forget(job.id)
        return self._fail(
            job,
            f"no engine took this job: its version {version} is newer than {SUPPORTED_VERSION}, "
            f"the newest this engine runs, and it went back to the queue {wait.releases - 1} "
            f"time(s) over {waits.seconds(wait):.0f} s without an engine for it taking it",
        )

    def _run_action(self, run: JobRun, job: Job, spec: ActionSpec) -> Outcome:
        """Run the action through the middleware and write what it returned or raised."""
        name = spec.name
        log.debug("%s: running %s", job.id, name)  # its outcome is logged at INFO
        return_code: object = None
        raised: BaseException | None = None
        run.action_ran = True
        try:
            return_code = self.middleware.around_action(run, lambda: spec.cls(job).do_work())
        except gevent.GreenletExit:
            raise  # lost or released: handle() settles it
        except BaseException as exc:  # noqa: B036 - an action's SystemExit must not stop us
            raised = exc
        # A process frozen past its session timeout wakes up here believing it still holds
        # the job, while another executor may run it: check before writing any outcome.
        self._check_still_ours(run)
        if raised is not None and leaves_running(raised):
            # A normal end, not an error: the middleware (Sentry, ...) sees no exception.
            self.middleware.after_action(run, None)
            log.info("%s: %s left the job RUNNING for its monitor", job.id, name)
            return Outcome.left_running()
        self.middleware.after_action(run, raised)
        if raised is not None:
            return self._write_outcome(run, lambda: self._write_exception(run, job, name, raised))
        return self._write_outcome(run, lambda: self._write_return_code(job, name, return_code))

    def _write_outcome(self, run: JobRun, write: Callable[[], Outcome]) -> Outcome:
        """Write what the action ended in; when the job API cannot take it, keep the entry
        and try again, with back-off, while the entry is ours.

        The action has run: releasing the entry would run it again. The retries end when the
        write lands, when the entry is lost (JobLost: the session ended) or when shutdown's
        grace period ends (JobReleased: the entry goes back, as any running job's does).
        """
        failures = 0
        while True:
            try:
                return write()
            except (ApiUnavailable, CredentialsRefused) as exc:
                failures += 1
                delay = jittered_backoff(failures, OUTCOME_RETRY_FIRST, OUTCOME_RETRY_MAX)
                log.warning(
                    "%s: its outcome could not be written (%s): the entry is kept, "
                    "write %d retried in %.1f s",
                    run.job_id,
                    exc,
                    failures + 1,
                    delay,
                )
            gevent.sleep(delay)
            self._check_still_ours(run)

    def _write_exception(self, run: JobRun, job: Job, name: str, exc: BaseException) -> Outcome:
        # The message is stored in the job, readable by its users: no secrets in it.
        message = monitoring.redact(f"{type(exc).__name__}: {exc}")
        if run.retry is not None:
            return self._write_retry(run, job, name, message)
        if job.get("execution-mode") == "mixed":
            log.warning("%s: %s failed; it will re-run in pull mode", job.id, name)
            job.update_job(
                state="QUEUED",
                execution_mode="pull",
                status_message=f"{message}\n"
                f"The job failed in push mode and will be "
                f"re-run in pull mode.",
            )
            return Outcome.consume("QUEUED")
        log.error("%s: %s raised %s", job.id, name, type(exc).__name__)
        data: dict[str, object] = {"state": "FAILED", "return-code": 1}
        summary = ""
        if attempts.count(job) > 1 or (run.spec is not None and run.spec.retries > 0):
            # Failed for good after retries: each attempt's error is part of the message.
            number = max(1, attempts.count(job))
            lines = [_error_line(number, message)]
            if attempts.own_api(job):
                lines = attempts.with_error(job, lines[0])
                data[attempts.ATTEMPT_ERRORS] = lines
            summary = f"failed after {number} attempt(s):\n" + "".join(
                f"  {each}\n" for each in lines
            )
        trace = "".join(traceback.format_exception(exc))
        data["status-message"] = monitoring.redact(f"{message}\n{summary}{trace}")
        job.write(data)
        return Outcome.consume("FAILED")

    def _write_retry(self, run: JobRun, job: Job, name: str, message: str) -> Outcome:
        """Put the job back to QUEUED for its next attempt, due after the plan's back-off."""
        plan = run.retry
        assert plan is not None
        due = format_time(datetime.now(UTC) + timedelta(seconds=plan.delay))
        status = (
            f"attempt {plan.attempt} of {plan.attempts} failed: {message}\n"
            f"attempt {plan.attempt + 1} runs at {due} (in {plan.delay:.1f} s)"
        )
        log.warning(
            "%s: %s failed (attempt %d of %d): next attempt in %.1f s",
            job.id,
            name,
            plan.attempt,
            plan.attempts,
            plan.delay,
        )
        data: dict[str, object] = {"state": JOB_QUEUED, "progress": 0, "status-message": status}
        if not attempts.own_api(job):
            # A Nuvla server queues every QUEUED job at once and knows no `not-before`: the
            # entry is held for the back-off, then released.
            job.write(data)
            return Outcome.retry(hold=plan.delay)
        data[attempts.NOT_BEFORE] = due
        data[attempts.ATTEMPT_ERRORS] = attempts.with_error(job, _error_line(plan.attempt, message))
        job.write(data)
        return Outcome.retry()

    def _write_return_code(self, job: Job, name: str, return_code: object) -> Outcome:
        if return_code == 0:
            job.update_job(state="SUCCESS", return_code=0)
            log.info("%s: %s succeeded", job.id, name)
            return Outcome.consume("SUCCESS")
        if isinstance(return_code, int) and not isinstance(return_code, bool) and return_code > 0:
            job.update_job(state="FAILED", return_code=return_code)
            log.info("%s: %s failed with return code %d", job.id, name, return_code)
            return Outcome.consume("FAILED")
        return self._fail(
            job,
            f"action {name} returned {return_code!r} instead of an int return code (0 for success)",
        )

    def _fail(self, job: Job, message: str) -> Outcome:
        log.error("%s: %s", job.id, message)
        job.update_job(state="FAILED", return_code=1, status_message=message)
        return Outcome.consume("FAILED")

    def _api_unavailable(self, job_id: str, exc: Exception) -> Outcome:
        """Release after a delay that grows while the job API keeps failing."""
        self._api_failures += 1
        delay = backoff_delay(self._api_failures, API_RETRY_FIRST, API_RETRY_MAX)
        log.warning("%s: %s: back to the queue in %.1f s", job_id, exc, delay)
        return Outcome.release(after=delay)

    def _check_still_ours(self, run: JobRun) -> None:
        """Raise JobLost when the entry being run is no longer this session's."""
        if run.entry is not None and not self.queue.holds(run.entry):
            raise JobLost()

    def _fetch(self, job_id: str) -> Job:
        return self.fetcher.fetch(job_id)

    # -- carrying the outcome out -----------------------------------------------------------

    def _settle(self, entry: Entry, outcome: Outcome) -> Outcome:
        """Consume or release the entry as the outcome decides (a lost entry is left alone);
        returns what was done."""
        self._undecided.discard(gevent.getcurrent())  # settled: it will wait for no limit
        if outcome.decision is Decision.CONSUME:
            self.queue.consume(entry)
        elif outcome.decision is Decision.RELEASE:
            if outcome.release_after and not self._stopping.is_set():
                try:
                    self._delay_release(outcome.release_after)
                except JobLost:
                    return Outcome.lost()
            self.queue.release(entry)
        return outcome

    def _delay_release(self, seconds: float) -> None:
        """Keep the entry ``seconds`` before its release; a stop request ends the wait."""
        current = gevent.getcurrent()
        self._delaying.add(current)
        try:
            gevent.sleep(seconds)
        except JobReleased:
            pass  # shutting down: release now
        finally:
            self._delaying.discard(current)

    # -- pull mode --------------------------------------------------------------------------

    def run_pull(self, job_id: str) -> int:
        """Pull mode: run exactly this job and return 0 when it succeeded."""
        try:
            job = self._fetch(job_id)
        except JobError as exc:
            log.error("%s: cannot run it: %s", job_id, exc)
            return 1
        outcome = self._run_job(JobRun(None, job_id), job)
        return 0 if outcome.state == "SUCCESS" or outcome == Outcome.left_running() else 1


def _error_line(attempt: int, message: str) -> str:
    """One failed attempt in the job's history: its number, when, and the error's first line."""
    first = message.strip().split("\n", 1)[0]
    return f"attempt {attempt} failed at {format_time(datetime.now(UTC))}: {first}"

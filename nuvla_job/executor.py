"""Executor: runs up to N jobs at once, each in its own greenlet, from the ZooKeeper queue.

The take loop waits for a free slot, takes the next entry, and spawns a greenlet that
processes it (:meth:`Executor.process`): every outcome of engine-behaviour.md's executor
table ends in exactly one of consume (the entry is done) or release (back to the queue).
"""

from __future__ import annotations

import logging
import signal
import time
import traceback
from dataclasses import dataclass

import gevent
import gevent.event
import gevent.pool
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from nuvla.api import Api

from . import metrics, monitoring
from .backoff import backoff_delay
from .job import (
    SUPPORTED_VERSION,
    ApiUnavailable,
    Job,
    JobConflict,
    JobError,
    JobMalformed,
    JobNotFound,
)
from .queue import Entry, QueueConsumer
from .registry import ActionRegistry
from .states import FINAL_STATES

log = logging.getLogger(__name__)


class JobLost(gevent.GreenletExit):
    """Raised into a job's greenlet when the ZooKeeper session holding its entry ended."""


class JobReleased(gevent.GreenletExit):
    """Raised into a job's greenlet when shutdown's grace period is over."""


class ActionTimeLimitExceeded(Exception):
    """What a job FAILED by its time limit reports (``--action-timeout``, ``timeout=``)."""


@dataclass(frozen=True)
class Outcome:
    """What processing one entry did: the queue decision and the state written, if any."""

    queue: str  # "consume", "release", or "lost"
    state: str | None = None
    # Hold the entry this long before releasing it, so that neither this executor nor
    # another one takes it straight back (API down, job for a newer engine).
    hold: float = 0.0


# Takes in flight at once: each waits a ZooKeeper round trip, and one at a time would cap
# the executor near a thousand jobs a second on a quiet machine, far less on a busy one.
TAKERS = 4
# How long a job for a newer engine stays held before it goes back to the queue.
NEWER_VERSION_HOLD = 5.0
# Holds after failed calls to the job API: doubled per failure in a row, up to the cap.
API_RETRY_FIRST, API_RETRY_MAX = 0.5, 30.0


class Executor:
    """Takes entries from the queue and runs their jobs, ``concurrency`` at a time."""

    def __init__(
        self,
        api: Api,
        zk: KazooClient | None,
        actions: ActionRegistry,
        *,
        concurrency: int = 100,
        grace_period: float = 120.0,
        name: str = "executor",
        nuvlaedge_fs: str | None = None,
        action_timeout: float | None = None,
    ) -> None:
        self.api = api
        self.zk = zk
        self.actions = actions
        self.concurrency = concurrency
        self.grace_period = grace_period
        self.name = name
        self.nuvlaedge_fs = nuvlaedge_fs
        # Longest an action may run, in seconds (None: no limit); an action's own wins.
        self.action_timeout = action_timeout
        # Pull mode (run_one) needs no queue, hence no ZooKeeper.
        self.consumer = QueueConsumer(zk, identifier=name) if zk is not None else None
        self.pool = gevent.pool.Pool(concurrency)
        self._running: dict[gevent.Greenlet, Entry] = {}
        self._stopping = gevent.event.Event()
        self._slot_freed = gevent.event.Event()
        self._reserved = 0  # slots held by takes in flight
        self._signals = 0
        self._api_failures = 0  # calls to the job API that failed in a row
        self._holding: set[gevent.Greenlet] = set()  # waiting out a hold before a release
        if zk is not None:
            zk.add_listener(self._on_zk_state)

    # -- ZooKeeper session ------------------------------------------------------------------

    def _on_zk_state(self, state: str) -> None:
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
        self.consumer.start()
        log.info("executor %s running up to %d job(s) at once", self.name, self.concurrency)
        takers = [gevent.spawn(self._take_loop) for _ in range(min(TAKERS, self.concurrency))]
        gevent.joinall(takers, raise_error=True)
        self._drain()
        return 0

    def _take_loop(self) -> None:
        """Reserve a slot, take an entry, start its job; until stopped."""
        while not self._stopping.is_set():
            self._wait_for_slot()
            if self._stopping.is_set():
                break
            self._reserved += 1
            try:
                entry = self.consumer.take(timeout=1.0)
            finally:
                self._reserved -= 1
            if entry is None:
                continue
            if self._stopping.is_set():
                self.consumer.release(entry)
                break
            # The slot was reserved: this spawn never waits.
            greenlet = self.pool.spawn(self._guarded, entry)
            self._running[greenlet] = entry
            greenlet.link(self._forget)

    def _wait_for_slot(self) -> None:
        """Wait for a slot no job or take holds, or for a stop request (its grace period
        starts at once)."""
        while len(self.pool) + self._reserved >= self.concurrency and not self._stopping.is_set():
            self._slot_freed.clear()
            gevent.wait([self._slot_freed, self._stopping], count=1)

    def _forget(self, greenlet: gevent.Greenlet) -> None:
        self._running.pop(greenlet, None)
        self._slot_freed.set()

    def in_flight(self) -> list[str]:
        """The ids of the jobs running now (for the executor's presence node)."""
        return [entry.job_id for entry in self._running.values() if entry.job_id]

    def stop(self) -> None:
        """Stop taking jobs; a second call also ends the grace period at once."""
        self._signals += 1
        if self._signals == 1:
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
        # Entries held only to delay their release have nothing left to finish.
        for greenlet in list(self._holding):
            greenlet.kill(JobReleased, block=False)
        if self._signals > 1:
            self._release_running()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.stop)

    def _drain(self) -> None:
        if self._running and self._signals < 2:
            self.pool.join(timeout=self.grace_period)
        self._release_running()
        self.pool.join(timeout=10)
        self.consumer.stop()
        log.info("executor %s stopped", self.name)

    def _release_running(self) -> None:
        running = list(self._running)
        if running:
            log.warning("releasing %d unfinished job(s) back to the queue", len(running))
        gevent.killall(running, JobReleased, block=True, timeout=10)

    # -- one entry --------------------------------------------------------------------------

    def _guarded(self, entry: Entry) -> Outcome:
        """Process one entry, counted in the metrics."""
        metrics.job_taken()
        started = time.perf_counter()
        outcome = self._settle(entry)
        # process() bound the job's action; only registered names become labels.
        action = monitoring.current_job_context()[1]
        metrics.job_done(
            action if action in self.actions else None, outcome, time.perf_counter() - started
        )
        return outcome

    def _settle(self, entry: Entry) -> Outcome:
        """Process one entry; whatever happens, the entry is consumed, released or lost."""
        try:
            outcome = self.process(entry)
        except JobLost:
            log.warning("%s: abandoned, its queue entry is no longer ours", entry.job_id)
            return Outcome("lost")
        except JobReleased:
            self.consumer.release(entry)
            return Outcome("release")
        except Exception as exc:  # nothing a single job does may stop the executor
            log.exception("%s: unexpected error; the entry is consumed", entry.job_id)
            monitoring.capture_exception(exc, job_id=entry.job_id, executor=self.name)
            outcome = Outcome("consume")
        if outcome.queue == "consume":
            self.consumer.consume(entry)
        elif outcome.queue == "release":
            if outcome.hold and not self._stopping.is_set():
                current = gevent.getcurrent()
                self._holding.add(current)
                try:
                    gevent.sleep(outcome.hold)
                except JobReleased:
                    pass  # shutting down: release now
                except JobLost:
                    return Outcome("lost")
                finally:
                    self._holding.discard(current)
            self.consumer.release(entry)
        return outcome

    def _api_down(self, job_id: str, exc: Exception) -> Outcome:
        """Release after a back-off that grows while the job API keeps failing."""
        self._api_failures += 1
        hold = backoff_delay(self._api_failures, API_RETRY_FIRST, API_RETRY_MAX)
        log.warning("%s: %s: back to the queue in %.1f s", job_id, exc, hold)
        return Outcome("release", hold=hold)

    def process(self, entry: Entry) -> Outcome:
        """Run the job of one entry: the executor table of engine-behaviour.md."""
        job_id = entry.job_id  # None for anything but an id the job API makes
        monitoring.bind_job_context(job_id)  # every line of this greenlet names the job
        if job_id is None:
            log.error("queue entry %s holds no job id (%r): dropped", entry.name, entry.data[:100])
            return Outcome("consume")
        try:
            job = Job.fetch(
                self.api, job_id, nuvlaedge_fs=self.nuvlaedge_fs, executor_name=self.name
            )
        except JobNotFound:
            log.warning("%s: not found in the job API: entry dropped", job_id)
            return Outcome("consume")
        except JobMalformed as exc:
            log.error("%s: malformed job: %s: entry dropped", job_id, exc)
            return Outcome("consume")
        except ApiUnavailable as exc:
            return self._api_down(job_id, exc)
        self._api_failures = 0
        return self.run_job(job, entry)

    def run_job(self, job: Job, entry: Entry | None = None) -> Outcome:
        """Run a fetched job and write its outcome (also the path of pull mode)."""
        job_id, state = job.id, job["state"]
        monitoring.bind_job_context(job_id, job.get("action"))
        if state in FINAL_STATES:
            log.info("%s: already %s: entry dropped", job_id, state)
            return Outcome("consume")
        version = job.get("version", SUPPORTED_VERSION)
        if version > SUPPORTED_VERSION:
            log.info(
                "%s: version %s is newer than this engine's %s: left for a newer engine",
                job_id,
                version,
                SUPPORTED_VERSION,
            )
            return Outcome("release", hold=NEWER_VERSION_HOLD)
        try:
            if version < SUPPORTED_VERSION:
                return self._fail(
                    job,
                    f"job version {version} is older than the version "
                    f"{SUPPORTED_VERSION} this engine supports",
                )
            action_cls = self.actions.get(job["action"])
            if action_cls is None:
                return self._fail(job, f"no action '{job['action']}' is registered in this engine")
            job.update_job(state="RUNNING")
            # A process frozen between the take and here would start a job another executor
            # may run already: ask first (free while the take is recent).
            if entry is not None and not self.consumer.holds(entry):
                raise JobLost()
            return self._run_action(job, action_cls, entry)
        except ApiUnavailable as exc:
            return self._api_down(job_id, exc)
        except JobConflict as exc:
            log.warning("%s: the job API refused the update (%s): entry dropped", job_id, exc)
            return Outcome("consume")

    def _fail(self, job: Job, message: str) -> Outcome:
        log.error("%s: %s", job.id, message)
        job.update_job(state="FAILED", return_code=1, status_message=message)
        return Outcome("consume", "FAILED")

    def _run_action(self, job: Job, action_cls: type, entry: Entry | None) -> Outcome:
        name = job["action"]
        log.debug("%s: running %s", job.id, name)  # its outcome is logged at INFO
        limit = self.actions.timeout(name) or self.action_timeout
        # A gevent.Timeout is a BaseException: an action's "except Exception" cannot eat it.
        # It interrupts only where the action yields (I/O, sleep), not a CPU-bound loop.
        timer = gevent.Timeout(limit) if limit else None
        try:
            if timer is not None:
                timer.start()
            return_code = action_cls(job).do_work()
            raised = None
        except gevent.GreenletExit:
            raise  # lost or released: handled by the caller
        except gevent.Timeout as exc:
            if exc is not timer:
                raised = exc  # a timeout of the action's own that it did not catch
            else:
                log.error("%s: %s exceeded its time limit of %g s", job.id, name, limit)
                raised = ActionTimeLimitExceeded(
                    f"action {name} exceeded its time limit of {limit:g} s"
                ).with_traceback(exc.__traceback__)  # where it was stuck
        except BaseException as exc:  # noqa: B036 - an action's SystemExit must not stop us
            raised = exc
        finally:
            if timer is not None:
                timer.close()
        # A process frozen past its session timeout wakes up here believing it still holds
        # the job, while another executor may run it: check before writing any outcome.
        if entry is not None and not self.consumer.holds(entry):
            raise JobLost()
        if raised is not None:
            exc = raised
            # The message is stored in the job, readable by its users: no secrets in it.
            message = monitoring.redact(f"{type(exc).__name__}: {exc}")
            monitoring.capture_exception(exc, job_id=job.id, action=name, executor=self.name)
            if job.get("execution-mode") == "mixed":
                log.warning("%s: %s failed; it will re-run in pull mode", job.id, name)
                job.update_job(
                    state="QUEUED",
                    execution_mode="pull",
                    status_message=f"{message}\n"
                    f"The job failed in push mode and will be "
                    f"re-run in pull mode.",
                )
                return Outcome("consume", "QUEUED")
            log.error("%s: %s raised %s", job.id, name, type(exc).__name__)
            job.update_job(
                state="FAILED",
                return_code=1,
                status_message=monitoring.redact(
                    f"{message}\n{''.join(traceback.format_exception(exc))}"
                ),
            )
            return Outcome("consume", "FAILED")
        return self._write_outcome(job, name, return_code)

    def _write_outcome(self, job: Job, name: str, return_code: object) -> Outcome:
        if return_code == 0:
            job.update_job(state="SUCCESS", return_code=0)
            log.info("%s: %s succeeded", job.id, name)
            return Outcome("consume", "SUCCESS")
        if isinstance(return_code, int) and not isinstance(return_code, bool) and return_code > 0:
            job.update_job(state="FAILED", return_code=return_code)
            log.info("%s: %s failed with return code %d", job.id, name, return_code)
            return Outcome("consume", "FAILED")
        return self._fail(
            job,
            f"action {name} returned {return_code!r} instead of an int return code (0 for success)",
        )

    # -- pull mode --------------------------------------------------------------------------

    def run_one(self, job_id: str) -> int:
        """Pull mode: run exactly this job and return 0 when it succeeded."""
        try:
            job = Job.fetch(
                self.api, job_id, nuvlaedge_fs=self.nuvlaedge_fs, executor_name=self.name
            )
        except JobError as exc:
            log.error("%s: cannot run it: %s", job_id, exc)
            return 1
        outcome = self.run_job(job)
        return 0 if outcome.state == "SUCCESS" else 1

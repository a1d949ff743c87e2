"""One fault scenario's stack: a real job API, two real executors, and a load of jobs.

ZooKeeper (a server or an ensemble) belongs to the scenario, which may stop or kill it; the
stack only needs its connection string. With ``replicas=N`` and a PostgreSQL ``db`` there
are N job API processes on that database behind the compose file's HAProxy, which the
executors and the load call, as in docker-compose.yml.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from kazoo.exceptions import NoNodeError

from nuvla_job.localstack.jobapi import JobApiProcess
from nuvla_job.localstack.processes import EngineProcess, executor_process
from nuvla_job.zk import make_client
from tests.faults.invariants import (
    FINAL_STATES,
    Execution,
    Verdict,
    abandoned_jobs,
    check,
    read_executions,
)
from tests.support import waiting
from tests.support.haproxy import Balancer

EXECUTORS = ("a", "b")
# The executor's warning when the job API did not take an outcome (nuvla_job/executor.py).
_LATE_OUTCOME = re.compile(r"(job/[0-9a-f-]+): its outcome could not be written")
CONCURRENCY = 100
ADD_THREADS = 8
# Share of short jobs (0-0.2 s); the others sleep 1-5 s.
SHORT_SHARE = 0.6


def _healthy(endpoint: str) -> bool:
    try:
        return requests.get(f"{endpoint}/api/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def poll(condition: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something true (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds.

    The tests' shared helper, with the timeout first as the scenarios read best.
    """
    return waiting.wait_for(condition, f"{what} ({timeout:.0f} s)", timeout, interval=interval)


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)
    errors: list[tuple[int, dict[str, Any] | str]] = field(default_factory=list)


class FaultStack:
    """The job API and two executors (`a` and `b`), each executor with its own API key, so
    a job's `updated-by` names the executor that wrote its final state."""

    def __init__(
        self,
        workdir: Path,
        zk_hosts: str,
        *,
        zk_timeout: float = 10.0,
        grace_period: float = 120.0,
        seed: int = 6,
        db: str | None = None,
        replicas: int = 1,
        unique_adds: bool = False,
    ) -> None:
        """``unique_adds``: each job of the load carries a unique key, so that an add whose
        answer was lost (its job API killed) and is sent again returns the job it made."""
        self.workdir = workdir
        self.zk_hosts = zk_hosts
        self.zk_timeout = zk_timeout
        self.grace_period = grace_period
        self.rng = random.Random(seed)
        self.record = workdir / "executions.log"
        # Recovery looks every second for the adds a dead replica left (PostgreSQL only).
        extra = ("--recovery-interval", "1") if replicas > 1 else ()
        self.apis = [JobApiProcess(zk_hosts, *extra, db=db) for _ in range(replicas)]
        self.api = self.apis[0]
        self.balancer: Balancer | None = None
        if replicas > 1:
            self.balancer = Balancer({f"r{i}": a.port for i, a in enumerate(self.apis)}, workdir)
        self.unique_adds = unique_adds
        self._serial = 0
        self.executors: dict[str, EngineProcess] = {}
        self.identities: dict[str, str] = {}  # executor name -> identity of its API key
        self.added: set[str] = set()
        self.stopped_codes: dict[str, int | None] = {}
        self.admin_session: requests.Session | None = None
        self.target = 0  # jobs the background load adds
        self.refused: list[tuple[int, dict[str, Any] | str]] = []
        self._added_times: list[float] = []  # when each add of the load was answered
        # Unique keys of adds whose answer never came (the replica died with the request):
        # the add may have been made, and the job may even have run before it was sent again.
        self.answer_lost: set[str] = set()
        self._loader: ThreadPoolExecutor | None = None
        self._load: list[Any] = []
        self._stop_load = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where the executors and the load call the job API (the balancer, if any)."""
        return self.balancer.endpoint if self.balancer is not None else self.api.endpoint

    def start(self) -> FaultStack:
        self.api.start()  # the first makes the tables and the admin key, as in compose
        for replica in self.apis[1:]:
            # Every replica uses the admin key the first one wrote (it finds it, and writes
            # none of its own).
            replica.credentials_path.write_text(self.api.credentials_path.read_text())
            replica.start()
        if self.balancer is not None:
            self.balancer.start()
            wait_for(lambda: _healthy(self.endpoint), 30, "the balancer's health")
        # One login for every request of the test: logins are throttled.
        self.admin_session = self.api.admin_api().session
        # In parallel: each takes seconds to create its key and import the engine.
        with ThreadPoolExecutor(len(EXECUTORS)) as pool:
            list(pool.map(self.start_executor, EXECUTORS))
        return self

    def start_executor(self, name: str) -> EngineProcess:
        identity = f"user/executor-{name}"
        made = self.api.cli("add-key", "--identity", identity, "--admin")
        assert made.returncode == 0, made.stderr
        creds = self.workdir / f"credentials-{name}.json"
        creds.write_text(made.stdout)
        process = executor_process(
            self.zk_hosts,
            self.endpoint,
            str(creds),
            "--concurrency",
            str(CONCURRENCY),
            "--zk-timeout",
            str(self.zk_timeout),
            "--grace-period",
            str(self.grace_period),
            "--name",
            f"executor-{name}",
        )
        self.executors[name] = process.start()
        self.identities[name] = identity
        process.wait_for_log("running up to")
        return process

    def stop_executors(self) -> dict[str, int | None]:
        for name, process in self.executors.items():
            if name not in self.stopped_codes:
                self.stopped_codes[name] = process.stop(timeout=self.grace_period + 30)
        return self.stopped_codes

    def close(self) -> None:
        self._stop_load.set()
        if self._loader is not None:
            self._loader.shutdown(cancel_futures=True)
        for process in self.executors.values():
            process.stop(timeout=5)
        if self.balancer is not None:
            self.balancer.stop()
        for replica in self.apis:
            replica.close()

    # -- load -------------------------------------------------------------------------------

    def job_doc(self) -> dict[str, Any]:
        if self.rng.random() < SHORT_SHARE:
            seconds = round(self.rng.uniform(0, 0.2), 3)
        else:
            seconds = round(self.rng.uniform(1, 5), 3)
        payload = {"seconds": seconds, "record": str(self.record)}
        doc = {"action": "fault_work", "payload": json.dumps(payload)}
        if self.unique_adds:
            self._serial += 1
            doc["unique-key"] = f"fault-load-{self._serial}"
        return doc

    def _post(
        self, session: requests.Session, doc: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | str]:
        """(status, body) of one add; status 0 when the job API did not answer."""
        try:
            response = session.post(f"{self.endpoint}/api/job", json=doc, timeout=30)
        except requests.RequestException as exc:
            return 0, type(exc).__name__
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def _sessions(self) -> list[requests.Session]:
        sessions = []
        for _ in range(ADD_THREADS):
            session = requests.Session()
            session.cookies.update(self._cookies())
            sessions.append(session)
        return sessions

    def add_jobs(self, count: int) -> AddResult:
        """Add `count` jobs over a few connections; refusals are collected, not retried."""
        docs = [self.job_doc() for _ in range(count)]
        result = AddResult()

        def add_slice(session: requests.Session, part: list[dict[str, Any]]) -> None:
            for doc in part:
                status, body = self._post(session, doc)
                if status == 201:
                    result.added.append(body["resource-id"])  # type: ignore[index]
                else:
                    result.errors.append((status, body))

        slices = [docs[i::ADD_THREADS] for i in range(ADD_THREADS)]
        with ThreadPoolExecutor(ADD_THREADS) as pool:
            list(pool.map(add_slice, self._sessions(), slices))
        self.added.update(result.added)
        return result

    def start_load(self, count: int, timeout: float = 300.0) -> None:
        """Add `count` jobs in the background, as a client would: a refused add is retried
        after a pause (the refusals are kept in `self.refused`)."""
        self.target = count
        docs = [self.job_doc() for _ in range(count)]

        def add_slice(session: requests.Session, part: list[dict[str, Any]]) -> None:
            deadline = time.monotonic() + timeout
            for doc in part:
                while time.monotonic() < deadline and not self._stop_load.is_set():
                    status, body = self._post(session, doc)
                    # 200: the job of this unique key, made by an add whose answer was lost.
                    if status == 201 or (status == 200 and self.unique_adds):
                        self.added.add(body["resource-id"])  # type: ignore[index]
                        self._added_times.append(time.time())
                        break
                    self.refused.append((status, body))
                    if status in (0, 502) and "unique-key" in doc:
                        self.answer_lost.add(doc["unique-key"])
                    self._stop_load.wait(0.5)

        slices = [docs[i::ADD_THREADS] for i in range(ADD_THREADS)]
        self._loader = ThreadPoolExecutor(ADD_THREADS)
        self._load = [
            self._loader.submit(add_slice, session, part)
            for session, part in zip(self._sessions(), slices, strict=True)
        ]

    def finish_load(self) -> None:
        """Wait until the background load is added; fail if some job never was."""
        for future in self._load:
            future.result()
        self._loader.shutdown()
        assert len(self.added) == self.target, (
            f"only {len(self.added)} of {self.target} jobs added: {self.refused[-5:]}"
        )

    # -- observation ------------------------------------------------------------------------

    def executions(self) -> list[Execution]:
        return read_executions(self.record)

    def pid_of(self, name: str) -> int:
        return self.executors[name].pid

    def in_flight(self, name: str) -> set[str]:
        """Jobs whose action the executor started and has not ended (from the records)."""
        pid = self.pid_of(name)
        running: set[str] = set()
        for record in self.executions():
            if record.pid == pid:
                if record.kind == "start":
                    running.add(record.job_id)
                else:
                    running.discard(record.job_id)
        return running

    def started(self) -> set[str]:
        return {r.job_id for r in self.executions() if r.kind == "start"}

    def wait_mid_load(self, share: float = 0.25, timeout: float = 120.0) -> None:
        """Wait until `share` of the jobs have started, with executors busy."""
        wanted = int((self.target or len(self.added)) * share)
        wait_for(
            lambda: len(self.started()) >= wanted and self.in_flight("a") and self.in_flight("b"),
            timeout,
            f"{wanted} jobs started",
        )

    def first_add_after(self, moment: float) -> float | None:
        """Wall-clock time of the load's first add answered after `moment`."""
        times = [t for t in list(self._added_times) if t > moment]
        return min(times) if times else None

    def first_start_after(
        self, moment: float, pid: int | None = None, jobs: set[str] | None = None
    ) -> float | None:
        """Wall-clock time of the first action start after `moment` (optionally filtered)."""
        times = [
            r.time
            for r in self.executions()
            if r.kind == "start"
            and r.time > moment
            and (pid is None or r.pid == pid)
            and (jobs is None or r.job_id in jobs)
        ]
        return min(times) if times else None

    def outcomes_written_late(self) -> int:
        """Jobs whose outcome an executor had to write again (the job API did not take it),
        from the executors' logs (nuvla_job/executor.py's warning)."""
        late = set()
        for process in self.executors.values():
            late.update(_LATE_OUTCOME.findall(process.log()))
        return len(late)

    def final_count(self) -> int | None:
        """How many jobs are in a final state, None while the job API does not answer."""
        states = " or ".join(f"state='{s}'" for s in sorted(FINAL_STATES))
        try:
            response = requests.get(
                f"{self.endpoint}/api/job",
                params={"filter": states, "last": 0},
                cookies=self._cookies(),
                timeout=10,
            )
        except requests.RequestException:
            return None
        return response.json()["count"] if response.status_code == 200 else None

    def _cookies(self) -> Any:
        return self.admin_session.cookies

    def jobs(self) -> dict[str, dict[str, Any]]:
        response = requests.get(
            f"{self.endpoint}/api/job",
            params={"last": 1_000_000, "select": "id,state,updated-by,return-code,unique-key"},
            cookies=self._cookies(),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return {doc["id"]: doc for doc in response.json()["resources"]}

    def pending_enqueue(self) -> list[str]:
        """Jobs the database still marks as owed a queue entry (an add left half-done)."""
        query = "SELECT id FROM job WHERE enqueue_pending"
        if str(self.api.db).startswith("postgresql://"):
            import psycopg

            with psycopg.connect(str(self.api.db)) as pg:
                return [row[0] for row in pg.execute(query)]
        with sqlite3.connect(f"file:{self.api.db}?mode=ro", uri=True) as db:
            return [row[0] for row in db.execute(query)]

    def queue_snapshot(self) -> tuple[dict[str, bytes], list[str]]:
        """(entry name -> data, taken names), read from ZooKeeper."""
        client = make_client(self.zk_hosts, timeout=10.0, use_gevent=False)
        client.start(timeout=30)
        try:
            try:
                names = client.get_children("/job/entries")
            except NoNodeError:
                names = []
            reads = [(n, client.get_async(f"/job/entries/{n}")) for n in names]
            entries = {}
            for name, read in reads:
                try:
                    entries[name] = read.get()[0]
                except NoNodeError:
                    pass
            try:
                taken = client.get_children("/job/taken")
            except NoNodeError:
                taken = []
        finally:
            client.stop()
            client.close()
        return entries, taken

    def verdict(self, duplicates_allowed: bool = True) -> Verdict:
        """Stop the executors (taken nodes of a dead one expire), then check everything."""
        self.stop_executors()
        # A killed executor's taken nodes go when its session expires; what stays is stale.
        poll(lambda: not self.queue_snapshot()[1], self.zk_timeout + 15, interval=0.5)
        entries, taken = self.queue_snapshot()
        writers = {p.pid: self.identities[n] for n, p in self.executors.items()}
        abandoned = {p.pid: abandoned_jobs(p.log()) for p in self.executors.values()}
        jobs = self.jobs()
        verdict = check(
            self.added,
            jobs,
            entries,
            taken,
            self.executions(),
            writers,
            abandoned,
            duplicates_allowed=duplicates_allowed,
        )
        # An add the replica made and queued before dying unanswered is not refused: the
        # client could not know. If its job ran and ended before the add was sent again,
        # the key was free again and the retry made a second job (a unique key holds only
        # while its job is unfinished). Such a job must have run once, to SUCCESS.
        made_unanswered = [
            job_id
            for job_id in verdict.refused_but_stored
            if jobs[job_id].get("unique-key") in self.answer_lost
            and jobs[job_id].get("state") == "SUCCESS"
        ]
        verdict.refused_but_stored = [
            j for j in verdict.refused_but_stored if j not in made_unanswered
        ]
        verdict.made_unanswered = made_unanswered
        return verdict

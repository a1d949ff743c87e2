"""What must hold after every fault scenario, checked on the real job API and ZooKeeper.

Inputs are snapshots taken once every executor has stopped: the job documents, the queue
(`/job/entries` with their data, `/job/taken`), and the execution records the `fault_work`
action appends ("start|end JOB PID TIME", one O_APPEND write per line).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nuvla_job.states import FINAL_STATES

# The executor's report of a job whose entry was no longer its own (nuvla_job/executor.py).
_ABANDONED = re.compile(r"(job/[0-9a-f-]+): abandoned, its queue entry is no longer ours")


@dataclass(frozen=True)
class Execution:
    kind: str  # "start" or "end"
    job_id: str
    pid: int
    time: float


def read_executions(path: Path) -> list[Execution]:
    """The execution records, in the order they were written."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        kind, job_id, pid, when = line.split()
        records.append(Execution(kind, job_id, int(pid), float(when)))
    return records


@dataclass
class Verdict:
    """The checker's findings; `hard_failures()` lists what must never happen."""

    jobs: int
    lost: list[str] = field(default_factory=list)
    not_success: list[str] = field(default_factory=list)
    refused_but_stored: list[str] = field(default_factory=list)
    stale_entries: list[str] = field(default_factory=list)
    stale_taken: list[str] = field(default_factory=list)
    stale_final_writes: list[str] = field(default_factory=list)
    still_queued: int = 0
    duplicate_executions: int = 0
    jobs_run_twice: list[str] = field(default_factory=list)
    # Jobs an add made whose answer was lost with its job API replica, run once to
    # SUCCESS, whose add the client then sent again (stack.FaultStack.verdict).
    made_unanswered: list[str] = field(default_factory=list)
    # False where the fault leaves every executor alive and holding its entries (the job
    # API down, its disk full): then no action may run twice.
    duplicates_allowed: bool = True

    def hard_failures(self) -> list[str]:
        problems = []
        if not self.duplicates_allowed and self.jobs_run_twice:
            problems.append(
                f"duplicate executions: {self.duplicate_executions} e.g. {self.jobs_run_twice[:5]}"
            )
        for name in (
            "lost",
            "not_success",
            "refused_but_stored",
            "stale_entries",
            "stale_taken",
            "stale_final_writes",
        ):
            found = getattr(self, name)
            if found:
                problems.append(f"{name.replace('_', ' ')}: {len(found)} e.g. {found[:5]}")
        return problems


def abandoned_jobs(executor_log: str) -> Counter[str]:
    """How often the executor reports having abandoned each job (its entry was no longer
    its own: session lost), from its log."""
    return Counter(_ABANDONED.findall(executor_log))


def check(
    added: set[str],
    jobs: dict[str, dict[str, Any]],
    entries: dict[str, bytes],
    taken: list[str],
    executions: list[Execution],
    writer_of_pid: dict[int, str],
    abandoned_by_pid: dict[int, Counter[str]] | None = None,
    duplicates_allowed: bool = True,
) -> Verdict:
    """Check the invariants.

    - every added job is in a final state, or still QUEUED with exactly one queue entry
      (else it is *lost*); the `fault_work` action always succeeds, so final means SUCCESS;
    - no job exists that the job API refused to add (*refused but stored*: a half-written add);
    - `/job/entries` holds only entries of QUEUED jobs, one each; `/job/taken` is empty
      (no executor runs any more) and never names a missing entry;
    - the final state was written by the executor that ran the job last: an executor that
      lost its entry (frozen, cut off) must not write it (`updated-by` of a final job is
      its final writer, each executor has its own API key);
    - duplicate executions (a job's action started more than once) are counted, and
      refused only when ``duplicates_allowed`` is False: a frozen or killed executor's job
      is run again by design, but a job whose executor lives is not (an outcome the job
      API could not take is written again, the action is not run again).

    `writer_of_pid` maps each executor pid to the identity its API key acts as;
    `abandoned_by_pid` says which runs ended abandoned (no final write by design): they do
    not count as the last run. Such a run can start after another executor took the job:
    a frozen executor resumes a job between its take and its action before it learns that
    its session has expired.
    """
    verdict = Verdict(jobs=len(added), duplicates_allowed=duplicates_allowed)
    entries_of: dict[str, list[str]] = defaultdict(list)
    for name, data in entries.items():
        entries_of[data.decode("utf-8", "replace")].append(name)
    for job_id in sorted(added):
        doc = jobs.get(job_id)
        state = doc.get("state") if doc else None
        if state in FINAL_STATES:
            if state != "SUCCESS":
                verdict.not_success.append(f"{job_id} {state}")
        elif state == "QUEUED" and len(entries_of.get(job_id, [])) == 1:
            verdict.still_queued += 1
        else:
            verdict.lost.append(f"{job_id} {state} entries={len(entries_of.get(job_id, []))}")
    verdict.refused_but_stored = sorted(set(jobs) - added)
    for job_id, names in sorted(entries_of.items()):
        doc = jobs.get(job_id)
        if doc is None or doc.get("state") != "QUEUED" or len(names) > 1:
            state = doc.get("state") if doc else "missing"
            verdict.stale_entries += [f"{name} ({job_id} {state})" for name in sorted(names)]
    verdict.stale_taken = sorted(taken)

    starts: dict[str, list[Execution]] = defaultdict(list)
    for record in executions:
        if record.kind == "start":
            starts[record.job_id].append(record)
    counts = Counter({job_id: len(runs) for job_id, runs in starts.items()})
    verdict.duplicate_executions = sum(n - 1 for n in counts.values() if n > 1)
    verdict.jobs_run_twice = sorted(j for j, n in counts.items() if n > 1)
    abandoned = {pid: Counter(c) for pid, c in (abandoned_by_pid or {}).items()}
    for job_id, runs in starts.items():
        doc = jobs.get(job_id) or {}
        if doc.get("state") not in FINAL_STATES:
            continue
        kept = []
        for run in runs:  # an executor abandons a run before it runs that job again
            left = abandoned.get(run.pid, Counter())
            if left[job_id]:
                left[job_id] -= 1
            else:
                kept.append(run)
        if not kept:
            continue  # every run was abandoned: the job was found final (or is lost)
        last_runner = writer_of_pid.get(kept[-1].pid)
        if doc.get("updated-by") != last_runner:
            verdict.stale_final_writes.append(
                f"{job_id} final state by {doc.get('updated-by')}, last run by {last_runner}"
            )
    return verdict

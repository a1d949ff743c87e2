"""Capacity on paper: what one job costs each part of the engine, counted and measured.

Run: ``.venv/bin/python -m bench.capacity`` (``--help`` for sizes; a few minutes at most).
A local ZooKeeper, the job API and 1, 2 and 4 `job-executor` processes, all real. For each
run the driver adds the jobs (from a few threads) while the executors run them, and counts
over the run's window, from the services' own counters:

- job API calls, by method and route: the job API's ``nuvla_job_http_requests_total``
  (its /metrics), less the driver's own adds and reads, which it counts itself;
- ZooKeeper requests: ``mntr``'s ``zk_cnt_updatelatency`` (write requests: a multi is one)
  and ``zk_cnt_readlatency`` (reads), the ``/job`` namespace's own counts
  (``zk_cnt_job_write_per_namespace``, ``..._read_...``) and the packets it sent
  (answers, watch events and pings);
- CPU seconds of every process (/proc/<pid>/stat before and after): job API, ZooKeeper's
  JVM, each executor, the driver, and what every other process of the machine took.

Completion is read from the executors' own metrics (``nuvla_job_jobs_processed_total``), so
waiting adds nothing to the counts. docs/capacity.md turns the figures into a fleet model
and checks it against these runs; ``--publish`` replaces its generated section.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import click
import requests
from nuvla.api import Api
from prometheus_client.parser import text_string_to_metric_families

from bench import report
from bench.support.proc import cpu_seconds, machine_seconds, peak_rss_mb
from nuvla_job.localstack.jobapi import JobApiProcess
from nuvla_job.localstack.processes import EngineProcess, executor_process, serving_on_free_port
from nuvla_job.localstack.zookeeper import ZooKeeperServer

RESULTS = Path(__file__).resolve().parent / "results"
DOC = report.OWN_PAGES["capacity"]
ADDERS = 4  # driver threads adding jobs
ZK_COUNTERS = {
    "writes": "zk_cnt_updatelatency",
    "reads": "zk_cnt_readlatency",
    "/job writes": "zk_cnt_job_write_per_namespace",
    "/job reads": "zk_cnt_job_read_per_namespace",
    "packets sent": "zk_packets_sent",
    "packets received": "zk_packets_received",
}


def prometheus(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    text = requests.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def api_calls(endpoint: str) -> Counter[str]:
    """The job API's answered requests so far, by "METHOD route"."""
    calls: Counter[str] = Counter()
    for (name, labels), value in prometheus(f"{endpoint}/metrics").items():
        if name == "nuvla_job_http_requests_total":
            label = dict(labels)
            calls[f"{label['method']} {label['route']}"] += int(value)
    return calls


def zk_counters(zk: ZooKeeperServer) -> dict[str, int]:
    values = dict(
        line.split("\t", 1) for line in zk.four_letter_word("mntr").splitlines() if "\t" in line
    )
    return {name: int(float(values.get(key, "0"))) for name, key in ZK_COUNTERS.items()}


def processed(process: EngineProcess) -> int:
    return int(
        sum(
            value
            for (name, _), value in prometheus(f"http://127.0.0.1:{process.port}/metrics").items()
            if name == "nuvla_job_jobs_processed_total"
        )
    )


@dataclass
class Phase:
    """What one phase of a run cost: its engine's job API calls, ZooKeeper requests, CPU
    seconds by role, and the cores every other process of the machine used meanwhile."""

    wall: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    zk: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    others: float = 0.0


@dataclass
class Run:
    executors: int
    jobs: int
    seconds: float  # each job's sleep
    concurrency: int
    submit: Phase = field(default_factory=Phase)  # the driver adds every job, no executor
    execute: Phase = field(default_factory=Phase)  # the executors run them all
    rate: float = 0.0  # jobs/s, first start to last end (the job API's timestamps)
    rss: float = 0.0  # the largest peak RSS of an executor (MB)

    def per_job(self, value: float) -> float:
        return value / self.jobs


class Meter:
    """Counters and CPU times of a phase, taken at its start and at its end."""

    def __init__(self, stack: Stack, pids: dict[str, int]) -> None:
        assert stack.api is not None
        self.stack, self.endpoint, self.pids = stack, stack.api.endpoint, pids

    def __enter__(self) -> Meter:
        self.calls, self.zk = api_calls(self.endpoint), zk_counters(self.stack.zk)
        self.cpu = {role: cpu_seconds(pid) for role, pid in self.pids.items()}
        self.machine, self.began = machine_seconds()[0], time.monotonic()
        return self

    def add(self, role: str, pid: int, cpu_at_start: float) -> None:
        """A process started during the phase, from the CPU time it had when it began its work."""
        self.pids[role], self.cpu[role] = pid, cpu_at_start

    def phase(self, driver_adds: int = 0) -> Phase:
        cpu = {role: cpu_seconds(pid) - self.cpu[role] for role, pid in self.pids.items()}
        wall = time.monotonic() - self.began
        busy = machine_seconds()[0] - self.machine
        calls = api_calls(self.endpoint) - self.calls
        calls["POST /api/job"] -= driver_adds
        zk = zk_counters(self.stack.zk)
        return Phase(
            wall=wall,
            calls=+calls,
            zk={name: zk[name] - self.zk[name] for name in zk},
            cpu=cpu,
            others=max(0.0, busy - sum(cpu.values())) / wall,
        )

    def __exit__(self, *exc: object) -> None:
        pass


class Stack:
    def __init__(self) -> None:
        self.zk = ZooKeeperServer()
        self.api: JobApiProcess | None = None
        self.startup_cpu = 0.0  # CPU seconds an executor takes to start on an empty queue

    def __enter__(self) -> Stack:
        self.zk.start()
        self.api = JobApiProcess(self.zk.hosts)
        self.api.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.api is not None:
            self.api.close()
        self.zk.close()

    def executor(self, concurrency: int) -> EngineProcess:
        assert self.api is not None
        api = self.api

        def start(port: int) -> EngineProcess:
            return executor_process(
                self.zk.hosts,
                api.endpoint,
                str(api.credentials_path),
                *("--concurrency", str(concurrency), "--metrics-port", str(port)),
                actions_path=None,
            ).start()

        return serving_on_free_port(start, "running up to")

    def measure_startup(self) -> None:
        """An executor's start-up CPU (interpreter, imports, login, first listing), taken
        off the executors' CPU of each run: they start once the queue is full."""
        process = self.executor(1)
        try:
            time.sleep(1.0)  # the first listing and presence done
            self.startup_cpu = cpu_seconds(process.pid)
        finally:
            process.stop()


def _add(api: Api, share: int, body: dict) -> None:
    for _ in range(share):
        api.add("job", dict(body))


def run(stack: Stack, count: int, jobs: int, seconds: float, concurrency: int) -> Run:
    """Submit `jobs` with no executor running, then start `count` executors and let them
    run every job: each phase measured on its own."""
    assert stack.api is not None and stack.zk.pid is not None and stack.api.pid is not None
    result = Run(count, jobs, seconds, concurrency)
    tag = f"capacity-{count}-{time.time_ns()}"
    body = {"action": "sleep", "payload": json.dumps({"seconds": seconds}), "tags": [tag]}
    sessions = [stack.api.admin_api() for _ in range(ADDERS)]
    pids = {"job API": stack.api.pid, "ZooKeeper": stack.zk.pid, "driver": os.getpid()}
    with Meter(stack, dict(pids)) as meter:
        shares = [jobs // ADDERS + (i < jobs % ADDERS) for i in range(ADDERS)]
        adders = [
            threading.Thread(target=_add, args=(sessions[i], n, body)) for i, n in enumerate(shares)
        ]
        for thread in adders:
            thread.start()
        for thread in adders:
            thread.join()
        result.submit = meter.phase(driver_adds=jobs)
    procs: list[EngineProcess] = []
    try:
        with Meter(stack, dict(pids)) as meter:
            deadline = time.monotonic() + jobs * seconds / (count * concurrency) * 3 + 120
            for i in range(count):
                procs.append(stack.executor(concurrency))
                meter.add(f"executor {i + 1}", procs[-1].pid, stack.startup_cpu)
            while sum(processed(p) for p in procs) < jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{jobs} jobs not processed in time")
                time.sleep(0.05)
            result.execute = meter.phase()
        result.rss = max(peak_rss_mb(p.pid) for p in procs)
    finally:
        for process in procs:
            process.stop()
    docs = [
        r.data
        for r in sessions[0]
        .search("job", filter=f"tags='{tag}'", last=10_000, select="started,updated")
        .resources
    ]
    result.rate = jobs / (
        max(_ts(d["updated"]) for d in docs) - min(_ts(d["started"]) for d in docs)
    )
    return result


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _ms(value: float) -> str:
    return f"{value * 1000:.2f}"


def _cpu(phase: Phase, role: str) -> float:
    if role == "executors":
        return sum(v for k, v in phase.cpu.items() if k.startswith("executor"))
    return phase.cpu.get(role, 0.0)


ROLES = ("job API", "ZooKeeper", "executors")  # the engine; the driver is shown apart


def label(r: Run) -> str:
    return f"{r.executors} × c{r.concurrency}, {r.jobs} jobs of {r.seconds:g} s"


def tables(runs: list[Run]) -> str:
    """Per job, each phase: job API calls by route, ZooKeeper counters, CPU by process;
    then each run's wall time, jobs/s and what other processes used."""
    header = "| per job | " + " | ".join(label(r) for r in runs) + " |"
    rows = [header, "| --- |" + " ---: |" * len(runs)]

    def line(name: str, values: list[str]) -> None:
        rows.append(f"| {name} | " + " | ".join(values) + " |")

    for phase_name in ("submit", "execute"):
        phases = [getattr(r, phase_name) for r in runs]
        if phase_name == "submit":
            line("**submit**: the client's add (POST /api/job)", ["1"] * len(runs))
        else:
            line("**execute**", [""] * len(runs))
        for route in sorted({route for p in phases for route in p.calls}):
            line(
                f"job API calls: {route}",
                [f"{r.per_job(p.calls[route]):.3f}" for r, p in zip(runs, phases, strict=True)],
            )
        for name in ZK_COUNTERS:
            line(
                f"ZooKeeper {name}",
                [f"{r.per_job(p.zk[name]):.2f}" for r, p in zip(runs, phases, strict=True)],
            )
        for role in (*ROLES, "driver"):
            line(
                f"CPU ms, {role}",
                [_ms(r.per_job(_cpu(p, role))) for r, p in zip(runs, phases, strict=True)],
            )
    line(
        "**CPU ms per job, all engine processes, both phases**",
        [
            _ms(r.per_job(sum(_cpu(p, x) for p in (r.submit, r.execute) for x in ROLES)))
            for r in runs
        ],
    )
    run_rows = [
        "| run | submit (s) | execute (s) | executed jobs/s | model: jobs/s | other processes "
        "(cores) | executor peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    run_rows += [
        f"| {label(r)} | {r.submit.wall:.1f} | {r.execute.wall:.1f} | {r.rate:.0f} | "
        f"{predicted(r):.0f} | {r.submit.others:.2f} / {r.execute.others:.2f} | {r.rss:.0f} |"
        for r in runs
    ]
    return "\n".join([*rows, "", *run_rows])


def predicted(r: Run) -> float:
    """What the model says this run executes per second on this machine: the cores the
    other processes and the driver left, over the execution's CPU per job (job API,
    ZooKeeper, executors), or the executors' slots over a job's length, whichever is less."""
    cpu = r.per_job(sum(_cpu(r.execute, role) for role in ROLES))
    driver = _cpu(r.execute, "driver") / r.execute.wall
    free = max(0.0, (os.cpu_count() or 1) - r.execute.others - driver)
    slots = r.executors * r.concurrency / r.seconds if r.seconds else float("inf")
    return min(free / cpu, slots)


def as_json(r: Run) -> dict:
    return {
        **{k: v for k, v in r.__dict__.items() if k not in ("submit", "execute")},
        **{
            name: {**p.__dict__, "calls": dict(p.calls)}
            for name, p in (("submit", r.submit), ("execute", r.execute))
        },
    }


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs of --sleep per run.")
@click.option("--sleep", "seconds", default=0.1, show_default=True, help="Seconds each job sleeps.")
@click.option(
    "--executors",
    "counts",
    default="1,2,4",
    show_default=True,
    help="Executor processes of each run (comma-separated).",
)
@click.option(
    "--concurrency", default=100, show_default=True, help="--concurrency of each executor."
)
@click.option(
    "--long-jobs", default=1000, show_default=True, help="Jobs of the long-job run (0: none)."
)
@click.option("--long-sleep", default=10.0, show_default=True, help="Seconds each long job sleeps.")
@click.option("--publish", is_flag=True, help="Also update docs/capacity.md.")
def main(
    jobs: int,
    seconds: float,
    counts: str,
    concurrency: int,
    long_jobs: int,
    long_sleep: float,
    publish: bool,
) -> None:
    """Count and measure what one job costs each process; print the tables."""
    try:
        numbers = [int(c) for c in counts.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of integers: {counts!r}") from None
    if min([jobs, concurrency, *numbers]) < 1 or long_jobs < 0 or seconds < 0:
        raise click.UsageError("sizes must be positive")
    load_at_start = report.load_average()
    runs = []
    with Stack() as stack:
        stack.measure_startup()
        for count in numbers:
            runs.append(run(stack, count, jobs, seconds, concurrency))
            click.echo(f"{count} executor(s): {runs[-1].rate:.0f} jobs/s")
        if long_jobs:
            # Every long job in flight at once on one executor: what holding costs.
            runs.append(run(stack, 1, long_jobs, long_sleep, long_jobs))
            click.echo(f"long jobs: {runs[-1].rate:.0f} jobs/s")
    body = tables(runs)
    click.echo(f"\n{body}")
    command = report.command_line("bench.capacity", sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "capacity.md").write_text(f"`{command}`\n\n{body}\n")
    (RESULTS / "capacity.json").write_text(json.dumps([as_json(r) for r in runs], indent=1))
    click.echo("written: bench/results/capacity.md, capacity.json")
    if publish:
        report.publish("capacity", report.section(command, load_at_start, body), doc=DOC)


if __name__ == "__main__":
    main()

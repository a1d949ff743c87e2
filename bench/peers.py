"""This engine against its peers, in one run on one machine: the upstream executor and Celery.

Run: ``.venv/bin/python -m bench.peers`` (``--help`` for sizes; Celery and Redis come with
the `bench` extra and Debian's `redis-server`, which ``make bench`` installs). Every engine
runs the same jobs, all queued beforehand: sleep ``--sleep`` seconds (100 ms), succeed.

- **this engine**: one `job-executor` at ``--concurrency`` (100) on a local ZooKeeper and
  the job API; the built-in `sleep` action.
- **upstream**: the package's own executor (`nuvla-job-engine`, the `nuvla` extra), one
  process and then four, on the same ZooKeeper, job API and queue, running an action of the
  same shape in upstream's form (bench/support/upstream_sleep.py). It runs one job at a
  time per process, as Nuvla deploys it.
- **Celery**: a Celery 5 worker ``-P gevent -c 100`` on a Redis broker started here on a
  free port (stopped by pid), the task bench/support/celery_tasks.py: without a result
  backend, then with the Redis result backend as configured by default and with
  ``result_backend_thread_safe=True`` (one backend for all greenlets). This engine always
  records each job's state and outcome, so the fair peer is Celery storing results; the
  goal compares against the faster of its two settings.

jobs/s runs from the first start to the last end: the job API's `started` and `updated`
timestamps for the two job engines, the worker's own log lines (`received`, `succeeded`) for
Celery, so no polling adds to what is measured. CPU is read from /proc for every process
involved (engine processes, job API, ZooKeeper, Redis) from the moment the engine is ready
to the last job's end; the same window says what every other process on the machine took
meanwhile (this machine's 2 cores may be shared) and the hypervisor's steal. Each variant
runs ``--rounds`` times, interleaved (upstream once: it is bound by its sleeps, not its
CPU), and the table shows the round of median jobs/s. A quick run: ``--jobs 300
--upstream-jobs 20 --rounds 1``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click
from nuvla.api import Api

from bench import report
from bench.executor import Stack, _jobs, _md_table, _now_iso, _ts, _wait_count
from bench.support.proc import CpuWindow, peak_rss_mb, rss_mb
from bench.support.redis_server import RedisServer
from nuvla_job.localstack.processes import REPO, EngineProcess, executor_process
from tests.support.upstream import upstream_executor

RESULTS = Path(__file__).resolve().parent / "results"
SUPPORT = Path(__file__).resolve().parent / "support"
ADDERS = 8  # client threads queueing the jobs, each with its own session
# The figures the issue measured before this benchmark existed: the machine's CPU per job.
MACHINE_CPU_BEFORE_MS = 7.5


@dataclass
class Run:
    """One engine's run: its jobs, its window and what each process spent."""

    engine: str
    processes: int
    jobs: int
    seconds: float  # first start to last end
    cpu: dict[str, float]  # role -> CPU seconds over the window
    rss_mb: float  # the engine processes' peak resident memory, summed
    servers_rss_mb: float  # the servers' (job API + ZooKeeper, or Redis) resident memory
    others: float  # cores other processes used meanwhile, on average
    steal: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def ms(self, role: str) -> float:
        """CPU milliseconds per job of `role` (nan when the run has no such process)."""
        return self.cpu[role] / self.jobs * 1000 if role in self.cpu else float("nan")

    @property
    def total_ms(self) -> float:
        return sum(self.ms(role) for role in self.cpu if role != "driver")


# -- running engines ----------------------------------------------------------------------


def _wait_ready(processes: list[EngineProcess], text: str, window: CpuWindow) -> None:
    """Wait until every process logged `text`; the window starts at the first, and each
    later one's CPU is taken again when it is ready (its start-up is not its jobs' cost)."""
    pending = list(processes)
    deadline = time.monotonic() + 120
    started = False
    while pending:
        for process in list(pending):
            if text in process.log():
                pending.remove(process)
                if not started:
                    window.start()
                    started = True
                else:
                    window.rebase(process.pid)
            elif process.exited:
                raise RuntimeError(f"{process.module} exited:\n{process.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not logged within 120 s")
        time.sleep(0.01)


def _add_jobs(stack: Stack, count: int, seconds: float, tag: str) -> None:
    body = {"action": "sleep", "payload": json.dumps({"seconds": seconds}), "tags": [tag]}

    def add(api: Api, n: int) -> None:
        for _ in range(n):
            api.add("job", dict(body))

    shares = [count // ADDERS + (1 if i < count % ADDERS else 0) for i in range(ADDERS)]
    clients = [stack.api() for _ in shares]  # logged in one after the other
    with ThreadPoolExecutor(ADDERS) as pool:
        list(pool.map(add, clients, shares))


def job_engine_run(
    stack: Stack,
    engine: str,
    jobs: int,
    seconds: float,
    start: Callable[[], list[EngineProcess]],
    ready: str,
) -> Run:
    """Queue `jobs` sleep jobs, start the engine's processes, time them to the last end."""
    api = stack.api()
    assert stack.api_process is not None and stack.api_process.pid and stack.zk.pid
    tag = f"peers-{engine.replace(' ', '-')}-{time.time_ns()}"
    since = _now_iso()
    _add_jobs(stack, jobs, seconds, tag)
    processes = start()
    try:
        window = CpuWindow(
            {
                "engine": [p.pid for p in processes],
                "job API": [stack.api_process.pid],
                "ZooKeeper": [stack.zk.pid],
            }
        )
        _wait_ready(processes, ready, window)
        # The end is read from the jobs' timestamps, not from when a poll saw it.
        _wait_count(api, tag, "'SUCCESS'", jobs, timeout=jobs * seconds * 2 + 300, since=since)
        window.stop()
        peak = sum(peak_rss_mb(p.pid) for p in processes)
        servers = rss_mb(stack.api_process.pid) + rss_mb(stack.zk.pid)
    finally:
        for process in processes:
            process.close()
    docs = _jobs(api, tag)
    span = max(_ts(d["updated"]) for d in docs) - min(_ts(d["started"]) for d in docs)
    cpu = {role: value for role, value in window.seconds.items() if role != "driver"}
    return Run(engine, len(processes), jobs, span, cpu, peak, servers, window.others, window.steal)


def run_ours(stack: Stack, jobs: int, seconds: float, concurrency: int) -> Run:
    assert stack.api_process is not None
    server = stack.api_process

    def start() -> list[EngineProcess]:
        process = executor_process(
            stack.zk.hosts,
            server.endpoint,
            str(server.credentials_path),
            "--concurrency",
            str(concurrency),
            actions_path=None,
        )
        return [process.start()]

    return job_engine_run(stack, "this engine", jobs, seconds, start, "running up to")


def run_upstream(stack: Stack, jobs: int, seconds: float, processes: int) -> Run:
    assert stack.api_process is not None
    server = stack.api_process

    def start() -> list[EngineProcess]:
        return [
            upstream_executor(
                stack.zk.hosts,
                server.endpoint,
                server.credentials(),
                actions=SUPPORT,
                modules=("upstream_sleep",),
            ).start()
            for _ in range(processes)
        ]

    return job_engine_run(stack, "upstream", jobs, seconds, start, "I am executor")


# -- Celery -------------------------------------------------------------------------------

# The worker's log lines: "[2026-12-02 01:57:06,123: INFO/MainProcess] Task bench.sleep[id]
# received" and "... succeeded in 0.10s: None".
_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[^]]*\] Task bench\.sleep")


def _log_times(text: str, word: str) -> list[float]:
    found = []
    for line in text.splitlines():
        if word in line:
            match = _LOG_LINE.match(line)
            if match:
                found.append(datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


CELERY_VARIANTS = {
    "no result backend": {},
    "Redis result backend, default": {"backend": True},
    "Redis result backend, thread-safe": {"backend": True, "thread_safe": True},
}


def run_celery(jobs: int, seconds: float, concurrency: int, variant: str) -> Run:
    """One Celery worker on a fresh Redis: queue `jobs` tasks, start it, time it."""
    from celery import Celery  # the `bench` extra

    options = CELERY_VARIANTS[variant]
    with RedisServer() as redis:
        # The tasks go out from a client without a result backend: whether results are
        # stored is the worker's setting, and a waiting client would add its own load.
        client = Celery("bench-client", broker=redis.url)
        with client.producer_or_acquire() as producer:
            for _ in range(jobs):
                client.send_task("bench.sleep", args=(seconds,), producer=producer)
        env = {
            "PYTHONPATH": str(REPO),
            "BENCH_BROKER": redis.url,
            "BENCH_BACKEND": redis.url if options.get("backend") else "",
            "BENCH_THREAD_SAFE": "1" if options.get("thread_safe") else "",
        }
        args = ["-A", "bench.support.celery_tasks", "worker", "-P", "gevent"]
        args += ["-c", str(concurrency), "--loglevel", "INFO", "--hostname", "bench@%h"]
        worker = EngineProcess(
            "celery", args, env=env, program=[sys.executable, "-m", "celery"]
        ).start()
        try:
            window = CpuWindow({"engine": [worker.pid], "Redis": [redis.pid]})
            _wait_ready([worker], "ready.", window)
            deadline = time.monotonic() + jobs * seconds * 2 + 300
            while worker.log().count("succeeded in") < jobs:
                if worker.exited or time.monotonic() > deadline:
                    raise RuntimeError(f"Celery did not run {jobs} tasks:\n{worker.log()[-3000:]}")
                time.sleep(0.2)
            window.stop()
            peak = peak_rss_mb(worker.pid)
            servers = rss_mb(redis.pid)
            text = worker.log()
        finally:
            worker.close()
    span = max(_log_times(text, "succeeded in")) - min(_log_times(text, "received"))
    cpu = {role: value for role, value in window.seconds.items() if role != "driver"}
    return Run(f"Celery, {variant}", 1, jobs, span, cpu, peak, servers, window.others, window.steal)


def celery_available() -> str | None:
    """Why the Celery peer cannot run here, or None."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        return "Celery is not installed: .venv/bin/pip install -e '.[bench]' (make bench does)"
    if RedisServer().binary is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    return None


# -- the table ----------------------------------------------------------------------------

ROLES = ("engine", "job API", "ZooKeeper", "Redis")


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def table(runs: list[Run], concurrency: int) -> str:
    mine = runs[0]
    rows = []
    for run in runs:
        label = run.engine
        if run.engine == "this engine":
            label = f"this engine, --concurrency {concurrency}"
        elif run.engine == "upstream":
            label = f"upstream executor (nuvla-job-engine), {run.processes} process" + (
                "es" if run.processes > 1 else ""
            )
        else:
            label = f"{run.engine}, -P gevent -c {concurrency}"
        rows.append(
            (
                label,
                f"{run.rate:,.1f}",
                *(_ms(run.ms(role)) for role in ROLES),
                _ms(run.total_ms),
                f"{run.rss_mb:.0f} / {run.servers_rss_mb:.0f}",
                f"{mine.rate / run.rate:.1f}x",
                f"{run.total_ms / mine.total_ms:.2f}x",
                f"{run.others:.2f} / {run.steal:.2f}",
            )
        )
    header = (
        "engine (one process unless said)",
        "jobs/s",
        "CPU ms/job: engine",
        "job API",
        "ZooKeeper",
        "Redis",
        "all",
        "RSS MB: engine / servers",
        "this engine's jobs/s ÷ its",
        "its CPU/job ÷ this engine's",
        "other processes / steal (cores)",
    )
    return _md_table(header, rows)


def goals(by_name: dict[str, Run]) -> list[str]:
    mine = by_name["this engine"]
    lines = []

    def line(goal: str, met: bool, detail: str) -> None:
        lines.append(f"- {goal}: **{'met' if met else 'missed'}** ({detail})")

    up = by_name.get("upstream 1")
    if up is not None:
        ratio = mine.rate / up.rate
        line("≥ 50x the upstream executor, one process each", ratio >= 50, f"{ratio:.1f}x")
        cpu = up.ms("engine") / mine.ms("engine")
        line(
            "executor CPU per job ≤ 1/10 of upstream's",
            cpu >= 10,
            f"{mine.ms('engine'):.2f} ms against {up.ms('engine'):.2f} ms: 1/{cpu:.1f}",
        )
    backed = [r for name, r in by_name.items() if name.startswith("Celery, Redis")]
    if backed:
        fastest = max(backed, key=lambda r: r.rate)
        ratio = mine.rate / fastest.rate
        line(
            "≥ 1.5x Celery gevent c=100 with its result backend (the faster setting)",
            ratio >= 1.5,
            f"{ratio:.2f}x {fastest.engine.removeprefix('Celery, ')}",
        )
    bare = by_name.get("Celery, no result backend")
    if bare is not None:
        ratio = mine.rate / bare.rate
        line("ahead of Celery without a result backend", ratio > 1, f"{ratio:.2f}x")
    line(
        f"the machine's CPU per job halved from {MACHINE_CPU_BEFORE_MS} ms",
        mine.total_ms <= MACHINE_CPU_BEFORE_MS / 2,
        f"{mine.total_ms:.2f} ms: engine, job API and ZooKeeper",
    )
    return lines


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs for this engine and Celery.")
@click.option(
    "--upstream-jobs",
    default=100,
    show_default=True,
    help="Jobs per upstream executor process (it runs one at a time).",
)
@click.option("--concurrency", default=100, show_default=True, help="Ours and Celery's -c.")
@click.option(
    "--sleep", "seconds", default=0.1, show_default=True, help="Each job sleeps this long."
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    help="Rounds of this engine and of Celery (interleaved); the median is shown.",
)
@click.option("--no-celery", is_flag=True, help="Leave Celery out (no Redis here).")
@click.option("--publish", is_flag=True, help="Also update docs/benchmarks.md.")
def main(
    jobs: int,
    upstream_jobs: int,
    concurrency: int,
    seconds: float,
    rounds: int,
    no_celery: bool,
    publish: bool,
) -> None:
    """This engine, the upstream executor and Celery on the same jobs; print the table."""
    if min(jobs, upstream_jobs, concurrency, rounds) < 1 or seconds < 0:
        raise click.UsageError("sizes and --rounds must be positive, --sleep not negative")
    missing = None if no_celery else celery_available()
    if missing:
        raise click.UsageError(f"{missing}; or --no-celery")
    load_at_start = report.load_average()
    results: dict[str, list[Run]] = {}

    def record(name: str, run: Run) -> None:
        results.setdefault(name, []).append(run)
        click.echo(
            f"{name}: {run.jobs} jobs, {run.rate:,.1f} jobs/s, {run.total_ms:.2f} ms CPU/job "
            f"(engine {run.ms('engine'):.2f}); others {run.others:.2f} cores",
            err=False,
        )

    with Stack() as stack:
        for round_ in range(rounds):
            record("this engine", run_ours(stack, jobs, seconds, concurrency))
            if round_ == 0:
                record("upstream 1", run_upstream(stack, upstream_jobs, seconds, 1))
                record("upstream 4", run_upstream(stack, upstream_jobs * 4, seconds, 4))
            if not no_celery:
                for variant in CELERY_VARIANTS:
                    record(f"Celery, {variant}", run_celery(jobs, seconds, concurrency, variant))
    by_name = {name: median_run(runs) for name, runs in results.items()}
    runs = list(by_name.values())
    spread = "; ".join(
        f"{name} {', '.join(f'{r.rate:,.0f}' for r in rs)}"
        for name, rs in results.items()
        if len(rs) > 1
    )
    others = [r.others for rs in results.values() for r in rs]
    text = "\n".join(
        [
            f"Jobs of {seconds * 1000:g} ms, all queued beforehand; {jobs} for this engine and "
            f"each Celery worker, {upstream_jobs} per upstream process; the median of "
            f"{rounds} round(s) by jobs/s (upstream: one).",
            "",
            table(runs, concurrency),
            "",
            *goals(by_name),
            "",
            f"- every round's jobs/s: {spread or 'one round'}",
            f"- the machine: other processes used {statistics.median(others):.2f} cores "
            f"(median over the runs; at most {max(others):.2f}) of its {os.cpu_count()}, "
            "measured from /proc/stat against the CPU of the processes above",
        ]
    )
    click.echo(f"\n{text}\n")
    command = report.command_line("bench.peers", sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.md").write_text(
        f"# Peers ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n`{command}`\n\n{text}\n"
    )
    click.echo("written: bench/results/peers.md")
    if publish:
        report.publish("peers", report.section(command, load_at_start, text))


if __name__ == "__main__":
    main()

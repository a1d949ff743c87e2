"""What waiting for results costs: 1,000 jobs waited for by 1,000 waiters through
nuvla_job.client, its long poll against naive polling every 100 ms, in the same run.

Run: ``.venv/bin/python -m bench.waiters`` (``--help`` for sizes). Everything is real: a
local ZooKeeper, the job API, one `job-executor` at ``--concurrency`` 1,000 (every job runs
at once). Each phase runs in a process of its own (bench/support/waiters_worker.py): it
submits ``--jobs`` `sleep` jobs of ``--min-seconds`` plus up to ``--spread`` seconds, then
waits for every one of them from one waiter each:

- **long poll**, threads and greenlets: ``handle.wait()`` (one ``POST /api/job/wait`` in
  flight per client, answered when one of its jobs changes);
- **polling every 100 ms**, threads and greenlets: ``handle.refresh()`` then a 100 ms sleep
  until the job is final (the cost the issue rules out), on kept-alive connections;
- **no waiters**: the same jobs with nobody waiting (one search a second), the job API's
  cost of the jobs alone, which the others are compared with.

Between the phase's ``WAITING`` and ``DONE`` the driver counts the job API's requests to the
wait route (``nuvla_job_http_requests_total{route="/api/job/wait"}`` of its /metrics: both
kinds of waiter use only that route, the executor never does, so the counts are exact) and
the CPU of the job API, the waiters' process and the executor (/proc). The latency is a
job's final write (its ``updated``, the job API's clock, on this machine) to its waiter's
return; a job that ended before the waiters started is left out of it and counted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import requests

from bench import report
from bench.executor import _md_table, pct
from bench.support.proc import CpuWindow
from nuvla_job.localstack.jobapi import JobApiProcess
from nuvla_job.localstack.processes import EngineProcess, child_env, executor_process
from nuvla_job.localstack.zookeeper import ZooKeeperServer

RESULTS = Path(__file__).resolve().parent / "results"
POLL_INTERVAL = 0.1  # the polling waiters' pause (the worker's default --interval)
WAIT_ROUTE = "/api/job/wait"
# (mode, runtime) of each phase, in the order they run; the first is the no-waiter baseline.
PHASES = (
    ("none", "threads"),
    ("longpoll", "threads"),
    ("longpoll", "greenlets"),
    ("poll", "threads"),
    ("poll", "greenlets"),
)
TITLES = {
    ("none", "threads"): "no waiters",
    ("longpoll", "threads"): "long poll, threads",
    ("longpoll", "greenlets"): "long poll, greenlets",
    ("poll", "threads"): "polling 100 ms, threads",
    ("poll", "greenlets"): "polling 100 ms, greenlets",
}
_COUNTER = re.compile(r"^nuvla_job_http_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def wait_requests(endpoint: str) -> float:
    """The job API's count of answered requests to the wait route, all methods and statuses."""
    text = requests.get(f"{endpoint}/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        match = _COUNTER.match(line)
        if match and f'route="{WAIT_ROUTE}"' in match.group("labels"):
            total += float(match.group("value"))
    return total


@dataclass
class Phase:
    mode: str
    runtime: str
    requests: float = 0.0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by role
    others: float = 0.0
    steal: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms, sorted
    early: int = 0

    @property
    def title(self) -> str:
        return TITLES[(self.mode, self.runtime)]

    def share(self, role: str) -> float:
        """% of one core over the window."""
        return self.cpu[role] / self.wall * 100


def run_phase(
    mode: str,
    runtime: str,
    api: JobApiProcess,
    executor: EngineProcess,
    options: list[str],
) -> Phase:
    assert api.pid is not None
    phase = Phase(mode, runtime)
    with tempfile.TemporaryDirectory(prefix="bench-waiters-") as folder:
        out = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "bench.support.waiters_worker",
            mode,
            runtime,
            str(api.credentials_path),
            str(out),
            *options,
        ]
        worker = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=Path(__file__).parents[1],
        )
        try:
            assert worker.stdout is not None
            window = CpuWindow(
                {"job API": [api.pid], "waiters": [worker.pid], "executor": [executor.pid]}
            )
            for line in worker.stdout:
                if line.strip() == "WAITING":
                    before = wait_requests(api.endpoint)
                    window.start()
                elif line.strip() == "DONE":
                    window.stop()
                    phase.requests = wait_requests(api.endpoint) - before
                    break
            if worker.wait(120) != 0:
                raise RuntimeError(f"the {mode}/{runtime} phase failed ({worker.returncode})")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        result = json.loads(out.read_text())
    phase.wall, phase.cpu = window.wall, window.seconds
    phase.others, phase.steal = window.others, window.steal
    began = result["began"]
    for job_id, returned in result["returned"].items():
        ended = result["ended"][job_id]
        if ended < began:
            phase.early += 1
        else:
            phase.latencies.append((returned - ended) * 1000)
    phase.latencies.sort()
    return phase


def table(phases: list[Phase], jobs: int) -> str:
    base = phases[0]
    waiting = phases[1:]
    ordered = [*waiting, base]  # the columns' order
    header = ("measure", *(p.title for p in waiting), base.title)

    def ratio(value: float, reference: float) -> str:
        return f"{value / reference:,.0f}×" if reference > 0 else "–"

    def per_request(p: Phase) -> float:
        """ms of the job API's CPU per wait request, beyond its CPU with no waiters."""
        beyond = p.cpu["job API"] - base.share("job API") * p.wall / 100
        return beyond / p.requests * 1000

    def latency(p: Phase, q: float) -> str:
        return f"{pct(p.latencies, q):,.0f}" if p.latencies else "–"

    rows = [
        ("window: waiters start to last return (s)", *(f"{p.wall:.1f}" for p in ordered)),
        ("wait requests (exact)", *(f"{p.requests:,.0f}" for p in waiting), "0"),
        ("wait requests per second", *(f"{p.requests / p.wall:,.1f}" for p in waiting), "0"),
        (
            "wait requests per second asked for",
            *(f"{jobs / POLL_INTERVAL:,.0f}" if p.mode == "poll" else "–" for p in waiting),
            "",
        ),
        (
            "per waiter per second",
            *(f"{p.requests / p.wall / jobs:.3f}" for p in waiting),
            "",
        ),
        (
            "job API CPU, % of one core",
            *(f"{p.share('job API'):.0f}" for p in waiting),
            f"{base.share('job API'):.0f}",
        ),
        (
            "job API CPU beyond no waiters, % of one core",
            *(f"{p.share('job API') - base.share('job API'):.0f}" for p in waiting),
            "",
        ),
        (
            "job API CPU beyond no waiters per wait request (ms)",
            *(f"{per_request(p):.2f}" if p.requests else "–" for p in waiting),
            "",
        ),
        (
            "waiters' process CPU, % of one core",
            *(f"{p.share('waiters'):.0f}" for p in waiting),
            f"{base.share('waiters'):.0f}",
        ),
        (
            "executor CPU, % of one core",
            *(f"{p.share('executor'):.0f}" for p in ordered),
        ),
        ("latency job end → return, p50 (ms)", *(latency(p, 50) for p in waiting), ""),
        ("latency p99 (ms)", *(latency(p, 99) for p in waiting), ""),
        (
            "latency max (ms)",
            *(f"{p.latencies[-1]:,.0f}" if p.latencies else "–" for p in waiting),
            "",
        ),
        (
            "jobs ended before the waiters started (not in the latency)",
            *(str(p.early) for p in waiting),
            "",
        ),
        (
            "other processes on the machine, cores (steal)",
            *(f"{p.others:.2f} ({p.steal:.2f})" for p in ordered),
        ),
    ]
    rendered = _md_table(header, rows)
    by = {(p.mode, p.runtime): p for p in phases}
    ratios = []
    for runtime in ("threads", "greenlets"):
        long, poll = by.get(("longpoll", runtime)), by.get(("poll", runtime))
        if long is None or poll is None:
            continue
        extra_long = long.share("job API") - base.share("job API")
        extra_poll = poll.share("job API") - base.share("job API")
        ratios.append(
            f"- {runtime}: polling every 100 ms sent {ratio(poll.requests, long.requests)} the "
            f"wait requests of the long poll ({poll.requests:,.0f} against "
            f"{long.requests:,.0f}), and cost the job API {extra_poll:.0f} % of a core beyond "
            f"the jobs' own against {extra_long:.0f} %"
            f"{f' ({ratio(extra_poll, extra_long)})' if extra_long >= 1 else ''}; it asked for "
            f"{jobs / POLL_INTERVAL:,.0f} requests a second and got "
            f"{poll.requests / poll.wall:,.0f}"
            f" (the waiters' process was the limit at {poll.share('waiters'):.0f} % of a core), "
            f"so its real cost, had the job API been asked as often as the waiters meant to, is "
            f"higher than shown"
        )
    return rendered + "\n\n" + "\n".join(ratios)


@click.command()
@click.option("--jobs", default=1000, show_default=True, help="Jobs, and waiters, per phase.")
@click.option("--min-seconds", default=5.0, show_default=True, help="Shortest job (s).")
@click.option(
    "--spread", default=10.0, show_default=True, help="Jobs last up to this much more (s)."
)
@click.option(
    "--phases",
    default=",".join(f"{m}/{r}" for m, r in PHASES),
    show_default=True,
    help="MODE/RUNTIME phases to run; the first is the no-waiter baseline.",
)
@click.option("--publish", is_flag=True, help="Also update docs/benchmarks.md.")
def main(jobs: int, min_seconds: float, spread: float, phases: str, publish: bool) -> None:
    """Measure the job API's cost of 1,000 waiters: the client's long poll against polling."""
    chosen = [tuple(p.split("/")) for p in phases.split(",") if p]
    if not chosen or chosen[0] != ("none", "threads") or any(p not in PHASES for p in chosen):
        raise click.UsageError(
            f"--phases: MODE/RUNTIME among {', '.join(f'{m}/{r}' for m, r in PHASES)}, "
            "starting with none/threads"
        )
    if jobs < 1 or min_seconds <= 0 or spread < 0:
        raise click.UsageError("sizes must be positive")
    load_at_start = report.load_average()
    options = ["--jobs", str(jobs), "--min-seconds", str(min_seconds), "--spread", str(spread)]
    results: list[Phase] = []
    with (
        ZooKeeperServer() as zookeeper,
        JobApiProcess(zookeeper.hosts, "--max-connections", str(jobs + 500)) as api,
    ):
        executor = executor_process(
            zookeeper.hosts,
            api.endpoint,
            str(api.credentials_path),
            "--concurrency",
            str(max(jobs, 1)),
            actions_path=None,
        ).start()
        try:
            executor.wait_for_log("running up to")
            for mode, runtime in chosen:
                phase = run_phase(mode, runtime, api, executor, options)
                click.echo(
                    f"{phase.title}: {phase.requests:,.0f} wait requests in {phase.wall:.1f} s, "
                    f"job API {phase.share('job API'):.0f} % of a core"
                )
                results.append(phase)
        finally:
            executor.close()
    notes = (
        f"- {jobs} `sleep` jobs per phase of {min_seconds:g}–{min_seconds + spread:g} s, all "
        f"running at once (executor concurrency {jobs}), one waiter per job, all in one "
        f"process with one `Client`; requests: the job API's own count for `{WAIT_ROUTE}` "
        f"between the waiters' start and the last return (polling uses `refresh()`, the same "
        f"route); CPU from /proc over that window\n"
        f"- the machine is shared with other work (the last row): CPU shares and latencies "
        f"move with it, the request counts do not"
    )
    tables = f"{notes}\n\n{table(results, jobs)}\n"
    click.echo(f"\n{tables}")
    command = report.command_line("bench.waiters", sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "waiters.md").write_text(
        f"# Waiters ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"`{command}`\n\n{tables}"
    )
    click.echo("written: bench/results/waiters.md")
    if publish:
        report.publish("waiters", report.section(command, load_at_start, tables))


if __name__ == "__main__":
    main()

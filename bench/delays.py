"""Delayed jobs: how late they start, what the scheduler costs, and the executor meanwhile.

Run: ``.venv/bin/python -m bench.delays`` (``--help`` for sizes). Everything is real: a local
ZooKeeper, the job API, one `job-executor` (concurrency 100) and one `job-distributor` that
runs only the scheduler (so its CPU is the scheduler's), on a 1 s tick.

1. **Baseline**, in the same run: a burst of ``--burst`` undelayed jobs (the built-in
   ``sleep`` action, 0 s) on the idle stack: the executor's throughput from the first start
   to the last end, and the scheduler's CPU with nothing due.
2. **Delayed**: ``--jobs`` jobs, each added with a ``not-before`` of ``--min-delay`` to
   ``--max-delay`` seconds (uniform) after its own add; halfway through their due window the
   same burst of undelayed jobs again. The executor's throughput over that burst (its jobs
   and the delayed ones run meanwhile) is compared with the baseline's.

Lateness is a job's ``started`` (the job API's timestamp of the RUNNING write) minus its
``not-before``; a negative one (started early) is counted apart, and must be none. The
delayed jobs run at priority 500 and the bursts at 999, so that a due job's entry is taken
ahead of the burst's backlog: the lateness measured is the scheduler's and the take's, not
the depth of a queue the burst filled. Times come from the job API's own timestamps, so
polling adds nothing to what is measured.
"""

from __future__ import annotations

import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from nuvla.api import Api

from bench import report
from bench.distributor import cpu_seconds
from bench.executor import Stack, _md_table, _now_iso, _ts, _wait_count, pct
from nuvla_job.localstack.processes import EngineProcess
from nuvla_job.timeutil import format_time

RESULTS = Path(__file__).resolve().parent / "results"
ADDERS = 8  # client threads adding jobs, each with its own session
DELAYED_PRIORITY = 500
TICK_S = 1.0


def _jobs(api: Api, tag: str, since: str) -> list[dict]:
    """The jobs of `tag`, on the (state, created) index (see bench.executor._wait_count)."""
    found, first = [], 1
    query = f"state='SUCCESS' and created>='{since}' and tags='{tag}'"
    while True:
        page = api.search(
            "job", filter=query, first=first, last=first + 999, select="id,started,updated"
        )
        found += [r.data for r in page.resources]
        if len(found) >= page.count or not page.resources:
            return found
        first += 1000


def _add_parallel(stack: Stack, bodies: list[dict]) -> list[str]:
    """Add the bodies from ADDERS threads; returns the ids in the order of `bodies`."""
    ids: list[str | None] = [None] * len(bodies)
    assert stack.api_process is not None
    # One login shared by every client (logins are throttled), one session each.
    cookies = stack.api().session.cookies

    def add_slice(index: int) -> None:
        assert stack.api_process is not None
        api = stack.api_process.api()
        api.session.cookies.update(cookies)
        for position in range(index, len(bodies), ADDERS):
            body = bodies[position]
            if "delay" in body:
                delay = body.pop("delay")
                moment = datetime.now(UTC) + timedelta(seconds=delay)
                body["not-before"] = format_time(moment)
            ids[position] = api.add("job", body).data["resource-id"]

    with ThreadPoolExecutor(ADDERS) as pool:
        list(pool.map(add_slice, range(ADDERS)))
    return [i for i in ids if i is not None]


def _scheduler(stack: Stack) -> EngineProcess:
    assert stack.api_process is not None
    args = [
        "--zk-hosts",
        stack.zk.hosts,
        "--api-url",
        stack.api_process.endpoint,
        "--api-credentials-file",
        str(stack.api_process.credentials_path),
        "--distribution-include",
        "scheduler",
        "--name",
        "bench-scheduler",
    ]
    process = EngineProcess("nuvla_job.cli.distributor", args).start()
    process.wait_for_log("leader of scheduler:")
    return process


def burst(stack: Stack, jobs: int) -> tuple[float, float]:
    """Add `jobs` undelayed jobs at once; (first start, last end) of them, epoch seconds."""
    api = stack.api()
    tag = f"burst-{time.time_ns()}"
    since = _now_iso()
    body = {"action": "sleep", "payload": json.dumps({"seconds": 0}), "tags": [tag]}
    _add_parallel(stack, [dict(body) for _ in range(jobs)])
    _wait_count(api, tag, "'SUCCESS'", jobs, timeout=jobs / 20 + 120, since=since)
    docs = _jobs(api, tag, since)
    return min(_ts(d["started"]) for d in docs), max(_ts(d["updated"]) for d in docs)


class CpuWindow:
    """CPU of processes between `start` and `stop`, in % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.began = time.time()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.time() - self.began
        return {
            name: (cpu_seconds(pid) - self.before[name]) / elapsed * 100
            for name, pid in self.pids.items()
        }


@click.command()
@click.option("--jobs", default=10_000, show_default=True, help="Delayed jobs.")
@click.option("--min-delay", default=5.0, show_default=True, help="Shortest delay (s).")
@click.option("--max-delay", default=60.0, show_default=True, help="Longest delay (s).")
@click.option(
    "--burst", "burst_jobs", default=3000, show_default=True, help="Undelayed jobs per burst."
)
@click.option("--seed", default=14, show_default=True, help="Seed of the delays.")
@click.option("--publish", is_flag=True, help="Also update docs/benchmarks.md.")
def main(
    jobs: int, min_delay: float, max_delay: float, burst_jobs: int, seed: int, publish: bool
) -> None:
    """Measure delayed jobs' lateness, the scheduler's CPU and the executor's throughput."""
    if jobs < 1 or burst_jobs < 1 or not 0 < min_delay <= max_delay:
        raise click.UsageError("sizes must be positive and 0 < --min-delay <= --max-delay")
    load_at_start = report.load_average()
    rng = random.Random(seed)
    with Stack() as stack:
        assert stack.api_process is not None and stack.api_process.pid is not None
        executor = stack.executor(100)
        scheduler = _scheduler(stack)
        cpu = CpuWindow(
            {
                "scheduler": scheduler.pid,
                "job API": stack.api_process.pid,
                "executor": executor.pid,
            }
        )
        try:
            burst(stack, min(burst_jobs, 300))  # warm-up (connections, first imports): not measured
            # 1. The baseline: the burst alone, the scheduler idle.
            cpu.start()
            began, ended = burst(stack, burst_jobs)
            base_rate = burst_jobs / (ended - began)
            base_cpu = cpu.stop()
            click.echo(f"baseline burst: {base_rate:,.0f} jobs/s; CPU {base_cpu}")
            cpu.start()
            time.sleep(10)
            idle_cpu = cpu.stop()

            # 2. The delayed jobs, and the burst again halfway through their due window.
            api = stack.api()
            tag = f"delayed-{time.time_ns()}"
            since = _now_iso()
            bodies = [
                {
                    "action": "sleep",
                    "payload": json.dumps({"seconds": 0}),
                    "priority": DELAYED_PRIORITY,
                    "tags": [tag],
                    "delay": rng.uniform(min_delay, max_delay),
                }
                for _ in range(jobs)
            ]
            added_at = time.time()
            ids = _add_parallel(stack, bodies)
            added_in = time.time() - added_at
            due = {i: b["not-before"] for i, b in zip(ids, bodies, strict=True)}
            click.echo(f"{jobs} delayed jobs added in {added_in:.1f} s")
            first_due = min(_ts(t) for t in due.values())
            last_due = max(_ts(t) for t in due.values())
            cpu.start()
            middle = (first_due + last_due) / 2
            time.sleep(max(0.0, middle - time.time()))
            window_of_burst = burst(stack, burst_jobs)
            _wait_count(
                api, tag, "'SUCCESS'", jobs, timeout=max_delay + added_in + 300, since=since
            )
            due_cpu = cpu.stop()
            delayed_docs = _jobs(api, tag, since)
            started = {d["id"]: _ts(d["started"]) for d in delayed_docs}
        finally:
            scheduler.stop()
            executor.stop()
    late = sorted((started[i] - _ts(t)) * 1000 for i, t in due.items())
    early = sum(1 for value in late if value < 0)
    # The executor's throughput over the burst: the burst's jobs and the delayed ones it ran
    # meanwhile (those, due then, are taken first: priority 500).
    began, ended = window_of_burst
    rate = burst_jobs / (ended - began)
    alongside = sum(1 for d in delayed_docs if began <= _ts(d["updated"]) <= ended)
    total = (burst_jobs + alongside) / (ended - began)
    rows = [
        ("lateness p50 (ms)", f"{pct(late, 50):.0f}", "", ""),
        (
            "lateness p99 (ms)",
            f"{pct(late, 99):.0f}",
            "",
            f"< {(1 + TICK_S) * 1000:.0f} (1 s + one tick)",
        ),
        ("lateness max (ms)", f"{late[-1]:.0f}", "", ""),
        ("jobs started before their time", str(early), "", "0"),
        (
            f"executor throughput over a burst of {burst_jobs} (jobs/s, all jobs)",
            f"{total:,.0f} ({alongside} delayed)",
            f"{base_rate:,.0f}",
            "no regression",
        ),
        (
            "of which the burst's own jobs (jobs/s)",
            f"{rate:,.0f}",
            f"{base_rate:,.0f}",
            "",
        ),
        (
            "scheduler CPU, % of one core",
            f"{due_cpu['scheduler']:.1f}",
            f"{idle_cpu['scheduler']:.1f} (nothing due)",
            "",
        ),
        (
            "job API CPU, % of one core",
            f"{due_cpu['job API']:.1f}",
            f"{idle_cpu['job API']:.1f} (nothing due)",
            "",
        ),
        (
            "executor CPU, % of one core",
            f"{due_cpu['executor']:.1f}",
            f"{idle_cpu['executor']:.1f} (nothing due)",
            "",
        ),
    ]
    window = last_due - first_due
    notes = (
        f"- {jobs} jobs, each due {min_delay:g}–{max_delay:g} s after its add (added in "
        f"{added_in:.1f} s by {ADDERS} clients), so due over {window:.0f} s, about "
        f"{jobs / max(window, 1):.0f} a second; scheduler tick {TICK_S:g} s, batches of 1,000\n"
        f"- CPU columns: the delayed run over its due window (bursts included) against the "
        f"stack idle for 10 s; the scheduler is a `job-distributor` running only it\n"
        f"- throughput: the same burst of undelayed `sleep` jobs (0 s) alone (baseline) and "
        f"halfway through the due window, from its first start to its last end, counting the "
        f"delayed jobs that ended meanwhile"
    )
    table = _md_table(("measure", "delayed run", "baseline (same run)", "goal"), rows)
    tables = f"{notes}\n\n{table}\n"
    click.echo(f"\n{tables}")
    command = report.command_line("bench.delays", sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "delays.md").write_text(
        f"# Delayed jobs ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"`{command}`\n\n{tables}"
    )
    click.echo("written: bench/results/delays.md")
    if publish:
        report.publish("delays", report.section(command, load_at_start, tables))


if __name__ == "__main__":
    main()

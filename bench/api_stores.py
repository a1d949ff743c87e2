"""The job API benchmark on both stores: mixed add/get/edit ops/s from C clients and the
QUEUED search at N jobs, on SQLite (one job API) and on PostgreSQL (one or two replicas).

    .venv/bin/python -m bench.api --db both [--replicas 2] [--jobs N] [--seconds S] [--publish]
    .venv/bin/python -m bench.api_stores [...]    (the same: --db both --replicas 2)

The jobs are bench.api's (97% final, 2% QUEUED, 1% RUNNING), seeded once into the cached
SQLite file; PostgreSQL (a throw-away server, nuvla_job/localstack/postgres.py) is filled
from that file through the store seam (nuvla_job/api/migrate.py, batches of insert_many),
then vacuumed and analysed, as an operator would after a bulk load. With two replicas the
clients alternate between the two job APIs. Every process started is stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import api as base
from bench import report as publishing

REPORT = base.RESULTS / "api-stores.md"
PROFILE = base.RESULTS / "api-stores-profile.txt"
SECTION = "api_stores"
FILL_BATCH = 5000


@dataclass
class Run:
    """One configuration measured."""

    store: str
    replicas: int
    fill_seconds: float
    search: list[float]  # ms
    queued: int
    baseline: base.PhaseResult
    mixed: base.PhaseResult
    api_cpu: float  # cores, every replica together, over warm-up and window of the mix
    profile: list[tuple[float, str]] | None = None  # --profile: the first replica's

    def row(self) -> list[str]:
        mixed = self.mixed
        rate = mixed.rate()
        lat = mixed.all_latencies()
        return [
            self.store,
            str(self.replicas),
            base._fmt(rate, 0),
            base._fmt(self.baseline.rate(), 0),
            base._fmt(base.percentile(lat, 50)),
            base._fmt(base.percentile(lat, 99)),
            str(mixed.error_count()),
            base._fmt(self.api_cpu, 2),
            base._fmt(self.api_cpu * 1000 / rate if rate else float("nan"), 2),
            base._fmt(mixed.other_cpu, 2),
            base._fmt(base.percentile(self.search, 50), 2),
            base._fmt(base.percentile(self.search, 95), 2),
        ]


HEADER = [
    "store",
    "replicas",
    "mixed ops/s",
    "GET cep/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "job API cores",
    "job API ms/op",
    "other cores",
    "search p50 ms",
    "search p95 ms",
]


def fill_postgres(sqlite_path: Path, url: str) -> float:
    """The seeded jobs into the PostgreSQL database at `url`; returns the seconds taken."""
    from nuvla_job.api.migrate import migrate
    from nuvla_job.api.postgres import PostgresStore
    from nuvla_job.api.sqlite import SqliteStore

    started = time.perf_counter()
    source, destination = SqliteStore(sqlite_path), PostgresStore(url)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 10 or done == total:
            last[0] = time.monotonic()
            rate = done / (time.perf_counter() - started)
            print(f"  filled {done:,} / {total:,} jobs ({rate:,.0f}/s)", flush=True)

    try:
        report = migrate(source, destination, FILL_BATCH, progress)
    finally:
        source.close()
        destination.close()
    if not report.complete:
        raise RuntimeError(f"PostgreSQL holds {report.destination_jobs} of {report.source_jobs}")
    import psycopg

    # After a bulk load: the visibility map (index-only counts) and the planner's statistics.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"VACUUM ANALYZE job")
    return time.perf_counter() - started


def api_search(api: Any, calls: int) -> tuple[list[float], int]:
    def call() -> None:
        result = api.search(
            "job", filter=base.SEARCH_FILTER, orderby=base.SEARCH_ORDER, last=base.SEARCH_LAST
        )
        states = {r.data["state"] for r in result.resources}
        if states - {"QUEUED"} or len(result.resources) != min(base.SEARCH_LAST, result.count):
            raise AssertionError(f"unexpected search answer: count {result.count}, {states}")

    samples = base.time_calls(call, calls, warmup=10)
    return samples, api.search("job", filter=base.SEARCH_FILTER, last=0).count


def measure(
    args: argparse.Namespace,
    store: str,
    replicas: int,
    seed: base.SeedInfo,
    zk_hosts: str,
    zk_pid: int,
    db_url: str | None,
    fill_seconds: float,
    keys: dict[str, dict[str, str]],
) -> Run:
    from nuvla_job.localstack.jobapi import JobApiProcess

    servers: list[JobApiProcess] = []
    loaders: list[base.LoadProcess] = []
    try:
        for _ in range(replicas):
            server = JobApiProcess(zk_hosts, "--log-level", "WARNING", start_timeout=120, db=db_url)
            servers.append(server)
            if db_url is None:
                shutil.copyfile(seed.path, server.db)
            server.start()
        first = servers[0]
        # The admin key is written at a database's first start only: kept for later runs.
        if first.credentials_path.exists():
            keys[store] = first.credentials()
        creds = keys[store]
        known = base.sample_ids(seed.path, args.jobs, 2000)
        print(f"{store} x{replicas}: search ({args.search_calls} calls) ...", flush=True)
        admin = first.api()
        if admin.login_apikey(creds["key"], creds["secret"]).status_code != 201:
            raise RuntimeError("the admin key does not log in")
        search, queued = api_search(admin, args.search_calls)
        share, extra = divmod(args.clients, args.procs)
        for index in range(args.procs):
            loaders.append(
                base.LoadProcess(
                    {
                        "endpoint": first.endpoint,
                        "endpoints": [s.endpoint for s in servers],
                        "key": creds["key"],
                        "secret": creds["secret"],
                        "clients": share + (1 if index < extra else 0),
                        "known_ids": known,
                        "seed": index,
                    }
                )
            )
        for loader in loaders:
            if not loader.receive().get("ready"):
                raise RuntimeError("a load process could not log in")
        phases = {}
        pids = [s.pid for s in servers]
        assert all(pids)
        for phase in ("cloud-entry-point", "mixed"):
            base.wait_until_quiet(args.quiet_wait)
            print(f"{store} x{replicas}: {phase}, {args.clients} clients ...", flush=True)
            before = sum(base._cpu_seconds(p) for p in pids if p)
            began = time.perf_counter()
            profile_to = PROFILE if args.profile and phase == "mixed" else None
            if profile_to is not None:
                profile_to.unlink(missing_ok=True)
            phases[phase] = base.run_phase(
                loaders, phase, (pids[0] or 0, zk_pid), args.warmup, args.seconds, profile_to
            )
            cores = (sum(base._cpu_seconds(p) for p in pids if p) - before) / (
                time.perf_counter() - began
            )
            if any(s.pid is None for s in servers):
                raise RuntimeError(f"a job API stopped during {phase}")
        # The other replicas' CPU counts as the job API's, not as "others".
        mixed = phases["mixed"]
        mixed.server_cpu = cores
        profile = (
            base.summarize_profile(PROFILE, top=25) if args.profile and PROFILE.exists() else None
        )
        return Run(
            store,
            replicas,
            fill_seconds,
            search,
            queued,
            phases["cloud-entry-point"],
            mixed,
            cores,
            profile,
        )
    finally:
        for loader in loaders:
            loader.close()
        for server in servers:
            server.close()


def markdown(runs: list[Run], args: argparse.Namespace, postgres_version: str) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "| --- |" + " ---: |" * (len(HEADER) - 1),
        *("| " + " | ".join(r.row()) + " |" for r in runs),
        "",
        f"- {args.jobs:,} jobs stored, {runs[0].queued:,} of them QUEUED (the search's matches:"
        f' `filter="{base.SEARCH_FILTER}"`, `orderby={base.SEARCH_ORDER}`, '
        f"`last={base.SEARCH_LAST}`, {args.search_calls} calls through `nuvla.api` on an idle "
        "server); goals: "
        f"≥ {base.GOAL_OPS:,.0f} mixed ops/s with two replicas, search < {base.GOAL_SEARCH_MS:.0f}"
        " ms on both stores.",
        f"- mixed: {args.clients} `nuvla.api` clients in {args.procs} load processes, add / get /"
        f" edit in equal thirds, {args.warmup:g} s warm-up + {args.seconds:g} s measured; with two"
        " replicas the clients alternate between them. `GET cep/s`: the same clients doing"
        " `GET /api/cloud-entry-point` (no database). `job API cores`: every replica's CPU"
        " during the mix (PostgreSQL's own processes count in `other cores`).",
        *(
            f"- PostgreSQL {postgres_version} (a throw-away server: fsync off) filled from the"
            f" SQLite file through the store seam in {r.fill_seconds:,.0f} s, then"
            " `VACUUM ANALYZE`."
            for r in [x for x in runs if x.store == "postgresql"][:1]
        ),
    ]
    for r in runs:
        if r.profile:
            lines += [
                "",
                f"Where the time of the first job API went during the mix on {r.store} with"
                f" {r.replicas} replica(s) (py-spy, share of its samples, inclusive):",
                "",
                *(f"- {share:5.1f}% `{frame}`" for share, frame in r.profile),
            ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> tuple[list[Run], str]:
    from nuvla_job.localstack.postgres import PostgresServer
    from nuvla_job.localstack.zookeeper import ZooKeeperServer

    seed = base.seeded_database(args.jobs, args.reseed)
    stores = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    zookeeper = ZooKeeperServer()
    postgres: PostgresServer | None = None
    runs: list[Run] = []
    keys: dict[str, dict[str, str]] = {}
    version = ""
    try:
        zookeeper.start()
        assert zookeeper.pid is not None
        for store in stores:
            if store == "sqlite":
                runs.append(
                    measure(args, "sqlite", 1, seed, zookeeper.hosts, zookeeper.pid, None, 0, keys)
                )
                continue
            postgres = PostgresServer(max_connections=200)
            postgres.start()
            version = postgres.bin.parent.name
            url = postgres.create_database("bench")
            print(f"filling PostgreSQL with {args.jobs:,} jobs ...", flush=True)
            filled = fill_postgres(seed.path, url)
            for replicas in sorted({1, args.replicas}):
                runs.append(
                    measure(
                        args,
                        "postgresql",
                        replicas,
                        seed,
                        zookeeper.hosts,
                        zookeeper.pid,
                        url,
                        filled,
                        keys,
                    )
                )
    finally:
        if postgres is not None:
            postgres.close()
        zookeeper.close()
    return runs, version


def machine_note(load_at_start: float) -> str:
    """What the run's machine was: quiet, or shared with other work (the rates then say less
    than the CPU per operation)."""
    cores = os.cpu_count() or 1
    if load_at_start > cores / 2:
        return (
            f"\n- Machine: {cores} cores, shared: a load average of {load_at_start:.1f} at the"
            " start (other work besides this run), so the rates are lower than on a quiet"
            " machine; the CPU per operation is the steadier figure.\n"
        )
    return (
        f"\n- Machine: {cores} cores, quiet: a load average of {load_at_start:.1f} at the start;"
        " the job APIs, PostgreSQL, ZooKeeper and the load processes shared its cores.\n"
    )


def main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    load_at_start = publishing.load_average()
    load_1min = os.getloadavg()[0]  # a number for machine_note (section() prints all three)
    runs, version = run(args)
    table = markdown(runs, args, version)
    print()
    print(table)
    base.RESULTS.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(f"# Job API on both stores\n\n{table}")
    print(f"written: {REPORT.relative_to(base.REPO)}")
    if args.publish:
        command = publishing.command_line("bench.api", argv)
        section = publishing.section(command, load_at_start, table + machine_note(load_1min))
        publishing.publish(SECTION, section)
    return 0


if __name__ == "__main__":
    # `python -m bench.api_stores` (as `python -m bench` runs it): both stores, two replicas.
    sys.exit(base.main(["--db", "both", "--replicas", "2", *sys.argv[1:]]))

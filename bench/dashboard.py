"""The dashboard at 1,000,000 stored jobs: every request its views make, timed through HTTP.

    .venv/bin/python -m bench.dashboard [--jobs N] [--repeat R] [--reseed] [--publish]

In order:

1. N job documents are written straight into a SQLite file with
   ``SqliteJobStore.insert_many`` (bench.api's documents: 500 owners, 38 actions, 60 days, 97%
   final; plus bulk parents with children, a few of them the measured user's); the file is
   cached under bench/results/, keyed by N and the store's schema (``--reseed`` rebuilds it);
2. a private ZooKeeper and the real job API (``python -m nuvla_job.cli.api serve``) start on
   a copy of it, with an API key for one of the 500 owners (a user who may see ~0.2 % of the
   jobs), and a real executor runs a few hundred jobs so that the fleet has samples;
3. each request of each view (views.js: the job search with each field of its form and each
   sort, one job's page and its children by state, the per-action table, the fleet and an
   executor's page, the overview) is made R times by the administrator and by that user,
   through ``requests`` on one keep-alive connection, and timed from the request to the last
   byte of the answer;
4. the table goes to stdout and bench/results/dashboard.md; with ``--publish`` also to the
   dashboard section of docs/benchmarks.md.

Goal: every view under 100 ms (p95 of each request). Every process started here is stopped
by pid on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench import report as publishing
from bench.api import (
    RESULTS,
    Interrupted,
    _fmt,
    _iso,
    _raise_interrupted,
    _remove_db,
    _schema_key,
    generate_docs,
    percentile,
)

REPO = Path(__file__).resolve().parents[1]
REPORT = RESULTS / "dashboard.md"
SEED_FORMAT = 1
SEED_BATCH = 20_000
GOAL_MS = 100.0
PAGE = 25  # views.js PAGE_SIZE
BULK_PARENTS = 20
CHILDREN = 500  # per parent
USER_PARENTS = 2  # of the bulk parents, the measured user's
FLEET_JOBS = 300


# ---------------------------------------------------------------------------------------------
# Seeding


def _children(parent: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    created = parent["created"]
    for n in range(CHILDREN):
        state = rng.choices(["SUCCESS", "FAILED", "QUEUED", "RUNNING"], [85, 10, 3, 2])[0]
        doc = {
            "id": f"job/{uuid.UUID(int=rng.getrandbits(128), version=4)}",
            "resource-type": "job",
            "action": "update_deployment",
            "execution-mode": "push",
            "version": 2,
            "priority": 50,
            "created": created,
            "updated": _iso(int(time.time() * 1000) - rng.randrange(86_400_000)),
            "state": state,
            "progress": 100 if state in ("SUCCESS", "FAILED") else 0,
            "parent-job": parent["id"],
            "target-resource": {"href": f"deployment/{uuid.UUID(int=n + 1, version=4)}"},
            "acl": parent["acl"],
        }
        if state in ("SUCCESS", "FAILED"):
            doc["duration"] = rng.randrange(1, 60)
        if state == "FAILED":
            doc["status-message"] = "Traceback (most recent call last):\n  ...\nRuntimeError: x"
        yield doc


def generate(count: int) -> Iterator[dict[str, Any]]:
    """bench.api's documents, with BULK_PARENTS of them bulk parents of CHILDREN children."""
    rng = random.Random(20261202)
    base = generate_docs(count - BULK_PARENTS * CHILDREN, int(time.time() * 1000), rng)
    first = next(base)
    yield first
    user = first["acl"]["view-data"][0]
    parents = 0
    for doc in base:
        if parents < BULK_PARENTS and doc["state"] == "SUCCESS":
            # The first few are the measured user's: their job page shows children too.
            owner = user if parents < USER_PARENTS else doc["acl"]["view-data"][0]
            doc = {
                **doc,
                "action": "bulk_deployment_update",
                "acl": {**doc["acl"], "view-data": [owner], "manage": [owner]},
            }
            parents += 1
            yield doc
            yield from _children(doc, rng)
        else:
            yield doc


def seed(path: Path, jobs: int) -> float:
    from nuvla_job.api.sqlite import Database, SqliteJobStore

    partial = path.with_name(path.name + ".partial")
    _remove_db(partial)
    started = time.perf_counter()
    try:
        db = Database(str(partial))
        try:
            store = SqliteJobStore(db)
            docs = generate(jobs)
            done = 0
            while True:
                batch = [d for _, d in zip(range(SEED_BATCH), docs, strict=False)]
                if not batch:
                    break
                store.insert_many(batch)
                done += len(batch)
                if done % 200_000 < SEED_BATCH:
                    rate = done / (time.perf_counter() - started)
                    print(f"  seeded {done:,} / {jobs:,} jobs ({rate:,.0f}/s)", flush=True)
        finally:
            db.close()
        partial.rename(path)
    except BaseException:
        _remove_db(partial)
        raise
    return time.perf_counter() - started


def seeded_database(jobs: int, reseed: bool) -> tuple[Path, bool]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    key = f"{_schema_key()}-{SEED_FORMAT}"
    path = RESULTS / f"dashboard-jobs-{jobs}-{key}.sqlite"
    for stale in RESULTS.glob(f"dashboard-jobs-{jobs}-*.sqlite"):
        if stale != path:
            print(f"removing stale cached database {stale.name}")
            _remove_db(stale)
    if path.exists() and not reseed:
        return path, True
    _remove_db(path)
    print(f"seeding {jobs:,} jobs into {path.relative_to(REPO)} ...", flush=True)
    seconds = seed(path, jobs)
    print(f"  seeding took {seconds:,.0f} s", flush=True)
    return path, False


# ---------------------------------------------------------------------------------------------
# The views' requests


@dataclass(frozen=True)
class Subjects:
    """What the requests are about: jobs, a tag, a target, ... found in the seeded file."""

    user: str
    admin_parent: str
    user_parent: str
    admin_failed: str
    user_failed: str
    other_users_job: str
    action: str
    tag: str
    target: str


def subjects(db: Path) -> Subjects:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    def one(sql: str, *params: Any) -> Any:
        row = conn.execute(sql, params).fetchone()
        assert row is not None, sql
        return row[0]

    try:
        first = json.loads(one("SELECT doc FROM job WHERE rowid = 1"))
        user = first["acl"]["view-data"][0]
        mine = "SELECT job_id FROM job_reader WHERE principal = ?"
        return Subjects(
            user=user,
            user_parent=one(
                "SELECT id FROM job WHERE action = 'bulk_deployment_update' AND id IN "
                f"({mine}) LIMIT 1",
                user,
            ),
            admin_parent=one(
                "SELECT id FROM job WHERE action = 'bulk_deployment_update' AND id NOT IN "
                f"({mine}) LIMIT 1",
                user,
            ),
            admin_failed=one("SELECT id FROM job WHERE state = 'FAILED' LIMIT 1"),
            user_failed=one(f"SELECT id FROM job WHERE state = 'FAILED' AND id IN ({mine})", user),
            other_users_job=one(f"SELECT id FROM job WHERE id NOT IN ({mine}) LIMIT 1", user),
            action="deployment_state",
            tag=one("SELECT tag FROM job_tag LIMIT 1 OFFSET 100"),
            target=one(
                f"SELECT target_href FROM job WHERE target_href IS NOT NULL AND id IN ({mine})",
                user,
            ),
        )
    finally:
        conn.close()


def _quote(value: str) -> str:
    """views.js quote(): a CIMI string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _search(filter_text: str | None, orderby: str = "updated:desc", page: int = 1) -> str:
    params = {"orderby": orderby, "first": (page - 1) * PAGE + 1, "last": page * PAGE}
    if filter_text:
        params["filter"] = filter_text
    return f"/api/job?{urlencode(params)}"


def _children_of(parent: str) -> str:
    query = {"filter": f"parent-job={_quote(parent)}", "aggregation": "terms:state"}
    return f"/api/job?{urlencode({**query, 'orderby': 'updated:desc', 'last': 20})}"


def requests_of_views(s: Subjects, admin: bool) -> list[tuple[str, str, str]]:
    """(view, what, path) of every request the views make, for the administrator or the user
    (the cluster views are the administrator's: a user's page asks no such thing)."""
    hour_ago = _iso(int((time.time() - 3600) * 1000))
    day_ago = _iso(int((time.time() - 86400) * 1000))
    failed = s.admin_failed if admin else s.user_failed
    parent = s.admin_parent if admin else s.user_parent
    found: list[tuple[str, str, str]] = [
        ("baseline", "GET cloud-entry-point (HTTP, no database)", "/api/cloud-entry-point"),
    ]
    for order in ("updated:desc", "created:desc", "created:asc", "priority:asc", "duration:desc"):
        found.append(("jobs", f"no filter, sort {order}", _search(None, order)))
    found += [
        ("jobs", "no filter, page 40", _search(None, page=40)),
        ("jobs", "state FAILED", _search("state='FAILED'")),
        ("jobs", "state SUCCESS (most jobs)", _search("state='SUCCESS'")),
        ("jobs", f"action {s.action}", _search(f"action={_quote(s.action)}")),
        ("jobs", "tag", _search(f"tags={_quote(s.tag)}")),
        ("jobs", "target", _search(f"target-resource/href={_quote(s.target)}")),
        ("jobs", "parent", _search(f"parent-job={_quote(parent)}")),
        ("jobs", "updated in the last hour", _search(f"updated>={_quote(hour_ago)}")),
        (
            "jobs",
            "an action's failed jobs of a day (the failure-rate link)",
            _search(f"action={_quote(s.action)} and state='FAILED' and updated>={_quote(day_ago)}"),
        ),
        ("job", "the job (a failed one)", f"/api/{failed}"),
        ("job", f"its children by state (bulk parent of {CHILDREN})", _children_of(parent)),
        ("actions", "per-action table, 1 h", "/api/dashboard/actions?period=3600"),
        ("actions", "per-action table, 1 day", "/api/dashboard/actions?period=86400"),
        ("actions", "per-action table, 7 days", "/api/dashboard/actions?period=604800"),
        ("overview", "latest jobs", "/api/job?orderby=updated:desc&last=25"),
        (
            "overview",
            "latest failed jobs",
            "/api/job?"
            + urlencode({"orderby": "updated:desc", "last": 25, "filter": "state='FAILED'"}),
        ),
    ]
    if admin:
        found += [
            ("actions", "per-action table, 30 days", "/api/dashboard/actions?period=2592000"),
            *(
                (
                    "actions afresh",
                    f"per-action table, {label}, read afresh (since/until: never kept)",
                    f"/api/dashboard/actions?since={time.time() - seconds:.0f}"
                    f"&until={time.time():.0f}",
                )
                for label, seconds in (("1 day", 86400), ("7 days", 604800), ("30 days", 2592000))
            ),
            ("fleet", "fleet samples, 15 min", "/api/dashboard/fleet?window=900"),
            ("fleet", "fleet samples, 3 h", "/api/dashboard/fleet?window=10800"),
            ("fleet", "executors", "/api/dashboard/executors"),
            ("executor", "executors (its in-flight jobs)", "/api/dashboard/executors"),
            ("executor", "fleet samples (its share)", "/api/dashboard/fleet?window=900"),
            ("overview", "queue depth", "/api/dashboard/queue"),
            ("overview", "leaders", "/api/dashboard/leaders"),
        ]
    else:
        found.append(("job", "someone else's job (refused: 403)", f"/api/{s.other_users_job}"))
    return found


@dataclass
class Timed:
    view: str
    what: str
    status: int
    count: int | None  # matches, for a search
    samples: list[float]  # ms


def login(endpoint: str, key: str, secret: str) -> Any:
    import requests

    session = requests.Session()
    session.trust_env = False
    template = {"href": "session-template/api-key", "key": key, "secret": secret}
    response = session.post(f"{endpoint}/api/session", json={"template": template}, timeout=30)
    response.raise_for_status()
    return session


def time_requests(
    session: Any, endpoint: str, plan: list[tuple[str, str, str]], repeat: int
) -> list[Timed]:
    found = []
    for view, what, path in plan:
        url = f"{endpoint}{path}"
        samples, status, count = [], 0, None
        for attempt in range(repeat + 2):  # two warm-ups
            started = time.perf_counter()
            response = session.get(url, timeout=60)
            body = response.content
            elapsed = (time.perf_counter() - started) * 1000
            status = response.status_code
            if attempt >= 2:
                samples.append(elapsed)
        if status == 200 and path.startswith("/api/job?"):
            count = json.loads(body).get("count")
        found.append(Timed(view, what, status, count, samples))
    return found


# ---------------------------------------------------------------------------------------------
# Report

HEADER = [
    "view",
    "request",
    "admin p50 ms",
    "admin p95 ms",
    "matches",
    "user p50 ms",
    "user p95 ms",
    "user matches",
]


def _cells(timed: Timed | None, missing: str) -> list[str]:
    if timed is None:
        return ["-", "-", missing]
    if timed.count is not None:
        matches = f"{timed.count:,}"
    else:
        matches = "" if timed.status == 200 else f"HTTP {timed.status}"
    return [_fmt(percentile(timed.samples, 50)), _fmt(percentile(timed.samples, 95)), matches]


def rows(admin: list[Timed], user: list[Timed]) -> list[list[str]]:
    by_admin = {(t.view, t.what): t for t in admin}
    by_user = {(t.view, t.what): t for t in user}
    keys = list(by_admin) + [k for k in by_user if k not in by_admin]
    return [
        [
            view,
            what,
            *_cells(by_admin.get((view, what)), "-"),
            *_cells(by_user.get((view, what)), "(admin only)"),
        ]
        for view, what in keys
    ]


def views_rows(admin: list[Timed], user: list[Timed]) -> list[list[str]]:
    """Per view: the sum of the p95 of its requests (a page load's worst case)."""
    out = []
    for view in ("jobs", "job", "actions", "fleet", "executor", "overview"):
        line = [view]
        for timed in (admin, user):
            mine = [t for t in timed if t.view == view]
            if view == "jobs":  # one search at a time: the slowest
                value = max((percentile(t.samples, 95) for t in mine), default=float("nan"))
            elif view == "actions":  # one period at a time
                value = max((percentile(t.samples, 95) for t in mine), default=float("nan"))
            else:
                value = (
                    sum(percentile(t.samples, 95) for t in mine if t.status == 200)
                    if mine
                    else float("nan")
                )
            line.append(_fmt(value))
        ok = all(v == "-" or float(v.replace(",", "")) < GOAL_MS for v in line[1:])
        out.append([*line, "yes" if ok else "**no**"])
    return out


def text_table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def md_table(header: list[str], body: list[list[str]]) -> list[str]:
    align = ["---" if i < 2 else "---:" for i in range(len(header))]
    return ["| " + " | ".join(r) + " |" for r in [header, align, *body]]


def markdown(admin: list[Timed], user: list[Timed], setup: list[str]) -> str:
    view_header = ["view (p95 ms)", "admin", "user", f"< {GOAL_MS:.0f} ms"]
    lines = md_table(view_header, views_rows(admin, user))
    lines += ["", *md_table(HEADER, rows(admin, user)), ""]
    lines += [f"- {line}" for line in setup]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="stored jobs (1,000,000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per request (30)")
    parser.add_argument("--reseed", action="store_true", help="rebuild the cached database")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write the dashboard section of docs/benchmarks.md",
    )
    args = parser.parse_args(argv)
    if args.jobs < BULK_PARENTS * CHILDREN + 1000 or args.repeat < 1:
        parser.error(f"--jobs must be at least {BULK_PARENTS * CHILDREN + 1000}, --repeat positive")
    return args


def run_fleet_jobs(server: Any, zookeeper: Any) -> Any:
    """A real executor and FLEET_JOBS short jobs through it, so the fleet has samples."""
    from nuvla_job.localstack.processes import executor_process

    executor = executor_process(
        zookeeper.hosts,
        server.endpoint,
        str(server.credentials_path),
        "--name",
        "bench-executor",
        "--concurrency",
        "20",
        actions_path=None,
    ).start()
    executor.wait_for_log("running up to", timeout=60)
    api = server.admin_api()
    ids = []
    for n in range(FLEET_JOBS):
        payload = json.dumps({"seconds": 0.05 + (n % 5) * 0.05, "fail": n % 10 == 0})
        ids.append(api.add("job", {"action": "sleep", "payload": payload}).data["resource-id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = api.search(
            "job", filter="action='sleep' and (state='QUEUED' or state='RUNNING')", last=0
        )
        if left.count == 0:
            break
        time.sleep(0.5)
    return executor


def run(args: argparse.Namespace) -> tuple[list[Timed], list[Timed], list[str]]:
    from nuvla_job.api.identity import Identities
    from nuvla_job.api.sqlite import SqliteStore
    from nuvla_job.localstack.jobapi import JobApiProcess
    from nuvla_job.localstack.zookeeper import ZooKeeperServer

    path, cached = seeded_database(args.jobs, args.reseed)
    who = subjects(path)
    zookeeper = ZooKeeperServer()
    server: JobApiProcess | None = None
    executor = None
    try:
        zookeeper.start()
        server = JobApiProcess(
            zookeeper.hosts,
            "--log-level",
            "WARNING",
            "--dashboard-interval",
            "2",
            start_timeout=180,
        )
        shutil.copyfile(path, server.db)
        server.db.chmod(0o600)  # as the job API keeps it
        store = SqliteStore(server.db)
        try:
            user_key, user_secret = Identities(store.identities).add_api_key(who.user)
        finally:
            store.close()
        server.start()
        print(
            f"job API pid {server.pid} on {server.endpoint}; "
            f"a real executor runs {FLEET_JOBS} jobs",
            flush=True,
        )
        executor = run_fleet_jobs(server, zookeeper)
        creds = server.credentials()
        admin_session = login(server.endpoint, creds["key"], creds["secret"])
        user_session = login(server.endpoint, user_key, user_secret)
        print(
            f"timing {args.repeat} calls of each request, "
            f"as the administrator and as {who.user} ...",
            flush=True,
        )
        admin = time_requests(
            admin_session, server.endpoint, requests_of_views(who, True), args.repeat
        )
        user = time_requests(
            user_session, server.endpoint, requests_of_views(who, False), args.repeat
        )
        visible = next(t.count for t in user if t.what == "no filter, sort updated:desc")
        setup = [
            f"{args.jobs:,} jobs in SQLite ({'cached file' if cached else 'seeded now'}, "
            f"{path.stat().st_size / 2**30:.1f} GiB): bench.api's documents plus {BULK_PARENTS} "
            f"bulk parents of {CHILDREN} children; the real job API on a copy, a real executor "
            f"having run {FLEET_JOBS} jobs",
            f"user: an API key acting as {who.user}, one of 500 owners, who may see "
            f"{visible:,} jobs ({visible / args.jobs:.2%})",
            f"each request {args.repeat} times after 2 warm-ups, one keep-alive connection "
            "(requests), request to last byte; p50/p95 per request",
            "per view: the slowest search (jobs) or period (actions), else the sum of the p95 "
            f"of the requests the page makes; goal < {GOAL_MS:.0f} ms",
            "an administrator's per-action table of a day or more is kept for 60 s by each job "
            "API (dashboard.Actions): the page's rows are answers within that minute, the "
            "'actions afresh' rows what a fresh one costs (a page pays it at most once a "
            "minute per period)",
        ]
        return admin, user, setup
    finally:
        if executor is not None:
            executor.stop()
        if server is not None:
            server.close()
        zookeeper.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = publishing.load_average()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        admin, user, setup = run(args)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(
            f"interrupted ({type(exc).__name__} {exc}); everything started was stopped",
            file=sys.stderr,
        )
        return 130
    print()
    print(
        "\n".join(text_table(["view (p95 ms)", "admin", "user", "goal"], views_rows(admin, user)))
    )
    print()
    print("\n".join(text_table(HEADER, rows(admin, user))))
    body = markdown(admin, user, setup)
    RESULTS.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(f"# Dashboard benchmark\n\n{body}")
    print(f"\nwritten: {REPORT.relative_to(REPO)}")
    if args.publish:
        command = publishing.command_line("bench.dashboard", sys.argv[1:] if argv is None else argv)
        publishing.publish("dashboard", publishing.section(command, load_at_start, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

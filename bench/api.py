"""The job API benchmark: mixed add/get/edit throughput and the queue search at 1,000,000 jobs.

    .venv/bin/python -m bench.api [--jobs N] [--seconds S] [--clients C] [--reseed]

In order:

1. N realistic job documents are written straight into a SQLite file with
   ``SqliteJobStore.insert_many``; the file is cached under bench/results/, keyed by N and the
   store's schema, so later runs skip this (``--reseed`` forces it);
2. a private ZooKeeper and the real job API (``python -m nuvla_job.cli.api serve``) start on a
   copy of that file;
3. ``api.search('job', filter="state='QUEUED'", orderby='created', last=10)`` is timed through
   the ``nuvla.api`` client, against the same query as a full scan in SQLite (the baseline);
4. C concurrent ``nuvla.api`` clients (gevent, in separate load processes so the client side is
   not the bottleneck) first GET ``cloud-entry-point`` (the baseline: HTTP + client, no
   database, no auth), then do add / get / edit in equal thirds;
5. the table goes to stdout and bench/results/api.md; with ``--publish`` also to
   docs/benchmarks-api.md and the api section of docs/benchmarks.md.

Every process started here is stopped by pid on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report as publishing

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
REPORT = RESULTS / "api.md"
PROFILE = RESULTS / "api-profile.txt"
DOC = REPO / "docs" / "benchmarks-api.md"

# Bump when the generated documents change, so cached databases are rebuilt.
SEED_FORMAT = 1
SEED_BATCH = 20_000
SPREAD_DAYS = 60
DAY_MS = 86_400_000

SEARCH_FILTER = "state='QUEUED'"
SEARCH_ORDER = "created"
SEARCH_LAST = 10

GOAL_OPS = 1500.0
GOAL_SEARCH_MS = 20.0
ADMIN = "group/nuvla-admin"

# (action, collection of its target or None, relative frequency): roughly what a Nuvla
# installation's job collection holds, dominated by periodic state checks.
ACTIONS: tuple[tuple[str, str | None, int], ...] = (
    ("deployment_state", "deployment", 250),
    ("deployment_state_10", "deployment", 120),
    ("deployment_state_60", "deployment", 80),
    ("start_deployment", "deployment", 60),
    ("stop_deployment", "deployment", 50),
    ("update_deployment", "deployment", 40),
    ("fetch_deployment_log", "deployment", 30),
    ("deployment_set_create", "deployment-set", 5),
    ("deployment_set_start", "deployment-set", 5),
    ("deployment_set_update", "deployment-set", 5),
    ("deployment_set_stop", "deployment-set", 4),
    ("bulk_deployment_update", "deployment-set", 3),
    ("bulk_deployment_stop", "deployment-set", 2),
    ("bulk_deployment_force_delete", "deployment-set", 1),
    ("cancel_children_jobs", "job", 1),
    ("check_credential_infrastructure_service", "credential", 40),
    ("check_registry", "infrastructure-service", 10),
    ("check_infrastructure_service", "infrastructure-service", 10),
    ("start_infrastructure_service_swarm", "infrastructure-service", 2),
    ("stop_infrastructure_service", "infrastructure-service", 2),
    ("provision_infrastructure", "infrastructure-service", 2),
    ("terminate_infrastructure", "infrastructure-service", 2),
    ("reboot_nuvlabox", "nuvlabox", 8),
    ("update_nuvlabox", "nuvlabox", 10),
    ("decommission_nuvlabox", "nuvlabox", 4),
    ("nuvlabox_cluster_join", "nuvlabox", 3),
    ("nuvlabox_add_ssh_key", "nuvlabox", 3),
    ("nuvlabox_revoke_ssh_key", "nuvlabox", 2),
    ("nuvlabox_log", "nuvlabox", 6),
    ("create_user_credential", "user", 2),
    ("service_image_state", "deployment", 10),
    ("dct_check", "nuvlabox", 3),
    ("update_nuvlabox_releases", None, 2),
    ("vulnerabilities_database", None, 2),
    ("usage_report", None, 2),
    ("cleanup_jobs", None, 2),
    ("cleanup_deployment_parameters", None, 2),
    ("notify_coupon_end", None, 1),
)
# What the load's adds create: the actions the distributors and users add most.
ADD_ACTIONS = (
    "start_deployment",
    "stop_deployment",
    "update_deployment",
    "deployment_state",
    "fetch_deployment_log",
    "reboot_nuvlabox",
    "check_registry",
)
N_USERS = 500


# ---------------------------------------------------------------------------------------------
# Small helpers


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (nan when there are none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def _fmt(value: float, digits: int = 1) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.{digits}f}"


class Interrupted(Exception):
    """SIGTERM / SIGHUP: unwind through the finally blocks like Ctrl-C does."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


# ---------------------------------------------------------------------------------------------
# Seeding


def _weighted_actions() -> list[tuple[str, str | None]]:
    return [(name, coll) for name, coll, weight in ACTIONS for _ in range(weight)]


def generate_docs(count: int, now_ms: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """`count` job documents with `created` spread over the last SPREAD_DAYS days, oldest first
    (the order a real collection grows in): 97% final, 2% QUEUED, 1% RUNNING."""
    actions = _weighted_actions()
    users = [f"user/{_uuid(rng)}" for _ in range(N_USERS)]
    spread = SPREAD_DAYS * DAY_MS
    offsets = sorted(rng.randrange(spread) for _ in range(count))
    for seq, offset in enumerate(offsets):
        created = now_ms - spread + offset
        action, collection = actions[rng.randrange(len(actions))]
        owner = users[rng.randrange(N_USERS)]
        roll = rng.random()
        mode = "push" if roll < 0.80 else "pull" if roll < 0.95 else "mixed"
        if action == "cancel_children_jobs":
            priority = 10
        elif action.startswith("bulk") or action.startswith("deployment_set"):
            priority = 50
        else:
            priority = 100 if rng.random() < 0.05 else 999
        doc: dict[str, Any] = {
            "id": f"job/{_uuid(rng)}",
            "resource-type": "job",
            "action": action,
            "execution-mode": mode,
            "version": 2,
            "priority": priority,
            "created": _iso(created),
            "created-by": "internal" if collection is None else owner,
            "acl": {
                "owners": [ADMIN],
                "view-acl": [owner],
                "view-data": [owner],
                "view-meta": [owner],
                "manage": [owner],
            },
        }
        if collection is not None:
            target = {"href": f"{collection}/{_uuid(rng)}"}
            doc["target-resource"] = target
            doc["affected-resources"] = [target]
        roll = rng.random()
        started = created + rng.randrange(50, 30_000)
        if roll < 0.02:
            doc.update(
                state="QUEUED",
                progress=0,
                updated=doc["created"],
                tags=[f"/job/entries/entry-{priority:03d}-{seq:010d}"],
            )
        elif roll < 0.03:
            doc.update(
                state="RUNNING",
                progress=rng.randrange(10, 90),
                started=_iso(started),
                updated=_iso(started + rng.randrange(100, 5000)),
            )
        else:
            duration = rng.randrange(0, 120)
            ended = started + duration * 1000 + rng.randrange(1000)
            final = rng.random()
            if final < 0.90:
                doc.update(state="SUCCESS", **{"return-code": 0})
                doc["status-message"] = f"{action} done"
            elif final < 0.97:
                doc.update(state="FAILED", **{"return-code": 1})
                doc["status-message"] = (
                    f"Error while running {action}: connection to the target refused "
                    f"after {rng.randrange(1, 6)} attempt(s); see the executor log"
                )
            else:
                doc.update(state="CANCELED")
                doc["status-message"] = "cancelled by user"
            doc.update(
                progress=100,
                started=_iso(started),
                duration=duration,
                updated=_iso(ended),
                **{"time-of-status-change": _iso(ended)},
            )
        yield doc


def _schema_key() -> str:
    """A digest of the store's schema as a fresh database creates it: a schema change makes
    the cached file stale."""
    from nuvla_job.api.sqlite import Database

    with tempfile.TemporaryDirectory(prefix="bench-schema-") as tmp:
        db = Database(str(Path(tmp) / "schema.sqlite"))
        try:
            rows = db.read("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        finally:
            db.close()
    text = json.dumps([rows, SEED_FORMAT])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class SeedInfo:
    path: Path
    jobs: int
    seconds: float
    seeded_at: str
    cached: bool


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def seed(path: Path, jobs: int) -> float:
    """Write `jobs` documents into a new database at `path`; returns the seconds it took."""
    from nuvla_job.api.sqlite import Database, SqliteJobStore

    partial = path.with_name(path.name + ".partial")
    _remove_db(partial)
    started = time.perf_counter()
    try:
        db = Database(str(partial))
        try:
            store = SqliteJobStore(db)
            rng = random.Random(20261128)
            docs = generate_docs(jobs, int(time.time() * 1000), rng)
            done = 0
            while done < jobs:
                batch = [next(docs) for _ in range(min(SEED_BATCH, jobs - done))]
                store.insert_many(batch)
                done += len(batch)
                if done % 200_000 == 0 or done == jobs:
                    rate = done / (time.perf_counter() - started)
                    print(f"  seeded {done:,} / {jobs:,} jobs ({rate:,.0f}/s)", flush=True)
        finally:
            # Closing the last connection checkpoints the WAL into the file.
            db.close()
        partial.rename(path)
    except BaseException:
        _remove_db(partial)
        raise
    return time.perf_counter() - started


def seeded_database(jobs: int, reseed: bool) -> SeedInfo:
    """The cached seeded database for `jobs`, built when missing (or when asked to)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    key = _schema_key()
    path = RESULTS / f"api-jobs-{jobs}-{key}.sqlite"
    meta_path = path.with_suffix(".json")
    # A file for the same size but another schema can never be used again.
    for stale in RESULTS.glob(f"api-jobs-{jobs}-*.sqlite"):
        if stale != path:
            print(f"removing stale cached database {stale.name}")
            _remove_db(stale)
            stale.with_suffix(".json").unlink(missing_ok=True)
    if path.exists() and meta_path.exists() and not reseed:
        meta = json.loads(meta_path.read_text())
        return SeedInfo(path, jobs, meta["seconds"], meta["seeded_at"], cached=True)
    _remove_db(path)
    print(f"seeding {jobs:,} jobs into {path.relative_to(REPO)} ...", flush=True)
    seconds = seed(path, jobs)
    seeded_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    meta_path.write_text(json.dumps({"jobs": jobs, "seconds": seconds, "seeded_at": seeded_at}))
    return SeedInfo(path, jobs, seconds, seeded_at, cached=False)


def sample_ids(db_path: Path, jobs: int, count: int) -> list[str]:
    """Ids of `count` random seeded jobs (rowids are 1..jobs in insertion order)."""
    rng = random.Random(7)
    rowids = rng.sample(range(1, jobs + 1), min(count, jobs))
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(rowids))
        return [r[0] for r in conn.execute(f"SELECT id FROM job WHERE rowid IN ({marks})", rowids)]
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Search


@dataclass
class Timing:
    name: str
    samples: list[float]  # milliseconds

    def pct(self, p: float) -> float:
        return percentile(self.samples, p)


def time_calls(call: Callable[[], object], repeat: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def bench_search(
    api: Any, db_path: Path, calls: int, scan_repeats: int
) -> tuple[list[Timing], str, int]:
    """The search through the API, the same SQL straight in SQLite, and the full scan."""
    import orjson

    from nuvla_job.api.query import parse_query
    from nuvla_job.api.sqlite_sql import filter_sql, order_by_sql

    def api_search() -> None:
        result = api.search("job", filter=SEARCH_FILTER, orderby=SEARCH_ORDER, last=SEARCH_LAST)
        states = {r.data["state"] for r in result.resources}
        if states - {"QUEUED"} or len(result.resources) != min(SEARCH_LAST, result.count):
            raise AssertionError(f"unexpected search answer: count {result.count}, {states}")

    api_samples = time_calls(api_search, calls, warmup=10)
    count = api.search("job", filter=SEARCH_FILTER, last=0).count

    query = parse_query(
        {"filter": [SEARCH_FILTER], "orderby": [SEARCH_ORDER], "last": [str(SEARCH_LAST)]}
    )
    assert query.filter is not None
    where, params = filter_sql(query.filter)
    count_sql = f"SELECT count(*) FROM job WHERE {where}"
    page_sql = f"SELECT doc FROM job WHERE {where} {order_by_sql(query)} LIMIT {SEARCH_LAST}"
    # The baseline: the same answer with no index, the filter and order read from the JSON.
    scan_where = "json_extract(doc, '$.state') = ?"
    scan_count = f"SELECT count(*) FROM job NOT INDEXED WHERE {scan_where}"
    scan_page = (
        f"SELECT doc FROM job NOT INDEXED WHERE {scan_where} "
        f"ORDER BY json_extract(doc, '$.created'), id LIMIT {SEARCH_LAST}"
    )

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        plan = "; ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {page_sql}", params))

        def run(count_q: str, page_q: str) -> Callable[[], object]:
            def call() -> object:
                conn.execute(count_q, params).fetchone()
                return [orjson.loads(r[0]) for r in conn.execute(page_q, params)]

            return call

        indexed = time_calls(run(count_sql, page_sql), calls, warmup=10)
        scan = time_calls(run(scan_count, scan_page), scan_repeats, warmup=1)
    finally:
        conn.close()
    timings = [
        Timing("api.search via nuvla.api (HTTP, indexes)", api_samples),
        Timing("same SQL straight in SQLite (indexes)", indexed),
        Timing("baseline: full scan in SQLite (NOT INDEXED, json_extract)", scan),
    ]
    return timings, plan, count


# ---------------------------------------------------------------------------------------------
# Load processes (gevent, monkey-patched before anything else is imported)

# The first thing a load process runs: gevent must patch sockets before requests is imported.
WORKER_BOOT = (
    "from gevent import monkey; monkey.patch_all(); import bench.api as b; b.worker_main()"
)
KINDS = ("add", "get", "edit")
HTTP_PER_OP = {"add": 2, "get": 1, "edit": 1, "cloud-entry-point": 1}


def _send(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


class _Window:
    """One measured phase inside a load process: what its clients did between start and end."""

    def __init__(self, phase: str, start: float, end: float) -> None:
        self.phase, self.start, self.end = phase, start, end
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.samples: list[str] = []
        self.cpu: dict[str, float] = {}

    def record(self, kind: str, began: float, finished: float, error: str | None) -> None:
        # Only operations that both start and finish inside the window count.
        if not (self.start <= began and finished < self.end):
            return
        if error is None:
            self.latencies.setdefault(kind, []).append((finished - began) * 1000)
        else:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.samples) < 5:
                self.samples.append(f"{kind}: {error}")

    def answer(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "latencies": self.latencies,
            "errors": self.errors,
            "samples": self.samples,
            "cpu": self.cpu.get("end", 0.0) - self.cpu.get("start", 0.0),
        }


class _Client:
    """One logged-in nuvla.api.Api and the jobs it added (they stay QUEUED: never final)."""

    def __init__(self, api: Any, known: list[str], seed: str) -> None:
        self.api, self.known, self.seed = api, known, seed
        self.mine: list[str] = []
        self.progress: dict[str, int] = {}

    def run(self, window: _Window) -> None:
        rng = random.Random(f"{self.seed}-{window.phase}")
        turn = 0
        while time.time() < window.end:
            if window.phase == "cloud-entry-point":
                kind = window.phase
            else:
                # add, get, edit in turn: exactly equal thirds, and an add comes first so there
                # is always a job of our own to edit.
                kind = KINDS[turn % 3]
                turn += 1
            began = time.time()
            error = None
            try:
                self.call(kind, rng)
            except Exception as exc:  # counted, and the first few reported
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
            window.record(kind, began, time.time(), error)

    def call(self, kind: str, rng: random.Random) -> None:
        api = self.api
        if kind == "cloud-entry-point":
            # Through the client's own request path (headers, status check, JSON decode).
            api._cimi_get(resource_id="cloud-entry-point")
        elif kind == "add":
            body = {
                "action": rng.choice(ADD_ACTIONS),
                "target-resource": {"href": f"deployment/{_uuid(rng)}"},
                "execution-mode": "push",
            }
            self.mine.append(api.add("job", body).data["resource-id"])
        elif kind == "get":
            # Half of the gets read a random seeded job: the whole file is read, not a hot set.
            use_own = self.mine and (not self.known or rng.random() < 0.5)
            api.get(rng.choice(self.mine) if use_own else rng.choice(self.known))
        else:
            job_id = rng.choice(self.mine)
            value = self.progress[job_id] = (self.progress.get(job_id, 0) + 1) % 100
            api.edit(job_id, {"progress": value})


def worker_main() -> None:
    """A load process: C clients on gevent, driven by JSON lines on stdin (see LoadProcess)."""
    import gevent
    from nuvla.api import Api

    config = json.loads(sys.stdin.readline())

    # Several job APIs (replicas over one database): the clients alternate between them.
    endpoints = config.get("endpoints") or [config["endpoint"]]

    def login(index: int) -> _Client:
        endpoint = endpoints[(index + config["seed"]) % len(endpoints)]
        api = Api(endpoint=endpoint, insecure=True, persist_cookie=False)
        # No proxy/netrc lookups in the environment on every request: they cost requests a
        # third of its CPU per call, and this machine's two cores are shared with the server.
        api.session.trust_env = False
        deadline = time.monotonic() + 120
        response = api.login_apikey(config["key"], config["secret"])
        # The job API refuses more than a few logins of one key being verified at once (its
        # login throttle, 429 + Retry-After): the clients log in all together, so wait.
        while response.status_code == 429 and time.monotonic() < deadline:
            gevent.sleep(float(response.headers.get("Retry-After", 1)))
            response = api.login_apikey(config["key"], config["secret"])
        if response.status_code != 201:
            raise RuntimeError(f"login failed: {response.status_code} {response.text}")
        return _Client(api, config["known_ids"], f"{config['seed']}-{index}")

    greenlets = [gevent.spawn(login, i) for i in range(config["clients"])]
    gevent.joinall(greenlets, raise_error=True)
    clients = [g.value for g in greenlets]
    _send(sys.stdout, {"ready": True})

    def cpu_at(window: _Window, name: str, moment: float) -> None:
        gevent.sleep(max(0.0, moment - time.time()))
        window.cpu[name] = time.process_time()

    for line in sys.stdin:
        command = json.loads(line)
        if command["phase"] == "quit":
            return
        window = _Window(command["phase"], command["start"], command["end"])
        meters = [
            gevent.spawn(cpu_at, window, "start", window.start),
            gevent.spawn(cpu_at, window, "end", window.end),
        ]
        running = [gevent.spawn(c.run, window) for c in clients]
        gevent.joinall(running + meters, timeout=window.end - time.time() + 120)
        gevent.killall(running + meters)
        _send(sys.stdout, window.answer())


class LoadProcess:
    """One load process (`python -c WORKER_BOOT`), stopped by pid on close."""

    def __init__(self, config: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER_BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
            text=True,
            # Out of the terminal's process group: on Ctrl-C we stop it ourselves, in order.
            start_new_session=True,
        )
        assert self.process.stdin is not None
        _send(self.process.stdin, config)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        _send(self.process.stdin, message)

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load process {self.process.pid} exited ({self.process.poll()})")
        return json.loads(line)

    def close(self) -> None:
        process = self.process
        if process.poll() is None:
            try:
                # Between phases it reads this at once; in the middle of one it does not, and
                # it has nothing to clean up: then SIGTERM, by pid.
                self.send({"phase": "quit"})
                process.wait(2)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); index 0 here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class PhaseResult:
    phase: str
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    server_cpu: float = 0.0  # fraction of one core
    load_cpu: float = 0.0  # fraction of one core, all load processes together
    zk_cpu: float = 0.0
    machine_cpu: float = 0.0  # every process on the machine, in cores

    @property
    def other_cpu(self) -> float:
        """What other processes on the machine took meanwhile (they skew the numbers)."""
        return max(0.0, self.machine_cpu - self.server_cpu - self.load_cpu - self.zk_cpu)

    def ops(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(self.latencies)
        return sum(len(self.latencies.get(k, [])) for k in kinds)

    def rate(self, kind: str | None = None) -> float:
        return self.ops(kind) / self.seconds

    def http_rate(self, kind: str | None = None) -> float:
        kinds = [kind] if kind else list(self.latencies)
        return sum(len(self.latencies.get(k, [])) * HTTP_PER_OP[k] for k in kinds) / self.seconds

    def all_latencies(self) -> list[float]:
        return [v for values in self.latencies.values() for v in values]

    def error_count(self, kind: str | None = None) -> int:
        return self.errors.get(kind, 0) if kind else sum(self.errors.values())


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_sample(server_pid: int, zk_pid: int) -> tuple[float, float, float]:
    return _cpu_seconds(server_pid), _cpu_seconds(zk_pid), _machine_busy_seconds()


def wait_until_quiet(limit: float, threshold: float = 0.3) -> None:
    """Wait (at most `limit` s) until the machine is idle: other processes' CPU skews a
    throughput measurement on two cores. Warns when it does not come."""
    deadline = time.monotonic() + limit
    while True:
        before = _machine_busy_seconds()
        time.sleep(1.0)
        busy = _machine_busy_seconds() - before
        if busy < threshold:
            return
        if time.monotonic() >= deadline:
            print(
                f"warning: the machine is busy ({busy:.2f} cores used by other processes); "
                f"the numbers will be lower than on an idle machine",
                flush=True,
            )
            return


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if os.access(found, os.X_OK) else None


def run_phase(
    loaders: list[LoadProcess],
    phase: str,
    pids: tuple[int, int],
    warmup: float,
    seconds: float,
    profile_to: Path | None = None,
) -> PhaseResult:
    # A common wall-clock window: every load process warms up, then measures the same span.
    start = time.time() + warmup
    end = start + seconds
    for loader in loaders:
        loader.send({"phase": phase, "start": start, "end": end})
    time.sleep(max(0.0, start - time.time()))
    spy = None
    if profile_to is not None:
        # --nonblocking: sampling must not pause the server it measures.
        spy = subprocess.Popen(
            [
                str(py_spy()),
                "record",
                "--pid",
                str(pids[0]),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(profile_to),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        before = _cpu_sample(*pids)
        time.sleep(max(0.0, end - time.time()))
        after = _cpu_sample(*pids)
        if spy is not None:
            spy.wait(30)  # it stops by itself after --duration
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
    server, zk, machine = ((b - a) / seconds for a, b in zip(before, after, strict=True))
    result = PhaseResult(phase, seconds, server_cpu=server, zk_cpu=zk, machine_cpu=machine)
    for loader in loaders:
        answer = loader.receive()
        for kind, values in answer["latencies"].items():
            result.latencies.setdefault(kind, []).extend(values)
        for kind, count in answer["errors"].items():
            result.errors[kind] = result.errors.get(kind, 0) + count
        result.samples.extend(answer["samples"])
        result.load_cpu += answer["cpu"] / seconds
    return result


def summarize_profile(path: Path, top: int = 20) -> list[tuple[float, str]]:
    """The functions most often on the stack in py-spy's raw (collapsed) output, with their
    inclusive share of the samples."""
    totals: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        names = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            names.add(f"{name} ({where.rsplit(':', 1)[0]})" if where else name)
        for name in names:
            totals[name] = totals.get(name, 0) + int(count)
    if not samples:
        return []
    shares = sorted(((100 * n / samples, name) for name, n in totals.items()), reverse=True)
    # The request loop's frames sit under every request: skip that common trunk.
    trunk = shares[0][0] - 0.5
    return [(share, name) for share, name in shares if share < trunk][:top]


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class Report:
    args: argparse.Namespace
    seed: SeedInfo
    copy_seconds: float
    db_bytes: int
    search: list[Timing]
    plan: str
    queued: int
    baseline: PhaseResult
    mixed: PhaseResult
    profile: list[tuple[float, str]] | None = None

    def throughput_rows(self) -> list[list[str]]:
        rows = []

        def row(label: str, res: PhaseResult, kind: str | None) -> list[str]:
            lat = res.latencies.get(kind, []) if kind else res.all_latencies()
            return [
                label,
                _fmt(res.rate(kind), 0),
                _fmt(res.http_rate(kind), 0),
                _fmt(percentile(lat, 50)),
                _fmt(percentile(lat, 99)),
                str(res.error_count(kind)),
            ]

        rows.append(row("baseline: GET cloud-entry-point", self.baseline, None))
        rows.append(row("mixed add/get/edit", self.mixed, None))
        rows.append(row("  add (search last=0 + POST)", self.mixed, "add"))
        rows.append(row("  get", self.mixed, "get"))
        rows.append(row("  edit (progress)", self.mixed, "edit"))
        return rows

    def search_rows(self) -> list[list[str]]:
        return [
            [
                t.name,
                _fmt(t.pct(50), 2),
                _fmt(t.pct(95), 2),
                _fmt(t.pct(99), 2),
                str(len(t.samples)),
            ]
            for t in self.search
        ]

    def verdicts(self) -> list[str]:
        mixed_ops, base_ops = self.mixed.rate(), self.baseline.rate()
        api = self.search[0]
        scan = self.search[-1]
        ops_ok = mixed_ops >= GOAL_OPS and self.mixed.error_count() == 0
        search_ok = api.pct(95) < GOAL_SEARCH_MS
        server_ms = self.mixed.server_cpu * 1000 / mixed_ops if mixed_ops else float("nan")
        client_ms = (
            (self.mixed.load_cpu + self.mixed.zk_cpu) * 1000 / mixed_ops
            if mixed_ops
            else float("nan")
        )
        others = max(self.baseline.other_cpu, self.mixed.other_cpu)
        shared = (
            [
                f"the machine was shared: other processes used up to {others:.2f} cores "
                f"during the load phases, so the rates above are lower than on an idle "
                f"machine (the CPU per operation is not)"
            ]
            if others > 0.3
            else []
        )
        return [
            *shared,
            f"mixed vs baseline: {mixed_ops / base_ops:.2f}x the operations/s and "
            f"{self.mixed.http_rate() / base_ops:.2f}x the HTTP requests/s of GET "
            f"cloud-entry-point",
            f"goal (a) >= {GOAL_OPS:,.0f} mixed ops/s with 0 errors: "
            f"{'MET' if ops_ok else 'MISSED'} ({mixed_ops:,.0f} ops/s, "
            f"{self.mixed.error_count()} errors); the server spends {server_ms:.2f} ms of CPU "
            f"per operation, so its one thread tops out near {1000 / server_ms:,.0f} ops/s; "
            f"the clients and ZooKeeper spend another {client_ms:.2f} ms per operation on "
            f"this machine's {os.cpu_count()} cores",
            f"search: the full-scan baseline is {scan.pct(50) / api.pct(50):,.0f}x slower "
            f"than api.search (p50 {scan.pct(50):,.0f} ms vs {api.pct(50):.2f} ms)",
            f"goal (b) search p95 < {GOAL_SEARCH_MS:.0f} ms: "
            f"{'MET' if search_ok else 'MISSED'} (p95 {api.pct(95):.2f} ms, "
            f"p99 {api.pct(99):.2f} ms)",
        ]

    def cpu_rows(self) -> list[list[str]]:
        rows = []
        for label, res in (
            ("baseline: GET cloud-entry-point", self.baseline),
            ("mixed add/get/edit", self.mixed),
        ):
            rate = res.rate()
            rows.append(
                [
                    label,
                    _fmt(res.server_cpu, 2),
                    _fmt(res.server_cpu * 1000 / rate, 2),
                    _fmt(rate / res.server_cpu if res.server_cpu else float("nan"), 0),
                    _fmt(res.load_cpu, 2),
                    _fmt(res.load_cpu * 1000 / rate, 2),
                    _fmt(res.zk_cpu, 2),
                    _fmt(res.other_cpu, 2),
                ]
            )
        return rows

    def setup_lines(self) -> list[str]:
        seed = self.seed
        how = (
            f"cached, seeded on {seed.seeded_at} in {seed.seconds:,.0f} s"
            if seed.cached
            else f"seeded in this run in {seed.seconds:,.0f} s"
        )
        return [
            f"{seed.jobs:,} stored jobs ({how}; {seed.jobs / seed.seconds:,.0f} jobs/s "
            f"with insert_many in batches of {SEED_BATCH:,}); database "
            f"{self.db_bytes / 2**20:,.0f} MiB, copied for the server in "
            f"{self.copy_seconds:.1f} s",
            f"{self.args.clients} clients (nuvla.api.Api, one session each) in "
            f"{self.args.procs} gevent load processes; {self.args.warmup:g} s warm-up, "
            f"{self.args.seconds:g} s measured per phase",
            f"search: {self.args.search_calls} calls of api.search('job', "
            f"filter=\"{SEARCH_FILTER}\", orderby='{SEARCH_ORDER}', last={SEARCH_LAST}) on an "
            f"idle server ({self.queued:,} QUEUED jobs match); full scan repeated "
            f"{self.args.scan_repeats} times",
            f"SQLite plan of the page query: {self.plan}",
        ]

    def profile_lines(self) -> list[str]:
        if not self.profile:
            return []
        return [
            "",
            "server profile during mixed (py-spy, inclusive share of samples):",
            *(f"  {share:5.1f}%  {frame}" for share, frame in self.profile),
        ]

    def errors_lines(self) -> list[str]:
        samples = self.baseline.samples + self.mixed.samples
        return [f"error: {s}" for s in samples]

    def text(self) -> str:
        lines = [f"Job API benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", ""]
        lines += self.setup_lines() + [""]
        lines += _text_table(
            ["throughput", "ops/s", "HTTP req/s", "p50 ms", "p99 ms", "errors"],
            self.throughput_rows(),
        )
        lines.append("")
        lines += _text_table(["search", "p50 ms", "p95 ms", "p99 ms", "calls"], self.search_rows())
        lines.append("")
        lines += _text_table(CPU_HEADER, self.cpu_rows())
        lines.append("")
        lines += self.verdicts() + self.errors_lines() + self.profile_lines()
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [
            "| throughput | ops/s | HTTP req/s | p50 ms | p99 ms | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [_md_row(r) for r in self.throughput_rows()]
        lines += [
            "",
            "| search | p50 ms | p95 ms | p99 ms | calls |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [_md_row(r) for r in self.search_rows()]
        lines += [
            "",
            "| " + " | ".join(CPU_HEADER) + " |",
            "| --- |" + " ---: |" * (len(CPU_HEADER) - 1),
        ]
        lines += [_md_row(r) for r in self.cpu_rows()]
        lines.append("")
        lines += [f"- {line}" for line in self.verdicts() + self.errors_lines()]
        lines.append("")
        lines += [f"- {line}" for line in self.setup_lines()]
        if self.profile:
            lines += [
                "",
                "Where the server's time went during the mixed phase (py-spy, share "
                "of the samples of the server's thread, inclusive):",
                "",
            ]
            lines += [f"- {share:5.1f}% `{frame}`" for share, frame in self.profile]
        return "\n".join(lines) + "\n"


CPU_HEADER = [
    "CPU (cores of the machine)",
    "server",
    "server ms/op",
    "1-core ceiling op/s",
    "load procs",
    "load ms/op",
    "ZooKeeper",
    "others",
]


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    return [line(header), "  ".join("-" * w for w in widths), *[line(r) for r in rows]]


def _md_row(cells: list[str]) -> str:
    first = cells[0].replace("  ", "&nbsp;&nbsp;", 1) if cells[0].startswith("  ") else cells[0]
    return "| " + " | ".join([first, *cells[1:]]) + " |"


def command_line(args: argparse.Namespace) -> str:
    parts = [".venv/bin/python -m bench.api"]
    if args.jobs != 1_000_000:
        parts.append(f"--jobs {args.jobs}")
    if args.seconds != 20:
        parts.append(f"--seconds {args.seconds:g}")
    if args.clients != 50:
        parts.append(f"--clients {args.clients}")
    if args.profile:
        parts.append("--profile")
    return " ".join(parts)


def write_reports(report: Report, load_at_start: str, argv: Sequence[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    REPORT.write_text(
        f"# Job API benchmark ({when})\n\n`{command_line(report.args)}`\n\n" + report.markdown()
    )
    print(f"\nwritten: {REPORT.relative_to(REPO)}")
    if not report.args.publish:
        return
    command = publishing.command_line("bench.api", argv)
    publishing.publish("api", publishing.section(command, load_at_start, report.markdown()))
    cpu = platform.processor() or platform.machine()
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                cpu = text_line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(
        "# Job API benchmark\n\n"
        "Measures the two goals of the job API at scale: (a) at least 1,500 mixed add/get/edit\n"
        "operations per second from 50 concurrent `nuvla.api.Api` clients (one `Api.add` is a\n"
        "`search(last=0)` and a `POST`, counted as one operation, two HTTP requests), and (b)\n"
        f"`api.search('job', filter=\"{SEARCH_FILTER}\", orderby='{SEARCH_ORDER}', "
        f"last={SEARCH_LAST})` under {GOAL_SEARCH_MS:.0f} ms (p95),\n"
        "both with 1,000,000 stored jobs. Each is printed against a baseline measured in the same\n"
        "run: the same clients doing `GET /api/cloud-entry-point` (HTTP and client only, no\n"
        "database, no authentication), and the same search as a full scan without indexes.\n\n"
        "How it runs: the documents (97% SUCCESS/FAILED/CANCELED, 2% QUEUED, 1% RUNNING,\n"
        f"created over {SPREAD_DAYS} days, {len(ACTIONS)} actions) are written with\n"
        "`SqliteJobStore.insert_many` into a database cached under `bench/results/`; the real\n"
        "server (`python -m nuvla_job.cli.api serve`) runs on a copy of it with a private\n"
        "ZooKeeper; the clients run on gevent in separate load processes. Adds are `push` jobs,\n"
        "so each one also creates a ZooKeeper queue entry.\n\n"
        f"## Command\n\n```\n{command_line(report.args)}\n```\n\n"
        "Options: `--jobs N` (default 1,000,000), `--seconds S` (default 20), `--clients C`\n"
        "(default 50), `--procs P` (load processes, default 2), `--reseed` (rebuild the cached\n"
        "database), `--profile` (py-spy on the server during the mixed phase; needs\n"
        "`.venv/bin/pip install py-spy`), `--quiet-wait S` (wait up to S seconds for other\n"
        "processes to go idle before each load phase). A quick run:\n"
        "`.venv/bin/python -m bench.api --jobs 10000 --seconds 5`.\n\n"
        "## Reading the numbers\n\n"
        "The server, ZooKeeper and the load processes share this machine's cores, so the rates\n"
        "depend on whatever else runs. The CPU table is the steadier figure: `server ms/op` is\n"
        "the server's CPU time per operation (its process is one gevent thread, so\n"
        "`1-core ceiling` = 1000 / that is the most it can serve with the clients elsewhere);\n"
        "`load ms/op` is what the `nuvla.api` clients (requests under gevent) cost per\n"
        "operation; `others` is every other process on the machine during the window. Only\n"
        "operations that start and finish inside the measured window count; latencies are per\n"
        "client call (an add is two HTTP requests).\n\n"
        f"## Machine\n\n- {os.cpu_count()} CPUs (`nproc`), {cpu}\n"
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.release()}\n\n"
        f"## Results ({when})\n\n" + report.markdown()
    )
    print(f"written: {DOC.relative_to(REPO)}")


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="stored jobs (1,000,000)")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="measured seconds per load phase (20)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--procs", type=int, default=2, help="load processes (2)")
    parser.add_argument(
        "--search-calls", type=int, default=200, help="timed api.search calls (200)"
    )
    parser.add_argument(
        "--scan-repeats", type=int, default=3, help="timed full-scan baseline runs (3)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for other processes to go idle before each load phase (60)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the server with py-spy during the mixed phase "
        "(pip install py-spy); raw stacks in bench/results/api-profile.txt",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write docs/benchmarks-api.md and the api section of docs/benchmarks.md",
    )
    parser.add_argument("--reseed", action="store_true", help="rebuild the cached seeded database")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql", "both"),
        default=None,
        help="the stores compared (bench/api_stores.py): mixed ops/s and the search on each, "
        "one table, section api_stores of docs/benchmarks.md [default: the SQLite report]",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        choices=(1, 2),
        default=1,
        help="with --db: PostgreSQL measured with one job API, and with two when 2",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.clients < 1 or args.procs < 1 or args.seconds <= 0:
        parser.error("--jobs, --clients, --procs and --seconds must be positive")
    args.procs = min(args.procs, args.clients)
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return args


def run(args: argparse.Namespace) -> Report:
    from nuvla_job.localstack.jobapi import JobApiProcess
    from nuvla_job.localstack.zookeeper import ZooKeeperServer

    seed_info = seeded_database(args.jobs, args.reseed)
    print(
        f"database: {seed_info.path.relative_to(REPO)} "
        f"({'cached' if seed_info.cached else 'new'}; seeding took {seed_info.seconds:,.1f} s)",
        flush=True,
    )
    zookeeper = ZooKeeperServer()
    server: JobApiProcess | None = None
    loaders: list[LoadProcess] = []
    try:
        zookeeper.start()
        server = JobApiProcess(zookeeper.hosts, "--log-level", "WARNING", start_timeout=120)
        copy_started = time.perf_counter()
        # The server writes to its database: the cached file stays pristine.
        shutil.copyfile(seed_info.path, server.db)
        # Flushed now, or the kernel writes the copy back during the measurement and the
        # server's WAL checkpoints (fsync) wait for all of it.
        with open(server.db, "rb+") as copy:
            os.fsync(copy.fileno())
        copy_seconds = time.perf_counter() - copy_started
        db_bytes = server.db.stat().st_size
        known = sample_ids(server.db, args.jobs, 2000)
        server.start()
        pid, zk_pid = server.pid, zookeeper.pid
        assert pid is not None and zk_pid is not None
        print(f"job API pid {pid} on {server.endpoint}, ZooKeeper pid {zookeeper.pid}", flush=True)

        print(
            f"search: {args.search_calls} api.search calls and the full-scan baseline ...",
            flush=True,
        )
        search, plan, queued = bench_search(
            server.admin_api(), server.db, args.search_calls, args.scan_repeats
        )

        creds = server.credentials()
        share, extra = divmod(args.clients, args.procs)
        for index in range(args.procs):
            loaders.append(
                LoadProcess(
                    {
                        "endpoint": server.endpoint,
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
        PROFILE.unlink(missing_ok=True)
        for phase in ("cloud-entry-point", "mixed"):
            wait_until_quiet(args.quiet_wait)
            print(
                f"load: {phase}, {args.clients} clients, {args.warmup:g} s warm-up + "
                f"{args.seconds:g} s ...",
                flush=True,
            )
            profile_to = PROFILE if args.profile and phase == "mixed" else None
            phases[phase] = run_phase(
                loaders, phase, (pid, zk_pid), args.warmup, args.seconds, profile_to
            )
            if server.pid is None or not zookeeper.running:
                raise RuntimeError(
                    f"the job API or ZooKeeper stopped during {phase}:\n{server.log_tail()}"
                )
            if not phases[phase].ops():
                raise RuntimeError(
                    f"no {phase} operation completed: "
                    f"{phases[phase].samples or 'no error reported'}"
                )
        profile = summarize_profile(PROFILE) if args.profile and PROFILE.exists() else None
        return Report(
            args,
            seed_info,
            copy_seconds,
            db_bytes,
            search,
            plan,
            queued,
            phases["cloud-entry-point"],
            phases["mixed"],
            profile,
        )
    finally:
        for loader in loaders:
            loader.close()
        if server is not None:
            if server.pid is None and server.log_tail():
                print(f"job API log tail:\n{server.log_tail()}", file=sys.stderr)
            server.close()
        zookeeper.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = publishing.load_average()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    # Even when started with SIGINT ignored (a shell's background job), Ctrl-C must unwind.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.db is not None:
            from bench import api_stores

            return api_stores.main(args, sys.argv[1:] if argv is None else argv)
        report = run(args)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(
            f"interrupted ({type(exc).__name__} {exc}); everything started was stopped",
            file=sys.stderr,
        )
        return 130
    print()
    print(report.text())
    write_reports(report, load_at_start, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

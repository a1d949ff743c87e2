"""The built-in actions (`nuvla_job/actions/`), each run by a real executor process against
the real job API and ZooKeeper."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from nuvla_job.api.sqlite import Database, SqliteJobStore
from nuvla_job.jobsearch import iter_jobs
from nuvla_job.localstack.processes import EngineProcess
from nuvla_job.registry import distributions, load_actions
from nuvla_job.timeutil import format_time
from tests.integration.test_executor import add, queue_empty, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.processes import executor_process
from tests.support.zookeeper import ZooKeeperServer

FINAL = ("SUCCESS", "FAILED", "CANCELED")


@pytest.fixture
def executors(zookeeper: ZooKeeperServer) -> Iterator[Callable[..., EngineProcess]]:
    """Start executors on a job API of the test's own (stopped after the test)."""
    started: list[EngineProcess] = []

    def start(server: JobApiProcess, *extra: str) -> EngineProcess:
        process = executor_process(
            zookeeper.hosts, server.endpoint, str(server.credentials_path), *extra
        ).start()
        started.append(process)
        process.wait_for_log("running up to")
        return process

    yield start
    for process in started:
        process.stop()


def stored_job(state: str, days_old: float, **extra) -> dict:
    """A job document as the job API stores it, created `days_old` days ago."""
    when = format_time(datetime.now(UTC) - timedelta(days=days_old))
    return {
        "id": f"job/{uuid.uuid4()}",
        "resource-type": "job",
        "state": state,
        "action": "seeded",
        "progress": 100 if state in FINAL else 0,
        "execution-mode": "pull",
        "version": 2,
        "priority": 999,
        "created": when,
        "updated": when,
        "acl": {"owners": ["group/nuvla-admin"]},
        **extra,
    }


def find_one(api: Api, filter: str, timeout: float = 30.0) -> str:
    """The id of the one job matching `filter`, waiting for it to exist."""
    deadline = time.monotonic() + timeout
    while True:
        found = api.search("job", filter=filter, select="id").data["resources"]
        if found:
            [job] = found
            return job["id"]
        assert time.monotonic() < deadline, f"no job matches {filter}"
        time.sleep(0.05)


def registered_distributions() -> dict:
    if "cleanup_jobs" not in distributions:
        load_actions(use_entry_points=False)
    return distributions.distributions


# -- distributions ---------------------------------------------------------------------------------


def test_distributed_actions_are_declared() -> None:
    declared = registered_distributions()
    assert declared["cleanup_jobs"].interval == 24 * 3600
    assert list(declared["cleanup_jobs"].generate(None)) == [{"action": "cleanup_jobs"}]
    assert declared["monitor_bulk_jobs"].interval == 30  # upstream's
    assert declared["monitor_bulk_jobs"].election_name == "monitor_bulk_job"  # upstream's
    assert declared["restore_queue"].interval == 600


# -- cleanup_jobs ------------------------------------------------------------------------------


@pytest.fixture
def seeded_api(zookeeper: ZooKeeperServer) -> Iterator[tuple[JobApiProcess, dict[str, str]]]:
    """A job API whose database holds old jobs before it starts (the API sets `created`
    itself, so old jobs cannot be made through it)."""
    seeds = {
        "success_10d": stored_job("SUCCESS", 10),
        "failed_8d": stored_job("FAILED", 8),
        "canceled_30d": stored_job("CANCELED", 30),
        "success_3d": stored_job("SUCCESS", 3),
        "failed_1d": stored_job("FAILED", 1),
        "queued_10d": stored_job("QUEUED", 10),
        "running_20d": stored_job("RUNNING", 20),
    }
    server = JobApiProcess(zookeeper.hosts)
    database = Database(str(server.db))
    SqliteJobStore(database).insert_many(seeds.values())
    database.close()
    try:
        server.start()
        yield server, {name: doc["id"] for name, doc in seeds.items()}
    finally:
        server.close()


def test_cleanup_deletes_only_final_jobs_older_than_the_age(seeded_api, executors) -> None:
    server, seeds = seeded_api
    api = server.admin_api()
    executors(server)

    def seeds_left() -> set[str]:
        found = api.search("job", filter="action='seeded'", select="id").data["resources"]
        return {name for name, job_id in seeds.items() if job_id in {j["id"] for j in found}}

    first = wait_state(api, add(api, "cleanup_jobs"))
    assert first["state"] == "SUCCESS", first.get("status-message")
    assert first["status-message"] == "deleted 3 job(s) in a final state older than 7 day(s)"
    assert seeds_left() == {"success_3d", "failed_1d", "queued_10d", "running_20d"}

    second = wait_state(api, add(api, "cleanup_jobs", payload=json.dumps({"days": 2})))
    assert second["status-message"].startswith("deleted 1 job(s)")
    assert seeds_left() == {"failed_1d", "queued_10d", "running_20d"}
    assert api.get(first["id"]).data["state"] == "SUCCESS"  # young: kept

    bad = wait_state(api, add(api, "cleanup_jobs", payload=json.dumps({"days": "x"})))
    assert bad["state"] == "FAILED" and "'days'" in bad["status-message"]
    assert seeds_left() == {"failed_1d", "queued_10d", "running_20d"}


# -- cancel_children_jobs ----------------------------------------------------------------------


def pull_job(api: Api, action: str = "test_ok", state: str | None = None, **attrs) -> str:
    """A job no executor takes (pull mode), put in `state` by hand."""
    job_id = add(api, action, **{"execution-mode": "pull", **attrs})
    if state is not None:
        api.edit(job_id, {"state": state})
    return job_id


def test_cancelling_a_bulk_job_cancels_its_unfinished_children(
    admin_api: Api, start_executor
) -> None:
    parent = pull_job(admin_api, "bulk_parent_test")
    queued = [pull_job(admin_api, **{"parent-job": parent}) for _ in range(2)]
    running = pull_job(admin_api, state="RUNNING", **{"parent-job": parent})
    done = pull_job(admin_api, state="SUCCESS", **{"parent-job": parent})
    nested = pull_job(admin_api, "bulk_nested_test", **{"parent-job": parent})
    grandchild = pull_job(admin_api, **{"parent-job": nested})
    stranger = pull_job(admin_api, **{"parent-job": pull_job(admin_api, "bulk_other")})
    start_executor()
    admin_api.operation(admin_api.get(parent), "cancel")
    canceller = find_one(
        admin_api, f"action='cancel_children_jobs' and target-resource/href='{parent}'"
    )
    job = wait_state(admin_api, canceller)
    assert job["state"] == "SUCCESS", job.get("status-message")
    assert job["status-message"] == f"cancelled 4 child job(s) of {parent}"
    for child in [*queued, running, nested]:
        assert admin_api.get(child).data["state"] == "CANCELED"
    assert admin_api.get(done).data["state"] == "SUCCESS"
    assert admin_api.get(stranger).data["state"] == "QUEUED"
    # The bulk child's own cancellation cancelled its child in turn.
    assert wait_state(admin_api, grandchild)["state"] == "CANCELED"


# -- bulk jobs ---------------------------------------------------------------------------------

# Parents leave their job RUNNING for the monitor: the executor runs the monitor's
# distribution too, every second.
MONITOR = (
    "--distributions",
    "--distribution-include",
    "monitor_bulk_jobs",
    "--distribution-interval",
    "monitor_bulk_jobs:1",
)


def children_of(api: Api, parent: str) -> list[dict]:
    return api.search("job", filter=f"parent-job='{parent}'", orderby="created").data["resources"]


def test_bulk_job_runs_its_children_and_sums_them_up(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    start_executor("--concurrency", "10", *MONITOR)
    bodies = [{"action": "test_ok"}, {"action": "test_ok"}, {"action": "test_fail_code"}]
    mixed = add(admin_api, "bulk_jobs", priority=40, payload=json.dumps({"jobs": bodies}))
    echo = {"action": "test_payload_echo", "payload": {"k": 1}}  # JSON, not a JSON text
    good = add(admin_api, "bulk_jobs", payload=json.dumps({"jobs": [bodies[0], echo]}))
    job = wait_state(admin_api, mixed)
    assert job["state"] == "FAILED", job.get("status-message")
    assert job["status-message"].startswith(
        "3 child job(s): 2 SUCCESS, 1 FAILED; not successful: job/"
    )
    children = children_of(admin_api, mixed)
    assert sorted(job["nested-jobs"]) == sorted(c["id"] for c in children)
    assert sorted(c["action"] for c in children) == ["test_fail_code", "test_ok", "test_ok"]
    assert {c["priority"] for c in children} == {40}  # inherited
    assert all(c["state"] in FINAL and c["acl"] == job["acl"] for c in children)
    done = wait_state(admin_api, good)
    assert (done["state"], done["progress"], done["return-code"]) == ("SUCCESS", 100, 0)
    assert done["status-message"] == "2 child job(s): 2 SUCCESS"
    [echoed] = [c for c in children_of(admin_api, good) if c["action"] == "test_payload_echo"]
    assert echoed["status-message"] == '{"k": 1}'
    bad = wait_state(admin_api, add(admin_api, "bulk_jobs", payload=json.dumps({"jobs": 3})))
    assert bad["state"] == "FAILED" and "payload must be" in bad["status-message"]
    queue_empty(zk)


def test_interrupted_bulk_job_creates_only_the_missing_children(
    admin_api: Api, start_executor
) -> None:
    bodies = [{"action": "test_ok", "tags": [f"child-{i}"]} for i in range(3)]
    parent = add(admin_api, "bulk_jobs", payload=json.dumps({"jobs": bodies}))
    # What a run killed after creating the first child leaves behind.
    add(admin_api, "test_ok", tags=["child-0"], **{"parent-job": parent})
    start_executor(*MONITOR)
    job = wait_state(admin_api, parent)
    assert job["state"] == "SUCCESS", job.get("status-message")
    children = children_of(admin_api, parent)
    assert [c["tags"][0] for c in children] == ["child-0", "child-1", "child-2"]
    assert len(job["nested-jobs"]) == 3


def test_a_running_bulk_parent_holds_no_executor_slot(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # One slot: a parent waiting in it for its children would wait for ever.
    start_executor("--concurrency", "1", *MONITOR)
    bodies = [{"action": "test_ok"} for _ in range(3)]
    parent = add(admin_api, "bulk_jobs", payload=json.dumps({"jobs": bodies}))
    job = wait_state(admin_api, parent)
    assert (job["state"], job["progress"]) == ("SUCCESS", 100), job.get("status-message")
    assert job["status-message"] == "3 child job(s): 3 SUCCESS"
    assert "monitor" in job["tags"]
    monitors = admin_api.search(
        "job", filter=f"action='monitor_bulk_job' and target-resource/href='{parent}'"
    ).data["resources"]
    assert monitors and {m["state"] for m in monitors} == {"SUCCESS"}
    queue_empty(zk)


def test_cancelled_bulk_job_stops_following_and_children_are_cancelled(
    admin_api: Api, start_executor
) -> None:
    start_executor("--concurrency", "10", "--grace-period", "1")
    sleepy = {"action": "test_sleep", "payload": json.dumps({"seconds": 60})}
    parent = add(admin_api, "bulk_jobs", payload=json.dumps({"jobs": [sleepy, sleepy]}))
    deadline = time.monotonic() + 30
    while len([c for c in children_of(admin_api, parent) if c["state"] == "RUNNING"]) < 2:
        assert time.monotonic() < deadline, "the children never ran"
        time.sleep(0.05)
    assert admin_api.get(parent).data["state"] == "RUNNING"
    admin_api.operation(admin_api.get(parent), "cancel")
    canceller = find_one(
        admin_api, f"action='cancel_children_jobs' and target-resource/href='{parent}'"
    )
    assert wait_state(admin_api, canceller)["state"] == "SUCCESS"
    assert {c["state"] for c in children_of(admin_api, parent)} == {"CANCELED"}
    assert admin_api.get(parent).data["state"] == "CANCELED"


# -- monitor_bulk_jobs -------------------------------------------------------------------------


def running_parent(
    api: Api, child_states: list[str], launched: bool = True
) -> tuple[str, list[str]]:
    """A RUNNING bulk parent (run by nobody) with children in the given states."""
    parent = pull_job(api, "bulk_by_hand", state="RUNNING")
    children = [
        pull_job(api, state=None if s == "QUEUED" else s, **{"parent-job": parent})
        for s in child_states
    ]
    if launched:
        api.edit(parent, {"nested-jobs": children})
    return parent, children


def test_monitor_settles_running_bulk_jobs_from_their_children(
    admin_api: Api, start_executor
) -> None:
    half, half_children = running_parent(admin_api, ["SUCCESS", "RUNNING", "QUEUED", "QUEUED"])
    good, _ = running_parent(admin_api, ["SUCCESS", "SUCCESS"])
    partly, partly_children = running_parent(admin_api, ["SUCCESS", "CANCELED"])
    launching, _ = running_parent(admin_api, ["SUCCESS"], launched=False)
    generate = registered_distributions()["monitor_bulk_jobs"].generate
    # One monitor job per running parent tagged `monitor`, none for an untagged one.
    assert list(generate(admin_api)) == []
    for parent in (half, good, partly, launching):
        admin_api.edit(parent, {"tags": ["monitor"]})
    expected = [
        {"action": "monitor_bulk_job", "target-resource": {"href": p}}
        for p in (half, good, partly, launching)
    ]
    assert sorted(map(str, generate(admin_api))) == sorted(map(str, expected))
    waiting = pull_job(admin_api, "monitor_bulk_job", **{"target-resource": {"href": good}})
    assert len(list(generate(admin_api))) == 3  # one waiting for `good`: no second one
    admin_api.operation(admin_api.get(waiting), "cancel")
    start_executor()

    for parent in (half, good, partly, launching):
        monitor = wait_state(
            admin_api, add(admin_api, "monitor_bulk_job", **{"target-resource": {"href": parent}})
        )
        assert monitor["state"] == "SUCCESS", monitor.get("status-message")
    assert (admin_api.get(half).data["state"], admin_api.get(half).data["progress"]) == (
        "RUNNING",
        25,
    )
    settled = admin_api.get(good).data
    assert (settled["state"], settled["return-code"]) == ("SUCCESS", 0)
    assert settled["status-message"] == "2 child job(s): 2 SUCCESS"
    failed = admin_api.get(partly).data
    assert (failed["state"], failed["return-code"]) == ("FAILED", 1)
    assert failed["status-message"] == (
        f"2 child job(s): 1 SUCCESS, 1 CANCELED; not successful: {partly_children[1]}"
    )
    untouched = admin_api.get(launching).data  # still creating its children: left alone
    assert (untouched["state"], untouched["progress"]) == ("RUNNING", 0)
    # A settled parent is no longer monitored.
    assert sorted(map(str, generate(admin_api))) == sorted(map(str, [expected[0], expected[3]]))

    for child, state in zip(half_children[1:], ["SUCCESS", "FAILED", "SUCCESS"], strict=True):
        admin_api.edit(child, {"state": state})
    wait_state(admin_api, add(admin_api, "monitor_bulk_job", **{"target-resource": {"href": half}}))
    assert admin_api.get(half).data["state"] == "FAILED"
    assert (
        admin_api.get(half).data["status-message"].startswith("4 child job(s): 3 SUCCESS, 1 FAILED")
    )


def test_monitor_bulk_jobs_of_earlier_versions_settles_every_running_parent(
    admin_api: Api, start_executor
) -> None:
    half, _ = running_parent(admin_api, ["SUCCESS", "RUNNING", "QUEUED", "QUEUED"])
    good, _ = running_parent(admin_api, ["SUCCESS", "SUCCESS"])
    partly, partly_children = running_parent(admin_api, ["SUCCESS", "CANCELED"])
    launching, _ = running_parent(admin_api, ["SUCCESS"], launched=False)
    start_executor()
    monitor = wait_state(admin_api, add(admin_api, "monitor_bulk_jobs"))
    assert monitor["state"] == "SUCCESS", monitor.get("status-message")
    assert (admin_api.get(half).data["state"], admin_api.get(half).data["progress"]) == (
        "RUNNING",
        25,
    )
    assert admin_api.get(good).data["status-message"] == "2 child job(s): 2 SUCCESS"
    assert admin_api.get(partly).data["status-message"] == (
        f"2 child job(s): 1 SUCCESS, 1 CANCELED; not successful: {partly_children[1]}"
    )
    assert admin_api.get(launching).data["state"] == "RUNNING"


def test_paging_yields_every_job_once_in_order(zookeeper: ZooKeeperServer) -> None:
    """The windowed cursor of `iter_jobs`, on jobs spread over days and on many jobs created
    in the same millisecond (the cursor's tie-break on id)."""
    spread = [stored_job("QUEUED", days / 100) for days in range(1000)]
    same = stored_job("QUEUED", 2.5)
    crowd = [{**same, "id": f"job/{uuid.uuid4()}"} for _ in range(150)]
    others = [stored_job("SUCCESS", days / 10) for days in range(50)]
    server = JobApiProcess(zookeeper.hosts)
    database = Database(str(server.db))
    SqliteJobStore(database).insert_many([*spread, *crowd, *others])
    database.close()
    try:
        server.start()
        api = server.admin_api()
        seen = [doc["id"] for doc in iter_jobs(api, "state='QUEUED'", select="id", page_size=40)]
    finally:
        server.close()
    expected = sorted([*spread, *crowd], key=lambda doc: (doc["created"], doc["id"]))
    assert seen == [doc["id"] for doc in expected]


# -- restore_queue -----------------------------------------------------------------------------


def test_restore_queue_action_runs_lost_jobs_exactly_once(
    fresh_api: JobApiProcess, zk: KazooClient, executors, tmp_path: Path
) -> None:
    api = fresh_api.admin_api()
    runs = tmp_path / "runs.log"
    payload = json.dumps({"seconds": 0, "log": str(runs)})
    ids = [add(api, "test_sleep", priority=p, payload=payload) for p in (5, 50, 500) * 2]
    lost = ids[::2]
    for name in zk.get_children(queue.ENTRIES):
        if zk.get(f"{queue.ENTRIES}/{name}")[0].decode() in lost:
            zk.delete(f"{queue.ENTRIES}/{name}")
    # The executor connects with --zk-hosts only: the action finds ZooKeeper the same way.
    executors(fresh_api)
    for job_id in set(ids) - set(lost):
        assert wait_state(api, job_id)["state"] == "SUCCESS"
    assert {api.get(job_id).data["state"] for job_id in lost} == {"QUEUED"}

    restore = wait_state(api, add(api, "restore_queue", payload=json.dumps({"min-age": 0})))
    assert restore["state"] == "SUCCESS", restore.get("status-message")
    assert restore["status-message"].startswith("queued 3 job(s) that had no queue entry")
    for job_id in lost:
        assert wait_state(api, job_id)["state"] == "SUCCESS"
    queue_empty(zk)
    again = wait_state(api, add(api, "restore_queue", payload=json.dumps({"min-age": 0})))
    assert again["status-message"].startswith("queued 0 job(s)")
    starts = [line.split()[1] for line in runs.read_text().splitlines() if line.startswith("start")]
    assert sorted(starts) == sorted(ids)  # every job ran, none twice


# -- http_request ------------------------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """Records every request; answers by path: /status/N, /big, /slow, anything else echoes."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,  # type: ignore
                "headers": dict(self.headers),
                "body": body,
            }
        )
        status, text = 200, json.dumps({"echo": body})
        if self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
        elif self.path == "/big":
            text = "x" * 50_000
        elif self.path == "/slow":
            self.server.release.wait(60)  # type: ignore[attr-defined]
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    server.seen, server.release = [], threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def http_job(api: Api, **payload) -> dict:
    return wait_state(api, add(api, "http_request", payload=json.dumps(payload)))


def test_http_request_sends_and_records_without_leaking_secrets(
    admin_api: Api, http_server, start_executor
) -> None:
    base, server = http_server
    process = start_executor()
    job = http_job(
        admin_api,
        url=f"{base}/echo?token=t0psecret-query&x=1",
        method="post",
        headers={
            "Authorization": "Bearer s3cr3t-bearer-value",
            "X-Api-Key": "k3y-value-secret",
            "X-Trace": "trace-123",
        },
        body={"hello": "world"},
        **{"expected-status": [200, 201]},
    )
    assert job["state"] == "SUCCESS", job.get("status-message")
    [seen] = server.seen
    assert (seen["method"], seen["path"]) == ("POST", "/echo?token=t0psecret-query&x=1")
    assert seen["headers"]["Authorization"] == "Bearer s3cr3t-bearer-value"
    assert seen["headers"]["X-Trace"] == "trace-123"
    assert json.loads(seen["body"]) == {"hello": "world"}
    output = json.loads(job["output"])
    assert (output["status"], output["truncated"]) == (200, False)
    assert json.loads(json.loads(output["body"])["echo"]) == {"hello": "world"}
    assert job["status-message"] == f"POST {base}/echo?token=********&x=1 -> 200 OK"
    log = process.log()
    assert "trace-123" in log  # headers are logged...
    for secret in ("s3cr3t-bearer-value", "k3y-value-secret", "t0psecret-query"):
        assert secret not in log  # ...but never their secret values
        assert secret not in job["status-message"]


def test_http_request_outcomes(admin_api: Api, http_server, start_executor) -> None:
    base, _ = http_server
    start_executor()
    unexpected = http_job(admin_api, url=f"{base}/status/503")
    assert (unexpected["state"], unexpected["return-code"]) == ("FAILED", 1)
    assert unexpected["status-message"].endswith(
        "-> 503 Service Unavailable (expected a 2xx status)"
    )
    assert json.loads(unexpected["output"])["status"] == 503
    expected = http_job(admin_api, url=f"{base}/status/404", **{"expected-status": 404})
    assert expected["state"] == "SUCCESS"
    big = http_job(admin_api, url=f"{base}/big", **{"max-response": 1000})
    output = json.loads(big["output"])
    assert (big["state"], len(output["body"]), output["truncated"]) == ("SUCCESS", 1000, True)
    slow = http_job(admin_api, url=f"{base}/slow", timeout=0.5)
    assert slow["state"] == "FAILED"
    assert slow["status-message"] == f"GET {base}/slow: no answer within 0.5 s"
    refused = http_job(admin_api, url="http://127.0.0.1:1/")
    assert refused["status-message"] == (
        "GET http://127.0.0.1:1/: request failed (ConnectionError)"
    )
    bad = http_job(admin_api, url="ftp://example.org/file")
    assert bad["state"] == "FAILED" and bad["status-message"].startswith("bad payload: 'url'")


# -- demo actions --------------------------------------------------------------------------------


def test_demo_actions_still_work(admin_api: Api, start_executor) -> None:
    start_executor()
    assert wait_state(admin_api, add(admin_api, "dummy_test_action"))["state"] == "SUCCESS"
    slept = wait_state(admin_api, add(admin_api, "sleep", payload=json.dumps({"seconds": 0.1})))
    assert slept["state"] == "SUCCESS"
    failed = wait_state(
        admin_api, add(admin_api, "sleep", payload=json.dumps({"seconds": 0, "fail": True}))
    )
    assert failed["state"] == "FAILED" and "failed as asked" in failed["status-message"]

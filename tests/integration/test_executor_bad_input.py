"""Bad input campaign, executor side, with a real executor process, job API and ZooKeeper.

Garbage queue entries (test_executor.py covers non-UTF-8, another type's id and empty
data one by one; here: random bytes, 1 MB of data, ids that only look like job ids, and
a job id nobody created, all at once) and misbehaving actions (tests/actions/misbehaving.py):
each is logged, its entry consumed, and the executor keeps running the jobs after it.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid

from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from tests.integration.test_executor import add, queue_empty, wait_state

SEED = 6  # the random bytes are the same on every run


def garbage_entries() -> dict[str, bytes]:
    rng = random.Random(SEED)
    return {
        "random bytes": rng.randbytes(64),
        "random bytes after job/": b"job/" + rng.randbytes(32),
        "non-UTF-8": b"job/\xc3\x28abc",
        "1 MB of data": b"j" * 1_000_000,
        "another resource type": b"credential/abc",
        "empty": b"",
        "a job id that does not exist": f"job/{uuid.uuid4()}".encode(),
        "job/ alone": b"job/",
        "a newline in the id": f"job/{uuid.uuid4()}\ncredential/abc".encode(),
        "a query string": b"job/?filter=state='QUEUED'",
        "a fragment": b"job/#x",
        "a dot segment": b"job/..",
        "an escaped slash": b"job/..%2fcredential%2fabc",
        "NUL": b"job/a\x00b",
    }


def test_garbage_entries_are_logged_consumed_and_executor_goes_on(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    garbage = garbage_entries()
    names = {}
    for what, data in garbage.items():  # priority 0: taken before any real job
        path = zk.create(queue.entry_prefix(0), data, sequence=True, makepath=True)
        names[path.rsplit("/", 1)[1]] = what
    before = add(admin_api, "test_ok")  # queued behind the garbage
    process = start_executor("--concurrency", "4")
    assert wait_state(admin_api, before)["state"] == "SUCCESS"
    try:
        queue_empty(zk)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{process.log()[-5000:]}") from None
    after = add(admin_api, "test_ok")  # put after all of it: still run
    assert wait_state(admin_api, after)["state"] == "SUCCESS"
    log = process.log()
    assert "Traceback" not in log, log[-3000:]
    for name, what in names.items():
        # Each entry is named in a line saying it was dropped.
        data = garbage[what]
        text = data.decode("utf-8", "replace")
        logged = name in log or (text.isprintable() and f"{text}:" in log)
        assert logged, f"{what} ({name}) was not logged:\n{log[-3000:]}"
    assert log.count("holds no job id") >= 7


# -- the queue as a trust boundary (anyone may write to it while its ACLs are open) ---------------


def test_an_entry_with_child_nodes_is_dropped_whole(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    path = zk.create(queue.entry_prefix(0), b"not a job", sequence=True, makepath=True)
    zk.create(f"{path}/child", b"", makepath=True)
    start_executor()
    job_id = add(admin_api, "test_ok")  # behind it: runs once it is out of the way
    assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
    queue_empty(zk)  # neither the entry nor its taken node is left


def test_a_pull_job_found_in_the_queue_is_consumed_without_running_it(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # The finding: a hand-made entry holding another user's pull-mode job id made the
    # executor run it with the executor's (admin) rights.
    job_id = add(admin_api, "test_ok", **{"execution-mode": "pull"})
    zk.create(queue.entry_prefix(0), job_id.encode(), sequence=True, makepath=True)
    process = start_executor()
    after = add(admin_api, "test_ok")
    assert wait_state(admin_api, after)["state"] == "SUCCESS"
    queue_empty(zk)
    job = admin_api.get(job_id).data
    assert (job["state"], job.get("started")) == ("QUEUED", None), "it was not run"
    assert f"{job_id}: a pull-mode job in queue entry" in process.log()


def test_a_job_no_engine_takes_is_failed_saying_so(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # The finding: `version: 99` had the job released every 5 s, forever.
    job_id = add(admin_api, "test_ok", version=99)
    start_executor(env={"JOB_NEWER_VERSION_MAX_RELEASES": "2"})
    job = wait_state(admin_api, job_id, timeout=60)
    assert job["state"] == "FAILED"
    assert job["status-message"].startswith(
        "no engine took this job: its version 99 is newer than 2, the newest this engine runs"
    )
    queue_empty(zk)


# -- misbehaving actions --------------------------------------------------------------------------


def test_non_int_return_values_fail_the_job(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    start_executor()
    for value in ("None", "'0'", "True", "-1", "1.5", "[]"):
        job = wait_state(
            admin_api, add(admin_api, "test_returns", payload=json.dumps({"value": value}))
        )
        assert job["state"] == "FAILED", value
        assert "instead of an int return code" in job["status-message"], value
    queue_empty(zk)


BASE_EXCEPTIONS = [
    "SystemExit",
    "KeyboardInterrupt",
    "GeneratorExit",
    "CustomBaseException",
    "SystemExit0",
    "StopIteration",
]


def test_base_exceptions_fail_the_job_and_executor_goes_on(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor("--concurrency", "3")
    # One long job runs throughout: a raise that reached the hub would stop it too.
    witness = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 4}))
    wait_state(admin_api, witness, ("RUNNING",))
    jobs = {
        kind: add(admin_api, "test_raises_base", payload=json.dumps({"kind": kind}))
        for kind in BASE_EXCEPTIONS
    }
    for kind, job_id in jobs.items():
        job = wait_state(admin_api, job_id)
        assert (job["state"], job["return-code"]) == ("FAILED", 1), kind
        expected = {"SystemExit0": "SystemExit"}.get(kind, kind)
        assert job["status-message"].startswith(expected), job["status-message"][:200]
    assert wait_state(admin_api, witness)["state"] == "SUCCESS"
    after = add(admin_api, "test_ok")
    assert wait_state(admin_api, after)["state"] == "SUCCESS"
    queue_empty(zk)
    assert process._process is not None and process._process.poll() is None, "it stopped"
    assert "executor executor stopped" not in process.log()


def test_action_time_limit_fails_the_job(admin_api: Api, zk: KazooClient, start_executor) -> None:
    process = start_executor("--action-timeout", "1.5", "--concurrency", "3")
    started = time.monotonic()
    hung = add(admin_api, "test_hangs")
    quick = add(admin_api, "test_ok")
    job = wait_state(admin_api, hung, timeout=30)
    assert time.monotonic() - started < 20
    assert (job["state"], job["return-code"]) == ("FAILED", 1)
    assert "exceeded its time limit of 1.5 s" in job["status-message"]
    assert wait_state(admin_api, quick)["state"] == "SUCCESS"
    # The action's own limit (the decorator's timeout=) wins over the executor's.
    own = wait_state(admin_api, add(admin_api, "test_hangs_own_limit"), timeout=30)
    assert "exceeded its time limit of 0.5 s" in own["status-message"]
    # A slow action within the limit is not cut short.
    slow = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 0.5}))
    assert wait_state(admin_api, slow)["state"] == "SUCCESS"
    queue_empty(zk)
    assert f"{hung}: test_hangs exceeded its time limit" in process.log()


def test_action_time_limit_mixed_job_goes_to_pull(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    start_executor("--action-timeout", "1")
    job_id = add(admin_api, "test_hangs", **{"execution-mode": "mixed"})
    deadline = time.monotonic() + 30
    while (job := admin_api.get(job_id).data).get("execution-mode") != "pull":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["state"] == "QUEUED"
    assert "exceeded its time limit" in job["status-message"]
    queue_empty(zk)


def test_no_time_limit_by_default(admin_api: Api, zk: KazooClient, start_executor) -> None:
    process = start_executor()
    job_id = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 3}))
    assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
    assert "time limit" not in process.log()


def test_bad_action_timeout_is_a_usage_error(job_api, zookeeper) -> None:
    from tests.support.processes import executor_process

    process = executor_process(
        zookeeper.hosts, job_api.endpoint, str(job_api.credentials_path), "--action-timeout", "-3"
    ).start()
    try:
        assert process.wait(timeout=60) == 2
    finally:
        process.stop()
    assert "Invalid value for '--action-timeout'" in process.log()
    assert "Traceback" not in process.log()


def test_time_limit_still_releases_on_shutdown(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # Shutdown's JobReleased must still release the entry, not fail the job as timed out.
    import signal

    process = start_executor("--action-timeout", "60", "--grace-period", "1")
    job_id = add(admin_api, "test_hangs")
    wait_state(admin_api, job_id, ("RUNNING",))
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert admin_api.get(job_id).data["state"] == "RUNNING"
    [entry] = zk.get_children(queue.ENTRIES)
    assert zk.get(f"{queue.ENTRIES}/{entry}")[0] == job_id.encode()


def test_cpu_bound_action_is_reported_and_others_still_finish(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor("--concurrency", "5")
    others = [add(admin_api, "test_sleep", payload=json.dumps({"seconds": 0.2})) for _ in range(3)]
    busy = add(admin_api, "test_busy_loop", payload=json.dumps({"seconds": 2.5}))
    more = [add(admin_api, "test_ok") for _ in range(3)]
    for job_id in [*others, busy, *more]:
        assert wait_state(admin_api, job_id, timeout=60)["state"] == "SUCCESS"
    process.wait_for_log("blocked the event loop")
    lines = [line for line in process.log().splitlines() if "blocked the event loop" in line]
    assert any(busy in line and "test_busy_loop" in line for line in lines), lines
    assert all(re.search(r"WARNING", line) for line in lines)
    queue_empty(zk)

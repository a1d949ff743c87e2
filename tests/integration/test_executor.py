"""The executor table of engine-behaviour.md, row by row, with a real executor process,
the real job API and ZooKeeper."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from tests.support.jobapi import JobApiProcess
from tests.support.processes import executor_process, serving_on_free_port
from tests.support.waiting import wait_for
from tests.support.zkproxy import SessionNotingProxy

FINAL = ("SUCCESS", "FAILED", "CANCELED")


def wait_state(
    api: Api, job_id: str, states: tuple[str, ...] = FINAL, timeout: float = 30.0
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(job_id).data
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{job_id} still {job['state']} after {timeout} s")
        time.sleep(0.05)


def queue_empty(zk: KazooClient, timeout: float = 30.0) -> None:
    """Wait until /job/entries and /job/taken hold nothing (every entry consumed)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = zk.get_children(queue.ENTRIES) if zk.exists(queue.ENTRIES) else []
        taken = zk.get_children(queue.TAKEN) if zk.exists(queue.TAKEN) else []
        if not entries and not taken:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not empty: entries={entries} taken={taken}")
        time.sleep(0.05)


def add(api: Api, action: str, **attrs) -> str:
    return api.add("job", {"action": action, **attrs}).data["resource-id"]


# -- rows of the table ---------------------------------------------------------------------------


def test_queued_job_runs_and_succeeds(admin_api: Api, zk: KazooClient, start_executor) -> None:
    start_executor()
    job_id = add(admin_api, "test_ok")
    job = wait_state(admin_api, job_id)
    assert job["state"] == "SUCCESS"
    assert job["return-code"] == 0
    assert job["progress"] == 100
    assert "started" in job  # it went through RUNNING
    queue_empty(zk)


def test_running_job_is_run_again(admin_api: Api, zk: KazooClient, start_executor) -> None:
    job_id = add(admin_api, "test_ok")
    admin_api.edit(job_id, {"state": "RUNNING"})  # interrupted elsewhere
    start_executor()
    assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
    queue_empty(zk)


def test_non_zero_return_code_fails(admin_api: Api, zk: KazooClient, start_executor) -> None:
    start_executor()
    job = wait_state(admin_api, add(admin_api, "test_fail_code"))
    assert (job["state"], job["return-code"]) == ("FAILED", 3)
    queue_empty(zk)


def test_raising_action_fails_with_traceback(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    start_executor()
    job = wait_state(admin_api, add(admin_api, "test_raises"))
    assert (job["state"], job["return-code"]) == ("FAILED", 1)
    assert job["status-message"].startswith("RuntimeError: boom from the action")
    assert "Traceback" in job["status-message"]
    queue_empty(zk)


def test_raising_mixed_job_goes_back_to_pull(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor()
    job_id = add(admin_api, "test_raises", **{"execution-mode": "mixed"})
    process.wait_for_log(f"{job_id}: test_raises failed; it will re-run in pull mode")
    queue_empty(zk)
    job = admin_api.get(job_id).data
    assert job["state"] == "QUEUED"
    assert job["execution-mode"] == "pull"
    assert "pull mode" in job["status-message"]


def test_final_job_is_left_alone(admin_api: Api, zk: KazooClient, start_executor) -> None:
    job_id = add(admin_api, "test_ok")
    admin_api.operation(admin_api.get(job_id), "cancel")
    before = admin_api.get(job_id).data
    process = start_executor()
    process.wait_for_log(f"{job_id}: already CANCELED: entry dropped")
    queue_empty(zk)
    assert admin_api.get(job_id).data["updated"] == before["updated"]


def test_missing_job_entry_is_dropped(zk: KazooClient, start_executor) -> None:
    missing = f"job/{uuid.uuid4()}"
    queue.put(zk, missing, 5)
    process = start_executor()
    process.wait_for_log(f"{missing}: not found in the job API: entry dropped")
    queue_empty(zk)


def test_garbage_entries_are_dropped_and_executor_goes_on(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    zk.create(queue.entry_prefix(1), b"\xff\xfe not utf-8", sequence=True, makepath=True)
    zk.create(queue.entry_prefix(1), b"deployment/123", sequence=True, makepath=True)
    zk.create(queue.entry_prefix(1), b"", sequence=True, makepath=True)
    process = start_executor()
    job_id = add(admin_api, "test_ok")
    assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
    queue_empty(zk)
    assert process.log().count("holds no job id") == 3


def test_unknown_action_fails_naming_it(admin_api: Api, zk: KazooClient, start_executor) -> None:
    start_executor()
    job = wait_state(admin_api, add(admin_api, "no_such_action_here"))
    assert job["state"] == "FAILED"
    assert "no_such_action_here" in job["status-message"]
    queue_empty(zk)


def test_older_version_fails_naming_both(admin_api: Api, zk: KazooClient, start_executor) -> None:
    start_executor()
    job = wait_state(admin_api, add(admin_api, "test_ok", version=1))
    assert job["state"] == "FAILED"
    assert "version 1" in job["status-message"] and "version 2" in job["status-message"]
    queue_empty(zk)


def test_newer_version_is_released_untouched(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor()
    job_id = add(admin_api, "test_ok", version=3)
    process.wait_for_log(f"{job_id}: version 3 is newer")
    [entry] = zk.get_children(queue.ENTRIES)
    assert zk.get(f"{queue.ENTRIES}/{entry}")[0] == job_id.encode()
    # Released after a short hold: the taken node goes away (another, newer executor could
    # take the entry), and this executor does not spin taking it back meanwhile.
    released = threading.Event()
    if zk.exists(f"{queue.TAKEN}/{entry}", watch=lambda event: released.set()):
        assert released.wait(20), "the entry was never released"
    assert process.log().count(f"{job_id}: version 3 is newer") <= 3
    assert admin_api.get(job_id).data["state"] == "QUEUED"


def test_job_api_down_releases_then_runs(
    job_api: JobApiProcess, admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor()
    job_id = add(admin_api, "test_ok")
    wait_state(admin_api, job_id)
    job_id = f"job/{uuid.uuid4()}"
    job_api.stop()
    try:
        queue.put(zk, job_id, 5)
        process.wait_for_log(f"{job_id}: job API unreachable")
        [entry] = zk.get_children(queue.ENTRIES)
        assert entry.startswith("entry-005-")
    finally:
        job_api.start()
    # Back up: the entry is taken again and, the job being unknown to this API, dropped.
    queue_empty(zk)


def test_unexpected_error_is_logged_and_consumed(
    job_api: JobApiProcess, admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # An executor running with a user who may read the job but not edit it: the API's 403
    # on the RUNNING update is no row of the table.
    name = f"viewer-{uuid.uuid4().hex[:6]}"
    viewer = job_api.user_api(name, "viewer-pass-1")
    job_id = add(
        admin_api, "test_ok", acl={"owners": ["group/nuvla-admin"], "view-data": [viewer.user_id]}
    )
    before = admin_api.get(job_id).data
    process = start_executor("--api-user", name, "--api-pass", "viewer-pass-1")
    process.wait_for_log(f"{job_id}: unexpected error; the entry is consumed")
    queue_empty(zk)
    assert admin_api.get(job_id).data["updated"] == before["updated"]


# -- actions ------------------------------------------------------------------------------------


def test_upstream_style_action_runs_unchanged(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    start_executor()
    job_id = add(admin_api, "upstream_style_cleanup", **{"target-resource": {"href": "x/1"}})
    job = wait_state(admin_api, job_id)
    assert job["state"] == "SUCCESS"
    assert job["status-message"] == "cleaned x/1 (action upstream_style_cleanup)"
    assert {"href": "job/upstream-affected"} in job["affected-resources"]


def test_broken_module_skipped_and_duplicate_logged(admin_api: Api, start_executor) -> None:
    process = start_executor()
    log = process.log()
    assert "broken_module.py failed to import and is skipped" in log
    assert "action test_ok is defined twice" in log
    job = wait_state(admin_api, add(admin_api, "test_ok"))
    assert job["return-code"] == 0  # the first definition won


def test_the_same_actions_folder_twice_loads_once(admin_api: Api, start_executor) -> None:
    # JOB_ACTIONS_PATH pointing at the built-in folder (a checkout, or an image's copy).
    from nuvla_job.registry import BUILTIN_ACTIONS

    process = start_executor("--actions-path", str(BUILTIN_ACTIONS))
    assert "defined twice" not in process.log().replace("test_ok is defined twice", "")
    assert (
        wait_state(admin_api, add(admin_api, "sleep", payload='{"seconds": 0}'))["state"]
        == "SUCCESS"
    )


def test_payload_reaches_the_action(admin_api: Api, start_executor) -> None:
    start_executor()
    payload = {"b": [1, 2], "a": "x"}
    job = wait_state(admin_api, add(admin_api, "test_payload_echo", payload=json.dumps(payload)))
    assert json.loads(job["status-message"]) == payload


# -- process behaviour --------------------------------------------------------------------------


def test_runs_many_jobs_at_once(admin_api: Api, zk: KazooClient, start_executor, tmp_path) -> None:
    log_file = str(tmp_path / "runs.log")
    ids = [
        add(admin_api, "test_sleep", payload=json.dumps({"seconds": 2, "log": log_file}))
        for _ in range(50)
    ]
    start_executor("--concurrency", "50")
    for job_id in ids:
        assert wait_state(admin_api, job_id, timeout=60)["state"] == "SUCCESS"
    # All 50 started before the first one ended: they ran at once, not one after another.
    lines = open(log_file).read().split("\n")
    first_end = next(i for i, line in enumerate(lines) if line.startswith("end"))
    assert sum(1 for line in lines[:first_end] if line.startswith("start")) == 50
    queue_empty(zk)


def test_sigterm_drains_running_jobs(admin_api: Api, zk: KazooClient, start_executor) -> None:
    process = start_executor("--grace-period", "30")
    job_id = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 2}))
    wait_state(admin_api, job_id, ("RUNNING",))
    process.signal(signal.SIGTERM)
    later = add(admin_api, "test_ok")  # arrives after the signal: must not be taken
    assert process.wait(timeout=30) == 0
    assert admin_api.get(job_id).data["state"] == "SUCCESS"
    assert admin_api.get(later).data["state"] == "QUEUED"
    assert zk.get_children(queue.TAKEN) == []
    assert len(zk.get_children(queue.ENTRIES)) == 1


def test_grace_period_over_releases_leftovers(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor("--grace-period", "1")
    job_id = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 60}))
    wait_state(admin_api, job_id, ("RUNNING",))
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "releasing 1 unfinished job(s)" in process.log()
    assert admin_api.get(job_id).data["state"] == "RUNNING"  # no final state written
    [entry] = zk.get_children(queue.ENTRIES)  # back in the queue, not taken
    assert zk.get_children(queue.TAKEN) == []
    assert zk.get(f"{queue.ENTRIES}/{entry}")[0] == job_id.encode()


def test_grace_period_starts_at_once_when_every_slot_is_busy(
    admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # With no free slot the take loop waits for one; a stop request must end that wait,
    # or shutdown would wait for a job to finish instead of the grace period.
    process = start_executor("--grace-period", "1", "--concurrency", "2")
    jobs = [add(admin_api, "test_sleep", payload=json.dumps({"seconds": 60})) for _ in range(2)]
    for job_id in jobs:
        wait_state(admin_api, job_id, ("RUNNING",))
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0  # the jobs would keep it for 60 s
    assert "releasing 2 unfinished job(s)" in process.log()
    assert zk.get_children(queue.TAKEN) == []
    assert len(zk.get_children(queue.ENTRIES)) == 2


def run_pull(job_api: JobApiProcess, job_id: str) -> int:
    """`job-executor --job-id` (no ZooKeeper reachable: pull mode needs none); exit status."""
    process = executor_process(
        "127.0.0.1:1", job_api.endpoint, str(job_api.credentials_path), "--job-id", job_id
    ).start()
    try:
        return process.wait(timeout=60)
    finally:
        process.stop()


def test_pull_mode_runs_exactly_one_job(
    job_api: JobApiProcess, admin_api: Api, zk: KazooClient
) -> None:
    target = add(admin_api, "test_ok", **{"execution-mode": "pull"})
    other = add(admin_api, "test_ok")
    assert run_pull(job_api, target) == 0
    assert admin_api.get(target).data["state"] == "SUCCESS"
    assert admin_api.get(other).data["state"] == "QUEUED"
    failing = add(admin_api, "test_fail_code", **{"execution-mode": "pull"})
    assert run_pull(job_api, failing) == 1


def test_session_loss_abandons_jobs_without_final_state(
    zookeeper, admin_api: Api, zk: KazooClient, start_executor, tmp_path
) -> None:
    runs = tmp_path / "runs.log"
    process = start_executor("--zk-timeout", "2")
    job_id = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 3, "log": str(runs)}))
    wait_state(admin_api, job_id, ("RUNNING",))
    # Frozen past the session timeout: ZooKeeper expires the session and drops its take.
    process.signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 20
        while zk.get_children(queue.TAKEN):
            assert time.monotonic() < deadline, "the frozen executor's take never expired"
            time.sleep(0.1)
        time.sleep(3.5)  # let the action's own sleep run out while frozen
    finally:
        process.signal(signal.SIGCONT)
    process.wait_for_log("no longer ours")
    # The job is taken again (by the same, reconnected executor) and finishes once.
    assert wait_state(admin_api, job_id, timeout=30)["state"] == "SUCCESS"
    # Had the first run written its outcome, the retaken entry would have been dropped as
    # already final: a second start proves the first run's outcome was never written.
    marks = [line.split()[0] for line in runs.read_text().splitlines()]
    assert marks.count("start") == 2
    assert marks[-1] == "end"


def test_session_loss_of_a_live_executor_kills_its_running_actions(
    zookeeper, job_api: JobApiProcess, admin_api: Api, zk: KazooClient, zk_factory, tmp_path
) -> None:
    # The executor keeps running (no SIGSTOP): only its session ends, closed by a second
    # client that joins it, so its actions are still in progress when it learns of the loss.
    from tests.integration.test_metrics import scrape, value

    runs, gate = tmp_path / "runs.log", tmp_path / "gate"
    with SessionNotingProxy(zookeeper.hosts) as proxy:
        process = serving_on_free_port(
            lambda port: executor_process(
                proxy.hosts,
                job_api.endpoint,
                str(job_api.credentials_path),
                "--concurrency",
                "4",
                "--metrics-port",
                str(port),
            ).start(),
            "running up to",
        )
        try:
            payload = json.dumps({"gate": str(gate), "log": str(runs), "timeout": 120})
            jobs = [add(admin_api, "test_gated", payload=payload) for _ in range(2)]

            def marks() -> list[tuple[str, str]]:
                text = runs.read_text() if runs.exists() else ""
                return [tuple(line.split()) for line in text.splitlines()]

            wait_for(lambda: len(marks()) == 2, "both actions running")
            zk_factory(client_id=proxy.session()).stop()  # joins the session and closes it
            process.wait_for_log("ZooKeeper session lost: stopping 2 job(s) held by it")
            url = f"http://127.0.0.1:{process.port}/metrics"
            jobs_total = "nuvla_job_jobs_processed_total"
            wait_for(
                lambda: value(scrape(url), jobs_total, action="test_gated", outcome="lost") == 2,
                "both jobs counted as lost",
            )
            # Killed where they were: neither first run finished, nor wrote a final state.
            assert all(mark == "start" for mark, _ in marks()), marks()
            assert all(admin_api.get(job_id).data["state"] == "RUNNING" for job_id in jobs)
            # The entries went back with the old session: the new one takes and runs them.
            wait_for(lambda: len(marks()) == 4, "both jobs started again")
            gate.touch()
            for job_id in jobs:
                assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
                assert [m for m, j in marks() if j == job_id] == ["start", "start", "end"]
            wait_for(
                lambda: value(scrape(url), jobs_total, action="test_gated", outcome="success") == 2,
                "both second runs counted as successes",
            )
        finally:
            process.stop()


def test_suspended_connection_resumes_taking(
    zookeeper, admin_api: Api, zk: KazooClient, start_executor
) -> None:
    process = start_executor("--zk-timeout", "30")
    assert wait_state(admin_api, add(admin_api, "test_ok"))["state"] == "SUCCESS"
    zookeeper.stop()
    try:
        process.wait_for_log("ZooKeeper connection suspended: no new jobs")
    finally:
        zookeeper.start()
    # Same session (down for less than its timeout): taking goes on where it stopped.
    job_id = None
    deadline = time.monotonic() + 30
    while job_id is None:  # the job API's own client needs a moment to reconnect too
        try:
            job_id = add(admin_api, "test_ok")
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
    assert "session lost" not in process.log()


def test_entry_point_actions_are_loaded(admin_api: Api, start_executor, tmp_path) -> None:
    # An installed package advertising the nuvla_job.actions entry-point group.
    (tmp_path / "plugin_pkg").mkdir()
    (tmp_path / "plugin_pkg" / "__init__.py").write_text(
        "from nuvla_job.registry import action\n\n\n"
        "@action('from_entry_point')\n"
        "class FromEntryPoint:\n"
        "    def __init__(self, job):\n"
        "        self.job = job\n\n"
        "    def do_work(self):\n"
        "        self.job.set_status_message('plugin ran')\n"
        "        return 0\n"
    )
    info = tmp_path / "plugin_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[nuvla_job.actions]\nplugin = plugin_pkg\n")
    from nuvla_job.localstack.processes import REPO

    start_executor(env={"PYTHONPATH": f"{REPO}:{tmp_path}"})
    job = wait_state(admin_api, add(admin_api, "from_entry_point"))
    assert (job["state"], job["status-message"]) == ("SUCCESS", "plugin ran")


def test_lite_image_registers_only_pull_mode_actions(admin_api: Api, start_executor) -> None:
    start_executor(env={"IMAGE_NAME": "job-lite"})
    unsupported = wait_state(admin_api, add(admin_api, "test_ok"))
    assert unsupported["state"] == "FAILED"
    assert "no action 'test_ok'" in unsupported["status-message"]
    supported = wait_state(admin_api, add(admin_api, "test_raises"))
    assert supported["status-message"].startswith("RuntimeError: boom")  # it did run


def test_unreachable_zookeeper_is_one_error_line(job_api: JobApiProcess) -> None:
    process = executor_process(
        "127.0.0.1:1", job_api.endpoint, str(job_api.credentials_path)
    ).start()
    try:
        assert process.wait(timeout=60) == 1
    finally:
        process.stop()
    log = process.log()
    assert "Error: cannot connect to ZooKeeper at 127.0.0.1:1: no answer" in log
    assert "Traceback" not in log

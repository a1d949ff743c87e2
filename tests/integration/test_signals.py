"""Shutdown by signal, with real processes: SIGINT is handled as SIGTERM, and a second signal
releases the running jobs at once (engine-behaviour.md, "Shutdown on SIGTERM/SIGINT"), for
`job-executor` alone, `job-executor --distributions` and `job-distributor`."""

from __future__ import annotations

import json
import signal
import time

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from nuvla_job.distributor import election_path
from nuvla_job.localstack.processes import TEST_ACTIONS
from tests.integration.test_executor import add, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess
from tests.support.zookeeper import ZooKeeperServer

# The executor's modes that handle signals differently (cli/executor.py).
MODES = {
    "alone": (),
    "with distributions": ("--distributions", "--distribution-include", "tick"),
}
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_lets_running_jobs_finish_and_takes_no_more(
    admin_api: Api, zk: KazooClient, start_executor, mode: str, name: str
) -> None:
    process = start_executor("--grace-period", "30", *MODES[mode])
    job_id = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 2}))
    wait_state(admin_api, job_id, ("RUNNING",))
    process.signal(SIGNALS[name])
    process.wait_for_log("stopping: no new jobs; 1 running may finish within 30 s")
    later = add(admin_api, "test_ok")  # queued after the signal: must not be taken
    assert process.wait(timeout=30) == 0, process.log()[-3000:]
    log = process.log()
    assert "KeyboardInterrupt" not in log and "Traceback" not in log
    assert "releasing" not in log  # finished, not released
    assert admin_api.get(job_id).data["state"] == "SUCCESS"
    assert admin_api.get(later).data["state"] == "QUEUED"
    assert zk.get_children(queue.TAKEN) == []
    if mode == "with distributions":
        assert "left election /election/tick" in log


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("when", ["at once", "while draining"])
def test_a_second_signal_releases_running_jobs_at_once(
    admin_api: Api, zk: KazooClient, start_executor, mode: str, when: str
) -> None:
    # A grace period and a job far longer than the test: only the second signal ends them.
    process = start_executor("--grace-period", "120", *MODES[mode])
    job_id = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 120}))
    wait_state(admin_api, job_id, ("RUNNING",))
    process.signal(signal.SIGTERM)
    # The second one comes before the take loop has ended, or once the drain waits.
    process.wait_for_log(
        "stopping: no new jobs" if when == "at once" else "waiting for 1 running job(s)"
    )
    asked_again = time.monotonic()
    process.signal(signal.SIGINT)  # e.g. Ctrl-C after a SIGTERM
    assert process.wait(timeout=20) == 0, process.log()[-3000:]
    assert time.monotonic() - asked_again < 15
    log = process.log()
    assert "second stop request: releasing running jobs now" in log
    assert "releasing 1 unfinished job(s) back to the queue" in log
    assert admin_api.get(job_id).data["state"] == "RUNNING"  # no final state written
    [entry] = zk.get_children(queue.ENTRIES)  # back in the queue, and no longer taken
    assert zk.get(f"{queue.ENTRIES}/{entry}")[0] == job_id.encode()
    assert zk.get_children(queue.TAKEN) == []


@pytest.mark.parametrize("name", SIGNALS)
def test_the_distributor_leaves_its_elections_on_either_signal(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient, name: str
) -> None:
    process = EngineProcess(
        "nuvla_job.cli.distributor",
        [
            "--zk-hosts",
            zookeeper.hosts,
            "--api-url",
            job_api.endpoint,
            "--api-credentials-file",
            str(job_api.credentials_path),
            "--actions-path",
            str(TEST_ACTIONS),
            "--distribution-include",
            "tick",
            "--distribution-interval",
            "tick:3600",
        ],
    ).start()
    process.wait_for_log("leader of tick:")
    assert len(zk.get_children(election_path("tick"))) == 1
    process.signal(SIGNALS[name])
    assert process.wait(timeout=20) == 0, process.log()[-3000:]
    log = process.log()
    assert "stopping: leaving 1 election(s)" in log and "left election /election/tick" in log
    assert "KeyboardInterrupt" not in log and "Traceback" not in log
    assert zk.get_children(election_path("tick")) == []

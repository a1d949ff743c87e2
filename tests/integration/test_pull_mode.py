"""Pull mode (`job-executor --job-id`, or `JOB_ID` in the environment): exactly one job, its
outcome as the exit status; against the real job API, with no ZooKeeper reachable (pull mode
needs none: an executor that tried the queue would fail to connect)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from nuvla.api import Api

from tests.integration.test_executor import add
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess, executor_process

NO_ZOOKEEPER = "127.0.0.1:1"


def pull(job_api: JobApiProcess, *args: str, env: dict[str, str] | None = None) -> EngineProcess:
    """Run `job-executor` in pull mode to its end; the stopped process (log, exit status)."""
    process = executor_process(
        NO_ZOOKEEPER, job_api.endpoint, str(job_api.credentials_path), *args, env=env
    ).start()
    process.wait(timeout=60)
    return process


def test_job_id_from_the_environment_runs_that_job(job_api: JobApiProcess, admin_api: Api) -> None:
    target = add(admin_api, "test_ok", **{"execution-mode": "pull"})
    other = add(admin_api, "test_ok", **{"execution-mode": "pull"})
    process = pull(job_api, env={"JOB_ID": target})
    assert process.wait(0) == 0, process.log()[-3000:]
    assert admin_api.get(target).data["state"] == "SUCCESS"
    assert admin_api.get(other).data["state"] == "QUEUED"
    # The option wins over the environment.
    process = pull(job_api, "--job-id", other, env={"JOB_ID": target})
    assert process.wait(0) == 0, process.log()[-3000:]
    assert admin_api.get(other).data["state"] == "SUCCESS"


def test_a_malformed_job_id_in_the_environment_is_a_usage_error(job_api: JobApiProcess) -> None:
    process = pull(job_api, env={"JOB_ID": "not-a-job"})
    assert process.wait(0) == 2
    assert "must look like job/<uuid>" in process.log()


def test_an_unknown_job_is_one_error_line_and_exit_1(job_api: JobApiProcess) -> None:
    missing = f"job/{uuid.uuid4()}"
    process = pull(job_api, "--job-id", missing)
    assert process.wait(0) == 1
    log = process.log()
    assert f"{missing}: cannot run it: " in log
    assert "Traceback" not in log


def test_an_already_final_job_is_left_alone(
    job_api: JobApiProcess, admin_api: Api, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    job_id = add(
        admin_api,
        "test_sleep",
        payload=json.dumps({"seconds": 0, "log": str(runs)}),
        **{"execution-mode": "pull"},
    )
    admin_api.edit(job_id, {"state": "SUCCESS", "return-code": 0})
    before = admin_api.get(job_id).data
    process = pull(job_api, "--job-id", job_id)
    # Nothing ran in this process: not a success of its own.
    assert process.wait(0) == 1
    log = process.log()
    assert f"{job_id}: already SUCCESS" in log
    assert "refused" not in log and "Traceback" not in log  # no update was even tried
    assert not runs.exists()  # the action never started
    assert admin_api.get(job_id).data == before

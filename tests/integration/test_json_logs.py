"""`--log-format json` with a real executor: every line logged inside a job, by the engine or
by the action itself, carries that job's id and action, even with jobs running at once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from nuvla.api import Api

from tests.support.processes import EngineProcess

ACTION = "json_log_probe"
ACTION_LOGGER = "tests.json_log_probe"
# The probe logs, yields to the other jobs' greenlets (time.sleep is monkey-patched), logs
# again, and fails when asked: the executor then logs the failure inside the job too.
PROBE_MODULE = f'''
import logging
import time

from nuvla_job.registry import action

log = logging.getLogger("{ACTION_LOGGER}")


@action("{ACTION}")
class Probe:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        log.info("probe start")
        time.sleep(0.3)
        log.info("probe end")
        return 1 if self.job.payload.get("fail") else 0
'''


def wait_final(api: Api, job_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while (state := api.get(job_id).data["state"]) not in ("SUCCESS", "FAILED"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{job_id} still {state} after {timeout} s")
        time.sleep(0.05)
    return state


def test_lines_logged_inside_a_job_carry_its_id_and_action(
    admin_api: Api, start_executor: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    (tmp_path / "probe.py").write_text(PROBE_MODULE)
    executor = start_executor("--log-format", "json", "--actions-path", str(tmp_path))
    jobs = [
        admin_api.add("job", {"action": ACTION, "payload": json.dumps({"fail": n == 0})}).data[
            "resource-id"
        ]
        for n in range(3)
    ]
    assert [wait_final(admin_api, job_id) for job_id in jobs] == ["FAILED", "SUCCESS", "SUCCESS"]
    records = [json.loads(line) for line in executor.log().splitlines()]
    for job_id in jobs:
        # The action's own lines name no job: only the greenlet's context can tag them.
        mine = [r for r in records if r["logger"] == ACTION_LOGGER and r.get("job_id") == job_id]
        assert [r["message"] for r in mine] == ["probe start", "probe end"], records
        assert {r["action"] for r in mine} == {ACTION}
        # The engine's lines about the job are tagged with it, and with nothing else.
        about = [r for r in records if job_id in r["message"]]
        assert about and all(
            (r.get("job_id"), r.get("action")) == (job_id, ACTION) for r in about
        ), about
    startup = next(r for r in records if "running up to" in r["message"])
    assert "job_id" not in startup and "action" not in startup

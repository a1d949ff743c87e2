"""A real job released while the job API is down runs to SUCCESS once the API is back (the
quick counterpart of fault scenario 4, which shows it under a load of 1,000 jobs)."""

from __future__ import annotations

import signal

from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from tests.integration.test_executor import add, queue_empty, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.waiting import wait_for


def test_a_job_released_while_the_job_api_is_down_later_succeeds(
    job_api: JobApiProcess, admin_api: Api, zk: KazooClient, start_executor
) -> None:
    # The executor needs the job API to start: frozen (well within its session), it takes
    # nothing while a job is queued through the API and the API is stopped.
    process = start_executor("--zk-timeout", "30")
    process.signal(signal.SIGSTOP)
    try:
        job_id = add(admin_api, "test_ok")
        job_api.stop()  # same port and database when it starts again
    finally:
        process.signal(signal.SIGCONT)
    try:
        # Taken, fetched in vain, released after a hold, taken again: more than once.
        wait_for(
            lambda: process.log().count(f"{job_id}: job API unreachable") >= 2,
            "the job to be released twice while the job API is down",
        )
        [entry] = zk.get_children(queue.ENTRIES)  # still the one entry, nothing dropped
        assert zk.get(f"{queue.ENTRIES}/{entry}")[0] == job_id.encode()
    finally:
        job_api.start()
    job = wait_state(admin_api, job_id, timeout=60)
    assert job["state"] == "SUCCESS" and job["return-code"] == 0
    queue_empty(zk)
    assert "dropped" not in process.log()

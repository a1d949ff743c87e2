"""The ``Job`` offers an upstream action everything upstream's ``Job`` does (issue 12).

Upstream's class comes from the installed ``nuvla-job-engine`` (the ``nuvla`` extra, which
the tests install); what it offers is read from it, not listed here by hand.
"""

from __future__ import annotations

import inspect
import json

import pytest
from nuvla.api import Api
from nuvla.job_engine.job import job as upstream_job

from nuvla_job import job as job_module
from nuvla_job.job import Job
from tests.support.executor_doubles import FakeApi

UPSTREAM_STATES = ("JOB_QUEUED", "JOB_RUNNING", "JOB_SUCCESS", "JOB_FAILED", "JOB_CANCELED")


def a_job(api: FakeApi, **attrs: object) -> Job:
    job_id = api.add_job("ok", **attrs)
    return Job(api, api.jobs[job_id])  # type: ignore[arg-type]


def test_state_constants_have_upstreams_names_and_values() -> None:
    for name in (*UPSTREAM_STATES, "STATES"):
        assert getattr(job_module, name) == getattr(upstream_job, name) or (
            name == "STATES" and set(job_module.STATES) == set(upstream_job.STATES)
        ), name
    assert set(UPSTREAM_STATES) | {"STATES", "Job"} <= set(job_module.__all__)


def test_every_public_member_of_upstreams_job_exists_here() -> None:
    upstream = {
        name
        for name, _ in inspect.getmembers(upstream_job.Job)
        if not name.startswith("_") and not hasattr(dict, name)
    }
    missing = {name for name in upstream if not hasattr(Job, name)}
    assert not missing, f"upstream's Job has {sorted(missing)}; ours has not"
    # What upstream's __init__ sets, on a job of ours.
    job = a_job(FakeApi())
    for name in ("id", "api", "cimi_job", "nuvlaedge_shared_path"):
        assert hasattr(job, name), name


def test_job_reads_and_checks_as_upstreams_does() -> None:
    api = FakeApi()
    job = a_job(api, state="SUCCESS", **{"execution-mode": "pull"})
    assert job.is_in_final_state() and job.is_in_pull_mode
    assert not a_job(api, state="RUNNING").is_in_final_state()
    assert job.nuvlaedge_shared_path == "/srv/nuvlaedge/shared/"  # upstream's default
    assert Job(api, dict(job), nuvlaedge_fs="/edge").nuvlaedge_shared_path == "/edge"  # type: ignore[arg-type]
    assert (job.cimi_job.id, job.cimi_job.data["state"]) == (job.id, "SUCCESS")
    assert job.action == "ok"  # the document's attributes as Python attributes
    with pytest.raises(AttributeError):
        job.no_such_attribute  # noqa: B018
    with pytest.raises(TypeError):
        job.set_return_code("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state must be one of"):
        job.set_state("DONE")
    assert api.edits == []


def test_empty_status_message_is_written_as_upstream_writes_it() -> None:
    api = FakeApi()
    job = a_job(api)
    job.set_status_message("")
    assert job["status-message"] == "< status message empty >"
    job.set_status_message(12)
    assert job["status-message"] == "12"


def test_get_cimi_job_asks_a_missing_job_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_module, "NOT_FOUND_RETRY_DELAY", 0.0)
    api = FakeApi()
    job = a_job(api)
    assert job.get_cimi_job(job.id).data["id"] == job.id
    with pytest.raises(job_module.JobNotFound):
        job.get_cimi_job("job/missing")
    assert api.gets == [job.id, "job/missing", "job/missing"]


def test_user_api_authenticates_as_the_payloads_user() -> None:
    api = FakeApi()
    api.endpoint = "https://nuvla.example"  # type: ignore[attr-defined]
    api.session = Api(endpoint="https://nuvla.example", insecure=True).session  # type: ignore[attr-defined]
    authn = {"user-id": "user/alice", "active-claim": "group/a", "claims": ["group/a", "x"]}
    job = a_job(api, payload=json.dumps({"authn-info": authn}))
    user_api = job.get_user_api()
    assert user_api.endpoint == "https://nuvla.example"
    assert user_api.session.verify is False  # insecure, as the executor's own client
    assert user_api.session.authn_header == "user/alice group/a group/a x"

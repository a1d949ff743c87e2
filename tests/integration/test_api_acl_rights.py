"""What the `edit-acl`, `delete` and `manage` rights let a user who does not own a job do
(Nuvla's meaning of each right, nuvla_job/api/acl.py), through the real job API; the rights
refused to owners' strangers are in test_api_rules.py."""

from __future__ import annotations

import uuid

import pytest
from nuvla.api import Api

from tests.integration.test_api_http import unique_action
from tests.integration.test_api_rules import error_status
from tests.support.jobapi import JobApiClients


# Every test here runs on each store, SQLite then PostgreSQL, then on two replicas behind a
# balancer that alternates between them (tests/conftest.py).
@pytest.fixture(scope="module")
def job_api(job_api_each_store: JobApiClients) -> JobApiClients:
    return job_api_each_store


def granted(admin_api: Api, right: str, user: Api, action: str) -> str:
    """A QUEUED job owned by the admins only, with ``right`` granted to ``user``."""
    acl = {"owners": ["group/nuvla-admin"], right: [user.user_id]}
    return admin_api.add("job", {"action": action, "acl": acl}).data["resource-id"]


def rels(api: Api, job_id: str) -> set[str]:
    return {op["rel"] for op in api.get(job_id).data["operations"]}


def test_edit_acl_lets_a_non_owner_edit_share_cancel_and_delete(
    job_api: JobApiClients, admin_api: Api
) -> None:
    carol = job_api.user_api(f"carol-{uuid.uuid4().hex[:6]}")
    dave = job_api.user_api(f"dave-{uuid.uuid4().hex[:6]}")
    action = unique_action()
    job_id = granted(admin_api, "edit-acl", carol, action)

    assert rels(carol, job_id) == {"edit", "delete", "cancel"}
    assert carol.search("job", filter=f"action='{action}'").count == 1
    carol.edit(job_id, {"progress": 20})  # edit-acl implies edit-data
    # She may share the job: dave can now see it.
    assert error_status(dave.get, job_id)[0] == 403
    carol.edit(job_id, {"acl": {"edit-acl": [carol.user_id], "view-data": [dave.user_id]}})
    assert dave.get(job_id).data["progress"] == 20
    acl = admin_api.get(job_id).data["acl"]
    assert acl["view-data"] == [dave.user_id] and acl["owners"] == ["group/nuvla-admin"]
    # ... cancel it (edit-acl implies manage), and delete one.
    carol.operation(carol.get(job_id), "cancel")
    assert admin_api.get(job_id).data["state"] == "CANCELED"
    other = granted(admin_api, "edit-acl", carol, action)
    carol.delete(other)
    assert error_status(admin_api.get, other)[0] == 404


def test_delete_lets_a_non_owner_see_and_delete_but_not_edit(
    job_api: JobApiClients, admin_api: Api
) -> None:
    erin = job_api.user_api(f"erin-{uuid.uuid4().hex[:6]}")
    action = unique_action()
    job_id = granted(admin_api, "delete", erin, action)

    assert rels(erin, job_id) == {"delete"}
    assert erin.search("job", filter=f"action='{action}'").count == 1
    assert error_status(erin.edit, job_id, {"progress": 10})[0] == 403
    assert error_status(erin.edit, job_id, {"acl": {"owners": [erin.user_id]}})[0] == 403
    assert error_status(erin.operation, erin.get(job_id), "cancel")[0] == 403
    assert admin_api.get(job_id).data["progress"] == 0
    erin.delete(job_id)
    assert error_status(admin_api.get, job_id)[0] == 404


def test_manage_lets_a_non_owner_cancel_but_not_edit_or_delete(
    job_api: JobApiClients, admin_api: Api
) -> None:
    frank = job_api.user_api(f"frank-{uuid.uuid4().hex[:6]}")
    job_id = granted(admin_api, "manage", frank, unique_action())

    assert rels(frank, job_id) == {"cancel"}
    assert error_status(frank.edit, job_id, {"progress": 10})[0] == 403
    assert error_status(frank.delete, job_id)[0] == 403
    frank.operation(frank.get(job_id), "cancel")
    assert admin_api.get(job_id).data["state"] == "CANCELED"

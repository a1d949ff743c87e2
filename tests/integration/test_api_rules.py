"""The job resource's rules (job-resource.md "On add", "On edit", operations, ACLs), and the
answers to bad input, through `nuvla.api.Api` against the real job API and ZooKeeper."""

from __future__ import annotations

import time
import uuid

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api, NuvlaError

from nuvla_job import queue
from tests.integration.test_api_http import add_job, unique_action
from tests.support.jobapi import JobApiClients


# Every test here runs on each store, SQLite then PostgreSQL, then on two replicas behind a
# balancer that alternates between them (tests/conftest.py).
@pytest.fixture(scope="module")
def job_api(job_api_each_store: JobApiClients) -> JobApiClients:
    return job_api_each_store


def error_status(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(NuvlaError) as err:
        call(*args, **kwargs)
    return err.value.response.status_code, err.value.response.json()["message"]


# -- On add -------------------------------------------------------------------------------------


def test_only_admins_add(job_api: JobApiClients) -> None:
    user = job_api.user_api(f"u-{uuid.uuid4().hex[:6]}")
    status, _ = error_status(user.add, "job", {"action": "x"})
    assert status == 403


def test_add_defaults_and_forced_queued_state(admin_api: Api) -> None:
    job_id = add_job(admin_api, state="SUCCESS")
    job = admin_api.get(job_id).data
    assert job["state"] == "QUEUED"
    assert job["priority"] == 999
    assert job["execution-mode"] == "push"
    assert job["version"] == 2
    assert job["progress"] == 0
    assert job["created"].endswith("Z") and len(job["created"]) == 24
    assert "group/nuvla-admin" in job["acl"]["owners"]


def test_push_and_mixed_jobs_are_queued_with_path_in_tags(admin_api: Api, zk: KazooClient) -> None:
    for mode in ("push", "mixed"):
        job_id = add_job(admin_api, priority=42, **{"execution-mode": mode})
        tags = admin_api.get(job_id).data["tags"]
        [path] = [t for t in tags if t.startswith(queue.ENTRIES)]
        assert path.startswith("/job/entries/entry-042-")
        data, _ = zk.get(path)
        assert data == job_id.encode()


def test_pull_jobs_are_not_queued(admin_api: Api, zk: KazooClient) -> None:
    job_id = add_job(admin_api, **{"execution-mode": "pull"})
    assert "tags" not in admin_api.get(job_id).data
    entries = zk.get_children(queue.ENTRIES) if zk.exists(queue.ENTRIES) else []
    assert all(zk.get(f"{queue.ENTRIES}/{e}")[0] != job_id.encode() for e in entries)


def test_target_resource_is_appended_to_affected_resources(admin_api: Api) -> None:
    job_id = add_job(
        admin_api,
        **{
            "target-resource": {"href": "deployment/1"},
            "affected-resources": [{"href": "infra/2"}],
        },
    )
    job = admin_api.get(job_id).data
    assert job["affected-resources"] == [{"href": "infra/2"}, {"href": "deployment/1"}]
    same = add_job(
        admin_api,
        **{
            "target-resource": {"href": "deployment/1"},
            "affected-resources": [{"href": "deployment/1"}],
        },
    )
    assert admin_api.get(same).data["affected-resources"] == [{"href": "deployment/1"}]


def test_status_message_on_add_sets_time_and_is_cut(admin_api: Api) -> None:
    job_id = add_job(admin_api, **{"status-message": "m" * 150_000})
    job = admin_api.get(job_id).data
    assert len(job["status-message"]) == 100_000
    assert job["time-of-status-change"] == job["created"]


def test_unknown_attribute_and_bad_values_are_400(admin_api: Api) -> None:
    cases = [
        ({"action": "a", "colour": "red"}, "colour"),
        ({"action": "a", "priority": 1000}, "priority"),
        ({"action": "a", "priority": "high"}, "priority"),
        ({"action": "a", "progress": 101}, "progress"),
        ({"action": "a", "execution-mode": "sideways"}, "execution-mode"),
        ({"action": "a", "target-resource": "deployment/1"}, "target-resource"),
        ({"priority": 5}, "action"),
        ({"action": "a", "acl": {"owners": "me"}}, "acl"),
    ]
    for body, word in cases:
        status, message = error_status(admin_api.add, "job", body)
        assert status == 400, body
        assert word in message, (body, message)


# -- On edit ------------------------------------------------------------------------------------


def test_final_state_cannot_be_edited(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    admin_api.edit(job_id, {"state": "SUCCESS"})
    status, _ = error_status(admin_api.edit, job_id, {"progress": 10})
    assert status == 409
    assert "edit" not in admin_api.get(job_id).operations


def test_action_and_target_are_immutable_priority_dropped(admin_api: Api) -> None:
    job_id = add_job(admin_api, priority=5, **{"target-resource": {"href": "x/1"}})
    action = admin_api.get(job_id).data["action"]
    job = admin_api.edit(
        job_id, {"action": "other", "target-resource": {"href": "y/2"}, "priority": 1}
    ).data
    assert job["action"] == action
    assert job["target-resource"] == {"href": "x/1"}
    assert job["priority"] == 5


def test_running_sets_started_once(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    started = admin_api.edit(job_id, {"state": "RUNNING"}).data["started"]
    admin_api.edit(job_id, {"state": "QUEUED"})
    again = admin_api.edit(job_id, {"state": "RUNNING"}).data
    assert again["started"] == started


def test_status_message_on_edit_sets_time_and_is_cut(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    created = admin_api.get(job_id).data["created"]
    job = admin_api.edit(job_id, {"status-message": "x" * 120_000}).data
    assert len(job["status-message"]) == 100_000
    assert job["time-of-status-change"] >= created


def test_final_state_sets_progress_and_duration(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    admin_api.edit(job_id, {"state": "RUNNING", "progress": 10})
    job = admin_api.edit(job_id, {"state": "FAILED", "return-code": 3}).data
    assert job["progress"] == 100
    assert job["duration"] >= 0
    never_started = add_job(admin_api)
    job = admin_api.edit(never_started, {"state": "SUCCESS"}).data
    assert job["progress"] == 100
    assert "duration" not in job


def test_progress_and_state_are_validated(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    assert error_status(admin_api.edit, job_id, {"progress": 101})[0] == 400
    assert error_status(admin_api.edit, job_id, {"progress": -1})[0] == 400
    status, message = error_status(admin_api.edit, job_id, {"state": "DONE"})
    assert status == 400 and "state" in message


# -- operations ---------------------------------------------------------------------------------


def test_cancel_only_for_queued_or_running(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    admin_api.edit(job_id, {"state": "SUCCESS"})
    job = admin_api.get(job_id)
    assert "cancel" not in job.operations
    assert error_status(admin_api.operation, job, "cancel")[0] == 409


def test_cancelling_a_bulk_job_creates_cancel_children_job(admin_api: Api) -> None:
    job_id = admin_api.add("job", {"action": f"bulk_{unique_action()}"}).data["resource-id"]
    admin_api.operation(admin_api.get(job_id), "cancel")
    children = admin_api.search(
        "job", filter=f"action='cancel_children_jobs' and target-resource/href='{job_id}'"
    )
    assert children.count == 1
    child = children.resources[0].data
    assert child["priority"] == 10
    assert child["state"] == "QUEUED"
    assert any(t.startswith("/job/entries/entry-010-") for t in child["tags"])


def test_cancelling_a_plain_job_creates_no_child(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    admin_api.operation(admin_api.get(job_id), "cancel")
    children = admin_api.search("job", filter=f"target-resource/href='{job_id}'", last=0)
    assert children.count == 0


def test_timeout_only_running_and_admin(job_api: JobApiClients, admin_api: Api) -> None:
    job_id = add_job(admin_api)
    job = admin_api.get(job_id)
    assert "timeout" not in job.operations
    assert error_status(admin_api.operation, job, "timeout")[0] == 409
    name = f"m-{uuid.uuid4().hex[:6]}"
    user = job_api.user_api(name)
    shared = add_job(admin_api, acl={"owners": ["group/nuvla-admin"], "manage": [user.user_id]})
    admin_api.edit(shared, {"state": "RUNNING"})
    assert error_status(user.operation, user.get(shared), "timeout")[0] == 403
    assert error_status(user.operation, user.get(shared), "get-context")[0] == 403
    user.operation(user.get(shared), "cancel")  # manage right is enough for cancel
    assert admin_api.get(shared).data["state"] == "CANCELED"


def test_unknown_operation_is_404(admin_api: Api) -> None:
    job = admin_api.get(add_job(admin_api))
    assert error_status(admin_api.operation, job, "explode")[0] == 404


# -- ACLs ---------------------------------------------------------------------------------------


def test_users_see_and_manage_only_what_the_acl_grants(
    job_api: JobApiClients, admin_api: Api
) -> None:
    alice = job_api.user_api(f"alice-{uuid.uuid4().hex[:6]}")
    bob = job_api.user_api(f"bob-{uuid.uuid4().hex[:6]}")
    action = unique_action()
    mine = admin_api.add(
        "job",
        {
            "action": action,
            "acl": {
                "owners": ["group/nuvla-admin"],
                "view-data": [alice.user_id],
                "edit-data": [alice.user_id],
            },
        },
    ).data["resource-id"]
    admin_api.add("job", {"action": action})

    assert alice.get(mine).id == mine
    assert alice.search("job", filter=f"action='{action}'").count == 1
    aggs = alice.search(
        "job", filter=f"action='{action}'", aggregation="value_count:id", last=0
    ).data["aggregations"]
    assert aggs["value_count:id"]["value"] == 1
    alice.edit(mine, {"progress": 30})
    # edit-data is not edit-acl: she cannot widen her own rights.
    assert error_status(alice.edit, mine, {"acl": {"owners": [alice.user_id]}})[0] == 403
    assert error_status(alice.delete, mine)[0] == 403
    assert error_status(alice.operation, alice.get(mine), "cancel")[0] == 403
    assert {op["rel"] for op in alice.get(mine).data["operations"]} == {"edit"}

    assert error_status(bob.get, mine)[0] == 403
    assert bob.search("job", filter=f"action='{action}'").count == 0
    assert error_status(bob.edit, mine, {"progress": 40})[0] == 403
    assert error_status(bob.delete_bulk, "job", f"action='{action}'")[0] == 403
    assert admin_api.get(mine).data["progress"] == 30
    assert admin_api.get(mine).data["acl"]["owners"] == ["group/nuvla-admin"]


def test_only_admins_change_a_jobs_version(job_api: JobApiClients, admin_api: Api) -> None:
    # The finding: with edit-data, `version: 99` left the job released for a newer engine
    # every 5 s, forever.
    alice = job_api.user_api(f"alice-{uuid.uuid4().hex[:6]}")
    acl = {"owners": ["group/nuvla-admin"], "edit-data": [alice.user_id]}
    job_id = admin_api.add("job", {"action": unique_action(), "acl": acl}).data["resource-id"]
    status, message = error_status(alice.edit, job_id, {"version": 99})
    assert (status, message) == (403, "only administrators can change a job's version")
    assert admin_api.get(job_id).data["version"] == 2
    # The document sent back as it was read (its version unchanged) is still an edit.
    assert alice.edit(job_id, {"version": 2, "progress": 10}).data["progress"] == 10
    assert admin_api.edit(job_id, {"version": 3}).data["version"] == 3


def _raw_operation(api: Api, endpoint: str, job_id: str, op: str) -> int:
    """POST an operation without first reading the job (which the caller may not see)."""
    return api.session.post(f"{endpoint}/api/{job_id}/{op}", json={}, timeout=10).status_code


def test_a_user_cannot_reach_another_users_job(job_api: JobApiClients, admin_api: Api) -> None:
    alice = job_api.user_api(f"alice-{uuid.uuid4().hex[:6]}")
    bob = job_api.user_api(f"bob-{uuid.uuid4().hex[:6]}")
    action = unique_action()

    def owned_by(user: Api, **attrs) -> str:
        return admin_api.add(
            "job", {"action": action, "acl": {"owners": [user.user_id]}, **attrs}
        ).data["resource-id"]

    queued = owned_by(alice, priority=1, **{"target-resource": {"href": "deployment/a"}})
    running = owned_by(alice, priority=2)
    admin_api.edit(running, {"state": "RUNNING", "progress": 5})
    bobs = owned_by(bob, priority=500)
    # Alice, as owner, may do everything an owner does with her job (not timeout/context).
    assert {op["rel"] for op in alice.get(queued).data["operations"]} == {
        "edit",
        "delete",
        "cancel",
    }

    for job_id in (queued, running):
        assert error_status(bob.get, job_id)[0] == 403
        assert error_status(bob.edit, job_id, {"progress": 50})[0] == 403
        assert error_status(bob.edit, job_id, {"acl": {"owners": [bob.user_id]}})[0] == 403
        assert error_status(bob.delete, job_id)[0] == 403
        for op in ("cancel", "timeout", "get-context"):
            assert _raw_operation(bob, job_api.endpoint, job_id, op) == 403, op
    assert error_status(bob.delete_bulk, "job", f"action='{action}'")[0] == 403

    # Searches, selects, filters on her job's id and aggregations show bob only his own.
    def bob_sees(**params) -> dict:
        return bob.search("job", **params).data

    where = f"action='{action}'"
    assert [r["id"] for r in bob_sees(filter=where)["resources"]] == [bobs]
    assert bob_sees(filter=f"id='{queued}' or id='{running}'")["count"] == 0
    assert bob_sees(filter=f"{where} or id='{queued}'")["count"] == 1
    assert bob_sees(filter="target-resource/href='deployment/a'")["count"] == 0
    assert [r["id"] for r in bob_sees(filter=where, select="id,acl,state")["resources"]] == [bobs]
    assert bob_sees(filter=where, last=0)["count"] == 1
    aggs = bob_sees(
        filter=where,
        last=0,
        aggregation=("value_count:id,min:priority,max:priority,sum:priority,terms:state"),
    )["aggregations"]
    assert aggs["value_count:id"]["value"] == 1
    assert aggs["min:priority"]["value"] == aggs["max:priority"]["value"] == 500
    assert aggs["sum:priority"]["value"] == 500
    assert [b["key"] for b in aggs["terms:state"]["buckets"]] == ["QUEUED"]
    unfiltered = bob_sees(last=10_000)
    assert not {queued, running} & {r["id"] for r in unfiltered["resources"]}

    # Anonymous callers see nothing at all.
    anonymous = job_api.api()
    assert error_status(anonymous.get, queued)[0] == 403
    assert error_status(anonymous.search, "job")[0] == 403

    # Nothing bob tried changed alice's jobs.
    assert admin_api.get(queued).data["state"] == "QUEUED"
    assert admin_api.get(queued).data["acl"]["owners"] == sorted(
        ["group/nuvla-admin", alice.user_id]
    )
    assert admin_api.get(running).data["state"] == "RUNNING"
    assert admin_api.get(running).data["progress"] == 5


# -- bad input ----------------------------------------------------------------------------------


def test_malformed_requests_are_4xx_with_message(job_api: JobApiClients, admin_api: Api) -> None:
    url = f"{job_api.endpoint}/api/job"
    post = admin_api.session.post
    json_headers = {"Content-Type": "application/json"}
    cases = [
        (post(url, data=b"{not json", headers=json_headers), 400, "JSON"),
        (post(url, data=b"[1, 2]", headers=json_headers), 400, "object"),
        (post(url, data=b"x" * (5 * 1024 * 1024), headers=json_headers), 413, "larger"),
        (admin_api.session.put(url, data={"filter": "state=='x'"}), 400, "filter"),
        (admin_api.session.put(url, data={"filter": "(state='x'"}), 400, "filter"),
        (admin_api.session.put(url, data={"orderby": "created:sideways"}), 400, "direction"),
        (admin_api.session.put(url, data={"last": "ten"}), 400, "last"),
        (admin_api.session.put(url, data={"aggregation": "median:priority"}), 400, "aggregation"),
        (
            admin_api.session.put(f"{url}/{uuid.uuid4()}", data=b"\xff\xfe", headers=json_headers),
            400,
            "JSON",
        ),
    ]
    for response, status, word in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["status"] == status
        assert word.lower() in body["message"].lower(), body


def test_zookeeper_down_add_is_503_and_nothing_stored(
    job_api: JobApiClients, admin_api: Api, zookeeper
) -> None:
    action = unique_action()
    zookeeper.stop()
    try:
        status, message = error_status(admin_api.add, "job", {"action": action})
        assert status == 503
        assert "queue" in message
        # Pull jobs need no queue: they are still accepted.
        pull = admin_api.add("job", {"action": action, "execution-mode": "pull"})
        assert pull.data["status"] == 201
    finally:
        zookeeper.start()
    found = admin_api.search("job", filter=f"action='{action}'")
    assert [r.data["execution-mode"] for r in found.resources] == ["pull"]
    # Once the API's client has reconnected, adds go through again.
    deadline = time.monotonic() + 30
    while True:
        try:
            admin_api.add("job", {"action": action})
            break
        except NuvlaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

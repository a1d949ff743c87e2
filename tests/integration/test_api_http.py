"""The job API answers `nuvla.api.Api` as job-resource.md's HTTP table says, row by row."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests
from nuvla.api import Api, NuvlaError

from tests.support.jobapi import JobApiClients, JobApiProcess


# Every test here runs on each store, SQLite then PostgreSQL, then on two replicas behind a
# balancer that alternates between them (tests/conftest.py).
@pytest.fixture(scope="module")
def job_api(job_api_each_store: JobApiClients) -> JobApiClients:
    return job_api_each_store


def unique_action() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def add_job(api: Api, **attrs) -> str:
    body = {"action": unique_action(), **attrs}
    return api.add("job", body).data["resource-id"]


# -- session rows -----------------------------------------------------------------------------


def test_login_apikey_sets_cookie_and_bad_secret_is_403(job_api: JobApiClients) -> None:
    api = job_api.api()
    creds = job_api.credentials()
    response = api.login_apikey(creds["key"], creds["secret"])
    assert response.status_code == 201
    assert response.json()["resource-id"].startswith("session/")
    assert "com.sixsq.nuvla.cookie" in response.cookies
    assert api.is_authenticated()

    bad = job_api.api().login_apikey(creds["key"], "wrong-secret")
    assert bad.status_code == 403
    assert bad.json()["message"] == "invalid credentials"
    unknown = job_api.api().login_apikey("credential/nope", "x")
    assert unknown.status_code == 403


def test_login_password_and_bad_password(job_api: JobApiClients) -> None:
    name = f"alice-{uuid.uuid4().hex[:6]}"
    api = job_api.user_api(name, "s3cret-pass")
    assert api.is_authenticated()
    bad = job_api.api().login_password(name, "not-it")
    assert bad.status_code == 403


def test_current_session_and_logout(job_api: JobApiClients) -> None:
    api = job_api.admin_api()
    session_id = api.current_session()
    assert session_id and session_id.startswith("session/")
    api.logout()
    assert api.current_session() is None
    # The session is gone on the server too, not only from the client's jar.
    with pytest.raises(NuvlaError) as err:
        api.search("job")
    assert err.value.response.status_code == 403


def test_anonymous_has_no_session_and_cannot_search(job_api: JobApiClients) -> None:
    api = job_api.api()
    assert api.current_session() is None
    with pytest.raises(NuvlaError) as err:
        api.search("job")
    assert err.value.response.status_code == 403


def test_cloud_entry_point(job_api: JobApiClients) -> None:
    cep = job_api.api().cloud_entry_point
    assert cep.collections["job"] == "job"
    assert cep.base_uri.endswith("/api/")


# -- job rows ---------------------------------------------------------------------------------


def test_search_collection_shape(admin_api: Api) -> None:
    action = unique_action()
    for _ in range(3):
        admin_api.add("job", {"action": action})
    result = admin_api.search("job", filter=f"action='{action}'")
    assert result.count == 3
    data = result.data
    assert data["id"] == "job"
    assert data["resource-type"] == "job-collection"
    assert {"rel": "add", "href": "job"} in data["operations"]
    assert all(r.data["action"] == action for r in result.resources)


def test_search_aggregations(admin_api: Api) -> None:
    action = unique_action()
    for priority in (5, 7, 9):
        admin_api.add("job", {"action": action, "priority": priority})
    result = admin_api.search(
        "job",
        filter=f"action='{action}'",
        last=0,
        aggregation="terms:state,value_count:id,max:priority,min:priority,avg:priority",
    )
    aggs = result.data["aggregations"]
    assert aggs["terms:state"]["buckets"] == [{"key": "QUEUED", "doc_count": 3}]
    assert aggs["value_count:id"]["value"] == 3
    assert aggs["max:priority"]["value"] == 9
    assert aggs["min:priority"]["value"] == 5
    assert aggs["avg:priority"]["value"] == 7
    assert result.resources == []


def test_add_answers_created(admin_api: Api) -> None:
    response = admin_api.add("job", {"action": unique_action()})
    data = response.data
    assert data["status"] == 201
    job_id = data["resource-id"]
    assert job_id.startswith("job/")
    assert data["message"] == f"{job_id} created"


def test_get_returns_document_with_operations(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    job = admin_api.get(job_id)
    assert job.id == job_id
    assert job.data["resource-type"] == "job"
    assert set(job.operations) >= {"edit", "delete", "cancel", "get-context"}
    assert "timeout" not in job.operations  # only for RUNNING jobs


def test_edit_returns_updated_document_and_select_removes(admin_api: Api) -> None:
    job_id = add_job(admin_api, **{"status-message": "hello", "output": "x"})
    job = admin_api.edit(job_id, {"progress": 40})
    assert job.data["progress"] == 40
    assert job.data["status-message"] == "hello"  # an edit merges
    job = admin_api.edit(job_id, {"progress": 50}, select="output,progress")
    assert "output" not in job.data
    assert admin_api.get(job_id).data.get("output") is None
    assert job.data["progress"] == 50


def test_delete(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    response = admin_api.delete(job_id)
    assert response.data["status"] == 200
    assert response.data["resource-id"] == job_id
    with pytest.raises(NuvlaError) as err:
        admin_api.get(job_id)
    assert err.value.response.status_code == 404
    assert err.value.response.json()["resource-id"] == job_id


def test_delete_bulk_reports_deleted_and_timed_out(admin_api: Api) -> None:
    action = unique_action()
    keep = add_job(admin_api)
    for _ in range(4):
        admin_api.add("job", {"action": action})
    response = admin_api.delete_bulk("job", f"action='{action}'")
    assert response.data["deleted"] == 4
    assert response.data["timed_out"] is False
    assert admin_api.search("job", filter=f"action='{action}'").count == 0
    assert admin_api.get(keep).id == keep


def test_bulk_delete_needs_header_and_filter(job_api: JobApiClients, admin_api: Api) -> None:
    url = f"{job_api.endpoint}/api/job"
    no_header = admin_api.session.delete(url, data={"filter": "action='x'"})
    assert no_header.status_code == 400
    no_filter = admin_api.session.delete(url, headers={"bulk": "yes"})
    assert no_filter.status_code == 400
    assert "filter" in no_filter.json()["message"]


def test_operations_cancel_timeout_get_context(admin_api: Api) -> None:
    job_id = add_job(admin_api)
    job = admin_api.get(job_id)
    response = admin_api.operation(job, "cancel")
    assert response.data["status"] == 200
    assert admin_api.get(job_id).data["state"] == "CANCELED"

    running = add_job(admin_api)
    admin_api.edit(running, {"state": "RUNNING"})
    job = admin_api.get(running)
    assert "timeout" in job.operations
    admin_api.operation(job, "timeout")
    assert admin_api.get(running).data["state"] == "CANCELED"

    context = admin_api.operation(admin_api.get(add_job(admin_api)), "get-context")
    assert context.data == {}


def test_get_context_holds_a_job_target(admin_api: Api) -> None:
    target = add_job(admin_api)
    job_id = add_job(admin_api, **{"target-resource": {"href": target}})
    context = admin_api.operation(admin_api.get(job_id), "get-context").data
    assert list(context) == [target]
    assert context[target]["id"] == target


def test_errors_are_json_with_status_and_message(job_api: JobApiClients, admin_api: Api) -> None:
    missing = f"job/{uuid.uuid4()}"
    with pytest.raises(NuvlaError) as err:
        admin_api.get(missing)
    body = err.value.response.json()
    assert body == {"status": 404, "message": f"{missing} not found", "resource-id": missing}
    assert str(err.value) == f"{missing} not found"


def test_a_filter_over_the_value_limit_is_a_400(admin_api: Api) -> None:
    # The limit belongs to the parsed filter: it used to be checked only while compiling
    # the SQL, inside the store, where it ended as a 500.
    values = ",".join(f"'v{i}'" for i in range(10_001))
    with pytest.raises(NuvlaError) as err:
        admin_api.search("job", filter=f"state=[{values}]", last=0)
    assert err.value.response.status_code == 400
    assert err.value.response.json()["message"] == (
        "invalid filter: the filter has more than 10000 values"
    )
    at_limit = ",".join(f"'v{i}'" for i in range(10_000))
    assert admin_api.search("job", filter=f"state=[{at_limit}]", last=0).count == 0


def _log_sizes(server: JobApiClients) -> dict[Path, int]:
    return {path: path.stat().st_size for path in server.log_paths}


def _logs_after(sizes: dict[Path, int]) -> str:
    """What each log (of each replica) got since `sizes`."""
    return "".join(path.read_text("utf-8", "replace")[size:] for path, size in sizes.items())


def test_filters_the_database_cannot_take_are_400s_of_our_own(
    job_api: JobApiClients, admin_api: Api
) -> None:
    # Each of these reached SQLite and came back as a 503 quoting it ("parser stack
    # overflow", "Expression tree is too large", "too many terms in ORDER BY clause").
    deep = "state='a'"
    for level in range(30):
        deep = f"name!='x' {'and' if level % 2 else 'or'} ({deep})"
    mixed = " or ".join(f"priority<{i}" if i % 2 else f"name^='{i}'" for i in range(1_000))
    refused = {
        "nested 30 deep": ({"filter": deep}, "nests and/or groups more than 20 levels deep"),
        "1,000 comparisons": ({"filter": mixed}, "has more than 500 comparisons"),
        "values over several filters": (
            {"filter": ["state=[" + ",".join(f"'{i}'" for i in range(6_000)) + "]"] * 2},
            "the filters together have more than 10000 values",
        ),
        "orderby of 3,000": ({"orderby": ",".join(["name"] * 3_000)}, "more than 20 attributes"),
    }
    sizes = _log_sizes(job_api)
    for name, (params, message) in refused.items():
        response = requests.put(
            f"{job_api.endpoint}/api/job",
            data={**params, "last": 0},
            cookies=admin_api.session.cookies,
            timeout=30,
        )
        assert response.status_code == 400, (name, response.text[:300])
        assert message in response.json()["message"], name
        assert "database" not in response.json()["message"], name
    # 1,000 and 10,000 `or` of one attribute were "Expression tree is too large": now one
    # indexed IN, answered.
    for count in (1_000, 10_000):
        names = " or ".join(f"action='{i}'" for i in range(count))
        assert admin_api.search("job", filter=names, last=0).count == 0
    log = _logs_after(sizes)
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]


# -- the nuvla-authn-info header ----------------------------------------------------------------


def test_authn_header_ignored_by_default(job_api: JobApiClients) -> None:
    api = Api(
        endpoint=job_api.endpoint,
        insecure=True,
        persist_cookie=False,
        authn_header="user/admin group/nuvla-admin group/nuvla-admin",
    )
    with pytest.raises(NuvlaError) as err:
        api.search("job")
    assert err.value.response.status_code == 403


def test_authn_header_honoured_when_enabled(zookeeper) -> None:
    server = JobApiProcess(zookeeper.hosts, "--trust-authn-header")
    try:
        server.start()
        admin = Api(
            endpoint=server.endpoint,
            insecure=True,
            persist_cookie=False,
            authn_header="user/ops group/nuvla-admin group/nuvla-admin group/nuvla-user",
        )
        job_id = admin.add("job", {"action": unique_action()}).data["resource-id"]
        assert admin.get(job_id).data["created-by"] == "user/ops"
        user = Api(
            endpoint=server.endpoint,
            insecure=True,
            persist_cookie=False,
            authn_header="user/bob user/bob group/nuvla-user",
        )
        with pytest.raises(NuvlaError) as err:
            user.get(job_id)
        assert err.value.response.status_code == 403
    finally:
        server.close()


def test_unknown_route_is_json_404(job_api: JobApiClients) -> None:
    response = requests.get(f"{job_api.endpoint}/api/nothing-here", timeout=5)
    assert response.status_code == 404
    assert response.json()["status"] == 404
    assert "no such resource" in response.json()["message"]
    response = requests.patch(f"{job_api.endpoint}/api/job", timeout=5)
    assert response.status_code == 405
    assert response.json()["status"] == 405


def test_total_count_is_kept_exact(admin_api: Api) -> None:
    """The unfiltered count (kept by triggers) equals a real count after adds and deletes."""
    first = add_job(admin_api)
    add_job(admin_api)
    admin_api.delete(first)
    admin_api.delete_bulk("job", f"id='{add_job(admin_api)}'")
    counted = admin_api.search("job", filter="id!=null", last=0).count
    assert admin_api.search("job", last=0).count == counted


def test_search_orderby_paging_select_and_date_math(job_api: JobApiClients, admin_api: Api) -> None:
    action = unique_action()
    for priority in (30, 10, 20, 40):
        admin_api.add("job", {"action": action, "priority": priority})
    where = f"action='{action}'"
    ordered = admin_api.search("job", filter=where, orderby="priority:desc")
    assert [r.data["priority"] for r in ordered.resources] == [40, 30, 20, 10]
    page = admin_api.search("job", filter=where, orderby="priority", first=2, last=3)
    assert page.count == 4
    assert [r.data["priority"] for r in page.resources] == [20, 30]
    selected = admin_api.search("job", filter=where, select="priority", last=1)
    assert set(selected.resources[0].data) == {"id", "resource-type", "priority"}
    assert admin_api.search("job", filter=f"{where} and created>'now-1h'", last=0).count == 4
    assert admin_api.search("job", filter=f"{where} and created<'now-1h'", last=0).count == 0
    # Several filter parameters are joined with `and`.
    both = admin_api.session.put(
        f"{job_api.endpoint}/api/job", data=[("filter", where), ("filter", "priority>=30")]
    )
    assert both.json()["count"] == 2


def test_health_follows_the_zookeeper_connection(job_api: JobApiClients, zookeeper) -> None:
    url = f"{job_api.endpoint}/api/health"
    assert requests.get(url, timeout=5).json() == {"status": "ok", "zookeeper": "CONNECTED"}
    zookeeper.stop()
    try:
        deadline = time.monotonic() + 30
        while (response := requests.get(url, timeout=5)).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["zookeeper"] in ("SUSPENDED", "LOST")
    finally:
        zookeeper.start()
    job_api.wait_queue_connected()

"""Nuvla drop-in (issue 12): the package's own executor and distributor (`nuvla-job-engine`,
the `nuvla` extra) beside this engine's, on one queue, one election and one job API, and the
package's actions run by both engines on the same input.

Upstream's processes are real (tests/support/upstream.py); the Nuvla resources that the
Nuvla-domain action and distribution read come from a small CIMI server in front of the job
API (tests/support/cimi_fixture.py).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api
from nuvla.job_engine.job.actions.utils.bulk_action import BulkActionResult

from nuvla_job.api.sqlite import Database, SqliteJobStore
from nuvla_job.distributor import election_path
from nuvla_job.localstack.processes import EngineProcess
from nuvla_job.timeutil import now_iso
from tests.integration.test_builtin_actions import stored_job
from tests.integration.test_executor import add, queue_empty, wait_state
from tests.support.cimi_fixture import CimiFixture
from tests.support.jobapi import JobApiProcess
from tests.support.upstream import (
    our_distributor,
    our_executor,
    upstream_distributor,
    upstream_executor,
)
from tests.support.waiting import wait_for
from tests.support.zookeeper import ZooKeeperServer

ENGINES = ("ours", "upstream")


@pytest.fixture
def processes() -> Iterator[Callable[[EngineProcess], EngineProcess]]:
    started: list[EngineProcess] = []

    def start(process: EngineProcess) -> EngineProcess:
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.kill() if process.module.startswith("upstream") else process.stop()


def start_engine(
    engine: str, server: JobApiProcess, zookeeper: ZooKeeperServer, start, *ours: str
) -> EngineProcess:
    if engine == "ours":
        process = start(
            our_executor(zookeeper.hosts, server.endpoint, server.credentials_path, *ours)
        )
        process.wait_for_log("running up to")
    else:
        process = start(upstream_executor(zookeeper.hosts, server.endpoint, server.credentials()))
        process.wait_for_log("I am executor")
    return process


def pull_job(api: Api, action: str, state: str | None = None, **attrs) -> str:
    """A job no executor takes (pull mode), put in `state` by hand."""
    job_id = add(api, action, **{"execution-mode": "pull", **attrs})
    if state is not None:
        api.edit(job_id, {"state": state})
    return job_id


# -- one queue, one election -------------------------------------------------------------------


def test_both_executors_on_one_queue_run_every_job_once(
    job_api: JobApiProcess, admin_api: Api, zookeeper: ZooKeeperServer, zk: KazooClient, processes
) -> None:
    jobs = [add(admin_api, "nuvla_counted") for _ in range(300)]
    start_engine("upstream", job_api, zookeeper, processes)

    def markers() -> list[dict]:
        return admin_api.search("job", filter="action='run_marker'", last=10000).data["resources"]

    mine = set(jobs)
    wait_for(
        lambda: any(m["target-resource"]["href"] in mine for m in markers()),
        "upstream's first run",
        60,
    )
    start_engine("ours", job_api, zookeeper, processes, "--concurrency", "10")
    for job_id in jobs:
        assert wait_state(admin_api, job_id, timeout=120)["state"] == "SUCCESS"
    runs = [m for m in markers() if m["target-resource"]["href"] in mine]
    assert Counter(m["target-resource"]["href"] for m in runs) == Counter(jobs)  # once each
    engines = Counter(m["tags"][0] for m in runs)
    assert set(engines) == {"nuvla", "nuvla_job"}, engines
    queue_empty(zk)


def leader(zk: KazooClient, distribution: str) -> str | None:
    contenders = zk.Election(election_path(distribution)).contenders()
    return contenders[0] if contenders else None


def test_both_distributors_elect_one_leader_and_fail_over_both_ways(
    job_api: JobApiProcess, zookeeper: ZooKeeperServer, zk: KazooClient, processes
) -> None:
    # Two of the package's distributions that need only the job API; upstream elects
    # monitor_bulk_jobs at /election/monitor_bulk_job.
    kept = ("cleanup_jobs", "monitor_bulk_jobs")
    others = [
        "deployment_set_automatic_update", "deployment_state_new", "deployment_state_old",
        "handle_trial_end", "notify_coupon_end", "nuvlabox_cluster_cleanup", "nuvlabox_offline",
        "refresh_customer_subscription_cache", "register_usage_record",
        "register_usage_record_new_deployment", "update_nuvlabox_releases",
        "update_vulnerabilities_database",
    ]  # fmt: skip
    elections = ("cleanup_jobs", "monitor_bulk_job")
    tag = uuid.uuid4().hex[:6]
    theirs, ours = f"upstream-{tag}", f"ours-{tag}"

    def start_upstream() -> EngineProcess:
        return processes(
            upstream_distributor(
                zookeeper.hosts, job_api.endpoint, job_api.credentials(), theirs,
                "--distribution-exclude", *others,
            )
        )  # fmt: skip

    def start_ours() -> EngineProcess:
        return processes(
            our_distributor(
                zookeeper.hosts, job_api.endpoint, job_api.credentials_path, ours,
                "--zk-timeout", "2", "--distribution-include", *kept,
            )
        )  # fmt: skip

    def leaders() -> set[str | None]:
        return {leader(zk, e) for e in elections}

    def contenders(e: str) -> list[str]:
        return zk.Election(election_path(e)).contenders()

    upstream = start_upstream()
    wait_for(lambda: leaders() == {theirs}, "upstream leading", 60)
    mine = start_ours()
    wait_for(lambda: all(ours in contenders(e) for e in elections), "ours contending", 60)
    assert leaders() == {theirs}  # one leader each: the first
    upstream.kill()  # kill -9: its session (30 s, upstream's) must expire
    wait_for(lambda: leaders() == {ours}, "ours taking over", 60)
    assert all(contenders(e) == [ours] for e in elections)
    upstream = start_upstream()
    wait_for(lambda: all(theirs in contenders(e) for e in elections), "upstream back", 60)
    assert leaders() == {ours}
    mine.kill()
    wait_for(lambda: leaders() == {theirs}, "upstream taking over", 30)
    assert all(contenders(e) == [theirs] for e in elections)


# -- the package's job-API-only actions through both engines -----------------------------------


@pytest.fixture
def seeded_servers(zookeeper: ZooKeeperServer) -> Iterator[dict[str, JobApiProcess]]:
    """One job API per engine, each holding the same old jobs before it starts."""
    servers = {}
    try:
        for engine in ENGINES:
            server = JobApiProcess(zookeeper.hosts)
            seeds = [
                stored_job("SUCCESS", 10), stored_job("FAILED", 8), stored_job("CANCELED", 30),
                stored_job("SUCCESS", 3), stored_job("QUEUED", 10),
            ]  # fmt: skip
            database = Database(str(server.db))
            SqliteJobStore(database).insert_many(seeds)
            database.close()
            server.start()
            servers[engine] = server
        yield servers
    finally:
        for server in servers.values():
            server.close()


def bulk_parent_of_upstreams_shape(api: Api, child_states: dict[str, str]) -> tuple[str, dict]:
    """A RUNNING `bulk_stop_deployment` parent as upstream's bulk action leaves it, and its
    children (one per deployment, in the given states)."""
    result = BulkActionResult(len(child_states))
    for deployment in child_states:
        result.add_queued_action(deployment)
    parent = pull_job(api, "bulk_stop_deployment", state="RUNNING")
    api.edit(parent, {"status-message": result.to_json(), "tags": ["monitor"]})
    children = {}
    for deployment, state in child_states.items():
        children[deployment] = pull_job(
            api, "stop_deployment", state if state != "QUEUED" else None,
            **{"parent-job": parent, "target-resource": {"href": deployment}},
        )  # fmt: skip
    return parent, children


def run_the_package_actions(server: JobApiProcess, engine: str, zookeeper, processes) -> dict:
    """The job-API-only actions of the package on one engine: what they leave, ids named."""
    api = server.admin_api()
    names: dict[str, str] = {}
    parent = pull_job(api, "bulk_parent_test")
    names[parent] = "parent"
    for i, state in enumerate(("QUEUED", "QUEUED", "RUNNING", "SUCCESS")):
        names[pull_job(api, "test_ok", state if state != "QUEUED" else None,
                       **{"parent-job": parent})] = f"child-{i}"  # fmt: skip
    bulk, children = bulk_parent_of_upstreams_shape(
        api, {"deployment/a": "SUCCESS", "deployment/b": "FAILED", "deployment/c": "RUNNING"}
    )
    names[bulk] = "bulk"
    names.update({job_id: f"stop-{d}" for d, job_id in children.items()})
    # The package's own actions, not this project's of the same names.
    process = start_engine(engine, server, zookeeper, processes, "--no-builtin-actions")
    jobs = {
        "cleanup": add(api, "cleanup_jobs"),
        "cancel": add(api, "cancel_children_jobs", **{"target-resource": {"href": parent}}),
        "monitor": add(api, "monitor_bulk_job", **{"target-resource": {"href": bulk}}),
        "dummy": add(api, "dummy_test_action"),
    }
    names.update({job_id: name for name, job_id in jobs.items()})

    def named(value: object) -> object:
        return re.sub(r"job/[0-9a-f-]{36}", lambda m: names.get(m.group(0), "job/?"), str(value))

    seen = {}
    for name, job_id in {**jobs, **{n: i for i, n in names.items()}}.items():
        doc = wait_state(api, job_id) if name in jobs else api.get(job_id).data
        seen[name] = {k: named(doc.get(k)) for k in ("state", "return-code", "progress")}
        seen[name]["status-message"] = named(doc.get("status-message"))
    seen["seeds left"] = api.search("job", filter="action='seeded'", last=0).data["count"]
    # Both job APIs share the test's queue: the next engine must be alone on it.
    process.kill() if engine == "upstream" else process.stop()
    return seen


def test_the_package_actions_leave_the_same_states_and_messages_on_both_engines(
    seeded_servers: dict[str, JobApiProcess], zookeeper: ZooKeeperServer, processes
) -> None:
    results = {
        engine: run_the_package_actions(server, engine, zookeeper, processes)
        for engine, server in seeded_servers.items()
    }
    ours, upstream = results["ours"], results["upstream"]
    assert ours == upstream
    # And what they are: the package's behaviour.
    assert ours["cleanup"]["status-message"] == (
        "Cleanup of completed jobs finished. Removed 3 jobs."
    )
    assert ours["seeds left"] == 2
    assert [ours[f"child-{i}"]["state"] for i in range(4)] == ["CANCELED"] * 3 + ["SUCCESS"]
    assert ours["bulk"]["state"] == "RUNNING" and ours["bulk"]["progress"] == "66"
    assert json.loads(ours["bulk"]["status-message"])["success"] == ["deployment/a"]
    assert {k: ours["dummy"][k] for k in ("state", "return-code")} == {
        "state": "SUCCESS",
        "return-code": "0",
    }


# -- Nuvla's resources -------------------------------------------------------------------------


@pytest.fixture
def cimi(job_api: JobApiProcess, admin_api: Api) -> Iterator[CimiFixture]:
    fixture = CimiFixture(job_api.endpoint, admin_api).start()
    yield fixture
    fixture.close()


def deployment(fixture: CimiFixture, credentials: dict[str, str], **attrs) -> str:
    """A STARTED docker-compose application deployment on a swarm nobody listens to."""
    uid = str(uuid.uuid4())
    deployment_id, credential, infra = (
        f"deployment/{uid}",
        f"credential/{uid}",
        f"infrastructure-service/{uid}",
    )
    fixture.resources[deployment_id] = {
        "id": deployment_id,
        "resource-type": "deployment",
        "state": "STARTED",
        "updated": now_iso(),
        "execution-mode": "push",
        "parent": credential,
        "api-endpoint": "https://nuvla.example",
        "acl": {"owners": ["group/nuvla-admin"]},
        "api-credentials": {"api-key": credentials["key"], "api-secret": credentials["secret"]},
        "module": {
            "subtype": "application",
            "compatibility": "docker-compose",
            "content": {"docker-compose": "services:\n  web:\n    image: nginx\n"},
        },
        **attrs,
    }
    fixture.contexts[deployment_id] = {
        credential: {"id": credential, "parent": infra, "cert": "CERT", "key": "KEY"},
        infra: {"id": infra, "subtype": "swarm", "endpoint": "https://127.0.0.1:1"},
    }
    return deployment_id


def test_a_bulk_job_of_upstreams_shape_runs_to_success_through_the_monitor(
    cimi: CimiFixture,
    job_api: JobApiProcess,
    admin_api: Api,
    zookeeper: ZooKeeperServer,
    zk: KazooClient,
    processes,
) -> None:
    credentials = job_api.credentials()
    deployments = [deployment(cimi, credentials) for _ in range(2)]
    monitor = ("--distributions", "--distribution-include", "monitor_bulk_jobs",
               "--distribution-interval", "monitor_bulk_job:1")  # fmt: skip
    process = processes(
        our_executor(zookeeper.hosts, cimi.url, job_api.credentials_path, "--concurrency", "1",
                     *monitor)
    )  # fmt: skip
    process.wait_for_log("running up to")
    authn = {"user-id": "user/alice", "active-claim": "user/alice", "claims": ["user/alice"]}
    payload = {"filter": "state='STARTED'", "authn-info": authn}
    bulk = add(admin_api, "bulk_stop_deployment", payload=json.dumps(payload))
    # Upstream's bulk action stops each deployment (a child job each), tags its job and
    # leaves it RUNNING: the only slot is free again for the monitor's jobs.
    children = wait_for(
        lambda: admin_api.search("job", filter=f"parent-job='{bulk}'").data["resources"],
        "the children",
        60,
    )
    wait_for(
        lambda: admin_api.search(
            "job", filter=f"action='monitor_bulk_job' and target-resource/href='{bulk}' "
            "and state='SUCCESS'", last=0,
        ).data["count"] > 0,
        "a monitor run",
        60,
    )  # fmt: skip
    running = admin_api.get(bulk).data
    assert (running["state"], running["tags"]) == ("RUNNING", ["monitor"])
    assert cimi.searches == [("deployment", "state='STARTED'")]
    for child in children:
        admin_api.edit(child["id"], {"state": "SUCCESS"})  # as Nuvla's stop_deployment would
    try:
        job = wait_state(admin_api, bulk, timeout=60)
    except AssertionError:
        raise AssertionError(process.log()[-6000:]) from None
    assert (job["state"], job["progress"], job["return-code"]) == ("SUCCESS", 100, 0)
    # The result upstream writes: what its bulk action started, then what its monitor saw.
    expected = BulkActionResult(2)
    for d in deployments:
        expected.add_queued_action(d)
    expected = BulkActionResult.from_json(expected.to_json())
    expected.set_queued_actions([])
    expected.set_running_actions([])
    order = [c["target-resource"]["href"] for c in children]
    for d in order:
        expected.add_success_action(d)
    assert job["status-message"] == expected.to_json()
    queue_empty(zk)


def test_deployment_state_new_and_deployment_state_10_against_nuvla_resources(
    cimi: CimiFixture,
    job_api: JobApiProcess,
    admin_api: Api,
    zookeeper: ZooKeeperServer,
    processes,
) -> None:
    credentials = job_api.credentials()
    edge = deployment(cimi, credentials, **{"nuvlabox": "nuvlabox/1", "execution-mode": "mixed"})
    cloud = deployment(cimi, credentials)
    others = [
        "cleanup_jobs", "deployment_set_automatic_update", "deployment_state_old",
        "handle_trial_end", "monitor_bulk_jobs", "notify_coupon_end", "nuvlabox_cluster_cleanup",
        "nuvlabox_offline", "refresh_customer_subscription_cache", "register_usage_record",
        "register_usage_record_new_deployment", "update_nuvlabox_releases",
        "update_vulnerabilities_database",
    ]  # fmt: skip

    def created() -> list[dict]:
        return admin_api.search(
            "job", filter="action='deployment_state_10'", orderby="created"
        ).data["resources"]

    def bodies() -> list[dict]:
        keys = ("action", "target-resource", "execution-mode", "acl")
        return sorted(({k: j.get(k) for k in keys} for j in created()), key=lambda b: str(b))

    # What upstream's distributor creates...
    tag = uuid.uuid4().hex[:6]
    theirs = processes(
        upstream_distributor(zookeeper.hosts, cimi.url, credentials, f"upstream-{tag}",
                             "--distribution-exclude", *others)
    )  # fmt: skip
    wait_for(lambda: len(created()) == 2, "upstream's deployment_state_10 jobs", 60)
    theirs.kill()
    upstream_bodies = bodies()
    for job in created():
        admin_api.operation(admin_api.get(job["id"]), "cancel")
    # ... is what ours creates, with its own acl owner kept, and no job twice.
    ours = processes(
        our_distributor(zookeeper.hosts, cimi.url, job_api.credentials_path, f"ours-{tag}",
                        "--distribution-include", "deployment_state_new",
                        "--distribution-interval", "deployment_state_new:1")
    )  # fmt: skip
    wait_for(lambda: len([j for j in created() if j["state"] == "QUEUED"]) == 2, "ours", 60)
    # Two more ticks, each finding the deployments' jobs there.
    wait_for(lambda: ours.log().count("Deployments skipped (jobs already exist): 2") >= 2,
             "two more ticks", 30)  # fmt: skip
    queued = [j for j in created() if j["state"] == "QUEUED"]
    assert len(queued) == 2  # the existing jobs were found: none twice
    assert sorted(
        ({k: j.get(k) for k in ("action", "target-resource", "execution-mode", "acl")}
         for j in queued), key=lambda b: str(b)
    ) == upstream_bodies  # fmt: skip
    assert {j["target-resource"]["href"]: j["execution-mode"] for j in queued} == {
        edge: "pull",
        cloud: "push",
    }
    ours.stop()
    # The action, run by each engine: it fails (no container engine answers), reported as
    # upstream reports it.
    [push_job] = [j["id"] for j in queued if j["execution-mode"] == "push"]
    failed = {}
    for engine in ENGINES:
        job_id = push_job if engine == "ours" else add(
            admin_api, "deployment_state_10", **{"target-resource": {"href": cloud}}
        )  # fmt: skip
        process = (
            processes(our_executor(zookeeper.hosts, cimi.url, job_api.credentials_path))
            if engine == "ours"
            else processes(upstream_executor(zookeeper.hosts, cimi.url, credentials))
        )
        failed[engine] = wait_state(admin_api, job_id, timeout=60)
        process.kill() if engine == "upstream" else process.stop()
    for engine, job in failed.items():
        assert (job["state"], job["return-code"]) == ("FAILED", 1), (engine, job)
        assert "Traceback (most recent call last)" in job["status-message"], engine
    last = {e: j["status-message"].rstrip().splitlines()[-1] for e, j in failed.items()}
    assert last["ours"] == last["upstream"], last
    # Each names the exception first, in its own spelling ("Type: ..." here, "Type-..." there).
    kind = failed["upstream"]["status-message"].split("-", 1)[0]
    assert re.fullmatch(r"\w+", kind) and failed["ours"]["status-message"].startswith(f"{kind}: ")

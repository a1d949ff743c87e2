"""The operator CLI (`job`), run as a subprocess against the real job API and ZooKeeper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from nuvla_job.localstack.processes import REPO
from tests.integration.test_executor import add
from tests.support.jobapi import JobApiProcess
from tests.support.zookeeper import ZooKeeperServer

Cli = Callable[..., subprocess.CompletedProcess]


def run_cli(
    *args: str, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nuvla_job.cli.operator", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )


def stack_env(
    job_api: JobApiProcess, zookeeper: ZooKeeperServer, data_home: Path
) -> dict[str, str]:
    """The environment an operator would set: endpoint, credentials file, ZooKeeper."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_", "ZK_"))}
    # A data directory of our own, so no real default credentials file is picked up.
    env["XDG_DATA_HOME"] = str(data_home)
    env.update(
        JOB_API_URL=job_api.endpoint,
        JOB_API_CREDENTIALS=str(job_api.credentials_path),
        ZK_HOSTS=zookeeper.hosts,
    )
    return env


@pytest.fixture
def cli(job_api: JobApiProcess, zookeeper: ZooKeeperServer, tmp_path: Path) -> Cli:
    env = stack_env(job_api, zookeeper, tmp_path / "data")
    return lambda *args, input=None: run_cli(*args, env=env, input=input)


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def entries_by_job(zk: KazooClient) -> dict[str, list[str]]:
    """Entry names per job id, from ZooKeeper itself."""
    result: dict[str, list[str]] = {}
    for name in zk.get_children(queue.ENTRIES) if zk.exists(queue.ENTRIES) else []:
        data = zk.get(f"{queue.ENTRIES}/{name}")[0].decode()
        result.setdefault(data, []).append(name)
    return result


# -- submit --------------------------------------------------------------------------------------


def test_submit_one_job_with_every_option(cli: Cli, admin_api: Api, zk: KazooClient) -> None:
    result = cli(
        "submit",
        "test_ok",
        "--target",
        "deployment/42",
        "--payload",
        '{"a": [1, 2]}',
        "--priority",
        "5",
        "--mode",
        "mixed",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["id"]
    job = admin_api.get(job_id).data
    assert (job["action"], job["priority"], job["execution-mode"]) == ("test_ok", 5, "mixed")
    assert job["target-resource"] == {"href": "deployment/42"}
    assert json.loads(job["payload"]) == {"a": [1, 2]}
    [entry] = entries_by_job(zk)[job_id]
    assert entry.startswith("entry-005-")
    human = cli("submit", "dummy_test_action")
    assert human.returncode == 0 and human.stdout.startswith("job/")
    assert "created (dummy_test_action)" in human.stdout


@pytest.mark.parametrize(
    "args, text",
    [
        (("submit", "test_ok", "--payload", "{not json"), "--payload is not valid JSON"),
        (("submit",), "give an ACTION, or --from FILE"),
        (("submit", "test_ok", "--priority", "1000"), "--priority"),
        (("show", f"job/{uuid.uuid4()}"), "job API answered 404"),
        (("list", "--filter", "state=="), "job API answered 400"),
        (("no-such-command",), "No such command"),
    ],
)
def test_errors_are_one_line_with_exit_3(cli: Cli, args: tuple[str, ...], text: str) -> None:
    assert_one_line_error(cli(*args), text)


def test_submit_from_jsonl_counts_created_and_failed(
    cli: Cli, admin_api: Api, tmp_path: Path
) -> None:
    tag = f"batch-{uuid.uuid4().hex[:8]}"
    lines = [
        json.dumps({"action": "test_ok", "tags": [tag]}),
        json.dumps({"action": "test_ok", "tags": [tag], "payload": {"n": 2}}),
        "",
        "{broken",
        json.dumps({"no-action": True}),
        json.dumps({"action": "test_ok", "tags": [tag], "priority": 7}),
        json.dumps({"action": "test_ok", "not-an-attribute": 1}),
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli("submit", "--from", str(path), "--priority", "300", "--json")
    assert result.returncode == 1, result.stderr  # some lines failed
    report = json.loads(result.stdout)
    assert len(report["created"]) == 3
    assert [f["line"] for f in report["failed"]] == [4, 5, 7]
    assert "invalid JSON" in report["failed"][0]["error"]
    assert "'action'" in report["failed"][1]["error"]
    assert "job API answered 400" in report["failed"][2]["error"]
    jobs = admin_api.search("job", filter=f"tags='{tag}'", orderby="created").data["resources"]
    assert sorted(j["priority"] for j in jobs) == [7, 300, 300]  # --priority: only a default
    assert json.loads(next(j for j in jobs if "payload" in j)["payload"]) == {"n": 2}
    # Human output, from stdin: the final count and each failure's reason.
    human = cli("submit", "--from", "-", input="\n".join(lines[:2] + lines[3:5]) + "\n")
    assert human.returncode == 1
    assert "created 2 job(s), failed 2" in human.stdout
    assert "line 3: invalid JSON" in human.stdout and "line 4: not a JSON object" in human.stdout


def test_submit_wait_exits_with_the_outcome(
    cli: Cli, admin_api: Api, start_executor, tmp_path: Path
) -> None:
    start_executor()
    ok = cli("submit", "test_sleep", "--payload", '{"seconds": 0.5}', "--wait")
    assert ok.returncode == 0, ok.stderr
    assert "created (test_sleep); waiting" in ok.stdout
    assert "SUCCESS (return code 0)" in ok.stdout
    failed = cli("submit", "test_fail_code", "--wait", "--json")
    assert failed.returncode == 1, failed.stderr
    doc = json.loads(failed.stdout)
    assert (doc["state"], doc["return-code"]) == ("FAILED", 3)
    assert "operations" not in doc
    never = cli("submit", "test_ok", "--mode", "pull", "--wait", "--timeout", "0.5")
    assert_one_line_error(never, "still QUEUED after 0.5 s")
    assert_one_line_error(cli("submit", "test_ok", "--timeout", "1"), "--timeout goes with --wait")
    # --from with --wait: every job waited for; exit 1 when one did not succeed.
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        "\n".join(
            [json.dumps({"action": "test_ok"})] * 3 + [json.dumps({"action": "test_fail_code"})]
        )
    )
    batch = cli("submit", "--from", str(path), "--wait", "--json")
    assert batch.returncode == 1, batch.stderr
    report = json.loads(batch.stdout)
    assert sorted(report["states"].values()) == ["FAILED", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert sorted(report["states"]) == sorted(report["created"])
    path.write_text(json.dumps({"action": "test_ok"}))
    human = cli("submit", "--from", str(path), "--wait")
    assert human.returncode == 0, human.stderr
    assert "finished: 1 SUCCESS" in human.stdout


# -- list, show, cancel --------------------------------------------------------------------------


def test_list_filters_and_orders(cli: Cli, admin_api: Api) -> None:
    action = f"cli_list_{uuid.uuid4().hex[:8]}"
    ids = [add(admin_api, action, priority=p, **{"execution-mode": "pull"}) for p in (30, 10, 20)]
    admin_api.operation(admin_api.get(ids[0]), "cancel")
    newest_two = cli("list", "--action", action, "--last", "2", "--json")
    assert newest_two.returncode == 0, newest_two.stderr
    answer = json.loads(newest_two.stdout)
    assert answer["count"] == 3
    assert [j["id"] for j in answer["jobs"]] == [ids[2], ids[1]]  # created:desc by default
    queued = json.loads(
        cli(
            "list", "--action", action, "--state", "queued", "--orderby", "priority", "--json"
        ).stdout
    )
    assert [j["id"] for j in queued["jobs"]] == [ids[1], ids[2]]
    filtered = json.loads(
        cli("list", "--filter", f"action='{action}'", "--filter", "priority>=20", "--json").stdout
    )
    assert {j["id"] for j in filtered["jobs"]} == {ids[0], ids[2]}
    human = cli("list", "--action", action)
    assert human.returncode == 0
    assert "3 of 3 job(s)" in human.stdout
    assert all(job_id in human.stdout for job_id in ids)
    assert "CANCELED" in human.stdout


def test_show_and_cancel(cli: Cli, admin_api: Api) -> None:
    job_id = add(admin_api, "test_ok", payload=json.dumps({"k": "v"}), **{"execution-mode": "pull"})
    shown = cli("show", job_id, "--json")
    assert shown.returncode == 0
    document = json.loads(shown.stdout)
    expected = admin_api.get(job_id).data
    expected.pop("operations")
    assert document == expected
    human = cli("show", job_id.removeprefix("job/"))  # the bare uuid works too
    assert human.returncode == 0
    assert job_id in human.stdout and "QUEUED" in human.stdout and '"k": "v"' in human.stdout
    cancelled = cli("cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "canceled" in cancelled.stdout
    assert admin_api.get(job_id).data["state"] == "CANCELED"
    assert_one_line_error(cli("cancel", job_id), "job API answered 409")


# -- watch ---------------------------------------------------------------------------------------


def test_watch_exits_with_the_outcome(cli: Cli, admin_api: Api, start_executor) -> None:
    start_executor()
    running = add(admin_api, "test_sleep", payload=json.dumps({"seconds": 1}))
    watched = cli("watch", running, "--interval", "0.1")
    assert watched.returncode == 0, watched.stderr
    assert f"{running} SUCCESS (return code 0)" in watched.stdout
    failing = add(admin_api, "test_fail_code")
    as_json = cli("watch", failing, "--interval", "0.1", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["state"] == "FAILED"
    cancelled = add(admin_api, "test_ok", **{"execution-mode": "pull"})
    admin_api.operation(admin_api.get(cancelled), "cancel")
    assert cli("watch", cancelled).returncode == 2
    never = add(admin_api, "test_ok", **{"execution-mode": "pull"})  # nobody runs it
    assert_one_line_error(
        cli("watch", never, "--interval", "0.1", "--timeout", "0.5"), "still QUEUED after 0.5 s"
    )


# -- queue ---------------------------------------------------------------------------------------


def test_queue_shows_depth_takers_and_oldest(cli: Cli, admin_api: Api, zk: KazooClient) -> None:
    first = add(admin_api, "test_ok", priority=5)
    add(admin_api, "test_ok", priority=1)
    add(admin_api, "test_ok", priority=1)
    entries = entries_by_job(zk)
    [taken] = entries[first]
    # A consumer's take: an ephemeral node whose data names the taker.
    zk.create(f"{queue.TAKEN}/{taken}", b"executor-on-host-7", ephemeral=True, makepath=True)
    result = cli("queue", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["entries"] == 3
    assert status["by_priority"] == {"001": 2, "005": 1}
    assert status["taken"] == [{"entry": taken, "job": first, "taker": "executor-on-host-7"}]
    # The oldest is the first one queued, whatever its priority.
    assert status["oldest"]["entry"] == taken and status["oldest"]["job"] == first
    assert 0 <= status["oldest"]["age_seconds"] < 60
    human = cli("queue")
    assert human.returncode == 0
    assert "3 entries queued, 1 taken" in human.stdout
    assert "executor-on-host-7" in human.stdout and first in human.stdout
    assert f"oldest entry: {taken}" in human.stdout


def test_zk_hosts_before_the_subcommand(cli: Cli, zookeeper: ZooKeeperServer) -> None:
    # Upstream's multi-value form (--zk-hosts a b) must stop at the subcommand's name.
    result = cli("--zk-hosts", zookeeper.hosts, "queue", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entries"] >= 0


def test_queue_without_zookeeper_is_one_line(cli: Cli) -> None:
    assert_one_line_error(
        cli("--zk-hosts", "127.0.0.1:1", "--zk-timeout", "1", "queue"),
        "cannot connect to ZooKeeper at 127.0.0.1:1",
    )


# -- restore -------------------------------------------------------------------------------------


def test_restore_queues_exactly_the_missing_jobs_once(
    fresh_api: JobApiProcess, zk: KazooClient, zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    api = fresh_api.admin_api()
    push = [add(api, "test_ok", priority=p) for p in (3, 500, 999, 3, 42, 7, 7, 100)]
    mixed = [add(api, "test_ok", priority=9, **{"execution-mode": "mixed"}) for _ in range(2)]
    pull = [add(api, "test_ok", **{"execution-mode": "pull"}) for _ in range(2)]
    done = add(api, "test_ok")
    api.operation(api.get(done), "cancel")  # final: its leftover entry is no concern
    entries = entries_by_job(zk)
    lost = [push[0], push[2], push[5], mixed[1]]
    for job_id in lost:
        zk.delete(f"{queue.ENTRIES}/{entries[job_id][0]}")
    env = stack_env(fresh_api, zookeeper, tmp_path / "data")

    dry = run_cli("restore", "--dry-run", "--min-age", "0", "--page-size", "3", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert sorted(m["id"] for m in report["missing"]) == sorted(lost)
    assert report["queued"] == [] and report["scanned"] == 10
    assert set(entries_by_job(zk)).isdisjoint(lost)  # a dry run changes nothing

    real = run_cli("restore", "--min-age", "0", "--page-size", "3", "--json", env=env)
    assert real.returncode == 0, real.stderr
    assert len(json.loads(real.stdout)["queued"]) == 4
    after = entries_by_job(zk)
    for job_id in push + mixed:
        assert len(after[job_id]) == 1, job_id
        priority = api.get(job_id).data["priority"]
        assert after[job_id][0].startswith(f"entry-{priority:03d}-")
    assert not set(after) & set(pull)

    again = run_cli("restore", "--min-age", "0", env=env)
    assert again.returncode == 0, again.stderr
    assert "queued 0 job(s)" in again.stdout
    assert entries_by_job(zk) == after

    # Jobs younger than --min-age may be in the middle of their add: left alone.
    zk.delete(f"{queue.ENTRIES}/{after[push[1]][0]}")
    young = json.loads(run_cli("restore", "--min-age", "3600", "--json", env=env).stdout)
    assert young["missing"] == [] and young["scanned"] == 0


def test_default_credentials_file_and_its_endpoint(
    fresh_api: JobApiProcess, zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    """No options and no environment: the job API's admin credentials file is used."""
    data_home = tmp_path / "data"
    (data_home / "nuvla-job").mkdir(parents=True)
    (data_home / "nuvla-job" / "admin-credentials.json").write_text(
        fresh_api.credentials_path.read_text()
    )
    env = stack_env(fresh_api, zookeeper, data_home)
    del env["JOB_API_URL"], env["JOB_API_CREDENTIALS"]
    job_id = add(fresh_api.admin_api(), "test_ok", **{"execution-mode": "pull"})
    result = run_cli("show", job_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == job_id
    # Explicit options win over the file; bad credentials are one line.
    bad = run_cli(
        "--api-url",
        fresh_api.endpoint,
        "--api-key",
        "credential/nope",
        "--api-secret",
        "wrong",
        "show",
        job_id,
        env=env,
    )
    assert_one_line_error(bad, "login to the job API")


def test_job_api_unreachable_is_one_line(cli: Cli) -> None:
    assert_one_line_error(
        cli("--api-url", "http://127.0.0.1:1", "list"), "cannot reach the job API"
    )

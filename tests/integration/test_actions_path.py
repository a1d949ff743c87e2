"""Where the engine's commands find their actions, through real processes: the
JOB_ACTIONS_PATH variable with several folders, and an executor that would load none."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.cli.actions_options import Directories
from nuvla_job.localstack.processes import EngineProcess
from tests.integration.test_executor import add, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.processes import executor_process
from tests.support.waiting import wait_for
from tests.support.zookeeper import ZooKeeperServer

ACTION_MODULE = """\
from nuvla_job.registry import action, distribute


@action("{name}")
class Action:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        self.job.set_status_message("{name} ran")
        return 0


distribute("{name}", 1, tags=["{name}"])
"""


def action_folder(root: Path, folder: str, name: str) -> Path:
    """A folder holding one module that declares the action (and distribution) ``name``."""
    path = root / folder
    path.mkdir()
    (path / f"{name}_module.py").write_text(ACTION_MODULE.format(name=name))
    return path


@pytest.fixture
def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    return action_folder(tmp_path, "one", "from_one"), action_folder(tmp_path, "two", "from_two")


@pytest.fixture
def executors(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient
) -> Iterator[Callable[..., EngineProcess]]:
    """Executors configured by the environment only (no --actions-path); stopped after."""
    started: list[EngineProcess] = []

    def start(env: dict[str, str], *extra: str) -> EngineProcess:
        process = executor_process(
            zookeeper.hosts,
            job_api.endpoint,
            str(job_api.credentials_path),
            *extra,
            env=env,
            actions_path=None,
        )
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


def test_the_variable_splits_on_whitespace_and_on_pathsep() -> None:
    split = Directories().split_envvar_value
    assert split("/a /b") == ["/a", "/b"]
    assert split("  /a\t/b\n") == ["/a", "/b"]
    assert split(f"/a{os.pathsep}/b /c") == ["/a", "/b", "/c"]
    assert split("") == []


@pytest.mark.parametrize(
    "separator", [" ", os.pathsep, "\n  "], ids=["space", "pathsep", "newline"]
)
def test_executor_loads_every_folder_of_the_variable(
    admin_api: Api, executors, two_folders: tuple[Path, Path], separator: str
) -> None:
    one, two = two_folders
    process = executors({"JOB_ACTIONS_PATH": f"{one}{separator}{two}"})
    process.wait_for_log("running up to")
    assert "not a directory" not in process.log()
    for name in ("from_one", "from_two"):
        job = wait_state(admin_api, add(admin_api, name))
        assert (job["state"], job["status-message"]) == ("SUCCESS", f"{name} ran")


def test_distributor_loads_every_folder_of_the_variable(
    zookeeper: ZooKeeperServer,
    job_api: JobApiProcess,
    admin_api: Api,
    zk: KazooClient,
    two_folders: tuple[Path, Path],
) -> None:
    one, two = two_folders
    args = [
        "--zk-hosts",
        zookeeper.hosts,
        "--api-url",
        job_api.endpoint,
        "--api-credentials-file",
        str(job_api.credentials_path),
        # An unknown name would be a usage error: both must have been loaded.
        "--distribution-include",
        "from_one",
        "--distribution-include",
        "from_two",
    ]
    process = EngineProcess(
        "nuvla_job.cli.distributor", args, {"JOB_ACTIONS_PATH": f"{one} {two}"}
    ).start()
    try:
        for name in ("from_one", "from_two"):
            wait_for(
                lambda name=name: admin_api.search("job", filter=f"tags='{name}'", last=0).data[
                    "count"
                ],
                f"a job of the distribution {name}",
                timeout=30,
            )
    finally:
        process.stop()
    assert "not a directory" not in process.log()


@pytest.mark.parametrize(
    "env, extra",
    [
        ({}, ["--no-builtin-actions"]),
        ({"JOB_BUILTIN_ACTIONS": "false"}, []),
        ({"JOB_BUILTIN_ACTIONS": "0"}, ["--job-id", "job/00000000-0000-0000-0000-000000000000"]),
    ],
    ids=["flag", "variable", "pull-mode"],
)
def test_executor_with_no_action_refuses_to_start(
    job_api: JobApiProcess, tmp_path: Path, env: dict[str, str], extra: list[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    process = executor_process(
        # Nothing listens there: the refusal comes before any connection.
        "127.0.0.1:1",
        "http://127.0.0.1:1",
        str(job_api.credentials_path),
        *extra,
        env=env,
        actions_path=empty,
    ).start()
    try:
        assert process.wait(timeout=60) == 2
    finally:
        process.stop()
    lines = [line for line in process.log().splitlines() if line.startswith("Error:")]
    assert lines == [
        f"Error: no action is loaded (built-in actions off, actions paths: {empty}); "
        "every job would fail, so the executor does not start"
    ]
    assert "Traceback" not in process.log()


def test_executor_without_builtins_runs_its_own_actions(
    admin_api: Api, executors, two_folders: tuple[Path, Path]
) -> None:
    one, _ = two_folders
    process = executors({"JOB_ACTIONS_PATH": str(one)}, "--no-builtin-actions")
    process.wait_for_log("running up to")
    assert "1 action(s) loaded: from_one" in process.log()
    job = wait_state(admin_api, add(admin_api, "from_one"))
    assert job["state"] == "SUCCESS"
    sleep = wait_state(admin_api, add(admin_api, "sleep", payload='{"seconds": 0}'))
    assert sleep["state"] == "FAILED"
    assert "no action 'sleep'" in sleep["status-message"]

"""The image built with `--target nuvla` starts as Nuvla starts its job image (issue 12).

NuvlaEdge agents and Nuvla's launchers run Nuvla's image, whose entrypoint is `my_init`, as
`-- /app/job_executor.py --api-url ... --api-key ... --api-secret ... --nuvlaedge-fs ...
--job-id ...` (and `-- /app/job_distributor.py ...`), with `JOB_*` variables. Here each such
command line runs as the container would: the stage's ENTRYPOINT (tini left out: it only
forwards signals) with that command, the stage's environment, and only the container-specific
parts rewritten: /app/ is a copy of the files the stage copies there (their interpreter line
pointed at this interpreter), hosts and ports are the test's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.distributor import election_path
from nuvla_job.localstack.processes import REPO, stop_process
from tests.integration.test_container_config import DOCKERFILE, RUNTIME_VARIABLES, read_dockerfile
from tests.integration.test_executor import add, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.waiting import wait_for
from tests.support.zookeeper import ZooKeeperServer

IMAGE_PYTHON = "#!/opt/venv/bin/python"


@pytest.fixture(scope="module")
def image() -> object:
    return read_dockerfile(target="nuvla")


def image_arg(name: str) -> str:
    """The default of a build argument of the Dockerfile."""
    [value] = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    return value


@pytest.fixture
def container(image, tmp_path: Path, zookeeper: ZooKeeperServer, job_api: JobApiProcess):
    """Runs a command line in the nuvla stage's "container"; its processes stopped after."""
    app = tmp_path / "app"
    [(source, destination)] = [c for c in image.copies if c[1] == "/app/"]
    shutil.copytree(REPO / source, app)
    for script in app.iterdir():
        text = script.read_text()
        if text.startswith(IMAGE_PYTHON):
            script.write_text(f"#!{sys.executable}" + text[len(IMAGE_PYTHON) :])
    actions = tmp_path / "actions"  # the image's empty folder for users' modules
    actions.mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def env(**extra: str) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JOB_", "ZK_", "SENTRY_", "IMAGE_NAME"))
        }
        values = {k: v for k, v in image.env.items() if k not in RUNTIME_VARIABLES}
        values["IMAGE_NAME"] = values["IMAGE_NAME"].replace(
            "${IMAGE_NAME}", image_arg("IMAGE_NAME")
        )
        values["JOB_ACTIONS_PATH"] = str(actions)
        return {**base, **values, "PYTHONPATH": str(REPO), **extra}

    def argv(command: list[str]) -> list[str]:
        entrypoint = [a for a in image.entrypoint if not a.endswith("/tini") and a != "--"]
        mapped = [str(app / a[len("/app/") :]) if a.startswith("/app/") else a for a in command]
        return [str(app / entrypoint[0][len("/app/") :]), *mapped]

    def run(command: list[str], wait: bool = True, **extra: str):
        log = open(tmp_path / f"process-{len(started)}.log", "w+b")  # noqa: SIM115
        process = subprocess.Popen(
            argv(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env(**extra),
        )
        process.log = lambda: (tmp_path / log.name).read_text("utf-8", "replace")  # type: ignore[attr-defined]
        started.append(process)
        if wait:
            process.wait(120)
        return process

    yield run
    for process in started:
        stop_process(process, 20)


@pytest.fixture
def credentials(job_api: JobApiProcess) -> dict[str, str]:
    return job_api.credentials()


def api_args(job_api: JobApiProcess, credentials: dict[str, str]) -> list[str]:
    # Nuvla passes its key and secret on the command line.
    return [
        "--api-url",
        job_api.endpoint,
        "--api-key",
        credentials["key"],
        "--api-secret",
        credentials["secret"],
    ]


def test_the_stage_is_configured_as_nuvlas_image(image) -> None:
    assert image.entrypoint[0].endswith("/tini") and image.entrypoint[1:] == ["--", "/app/my_init"]
    assert image.cmd == ["--", "/app/job_executor.py"]
    assert image.env["JOB_NUVLA_PACKAGE"] == "true"
    assert {c[1] for c in image.copies} >= {"/app/", "/usr/local/bin/my_init"}
    for script in ("my_init", "job_executor.py", "job_distributor.py"):
        assert os.access(REPO / "image" / "app" / script, os.X_OK), script
    user = image.user.split(":")[0]
    assert user and user not in ("root", "0")


def test_nuvlaedge_pull_mode_command_line_runs_its_job(
    container, job_api: JobApiProcess, admin_api: Api, credentials, tmp_path: Path
) -> None:
    job_id = add(admin_api, "dummy_test_action", **{"execution-mode": "pull"})
    shared = tmp_path / "nuvlaedge-shared"
    shared.mkdir()
    command = [
        "--",
        "/app/job_executor.py",
        *api_args(job_api, credentials),
        "--nuvlaedge-fs",
        str(shared),
        "--job-id",
        job_id,
    ]
    # NuvlaEdge runs the lite image.
    process = container(command, IMAGE_NAME="job-lite", JOB_LOG_LEVEL="DEBUG")
    assert process.returncode == 0, process.log()
    assert admin_api.get(job_id).data["state"] == "SUCCESS"
    assert "action(s) of nuvla-job-engine 5.1.4 added" in process.log()
    [loaded] = [line for line in process.log().splitlines() if "action(s) loaded:" in line]
    assert "deployment_state_10" in loaded and "cleanup_jobs" not in loaded  # the lite subset
    assert credentials["secret"] not in process.log()


def test_nuvla_server_command_lines_run_the_executor_and_the_distributor(
    container,
    job_api: JobApiProcess,
    admin_api: Api,
    credentials,
    zk: KazooClient,
    zookeeper: ZooKeeperServer,
) -> None:
    name = f"nuvla-{uuid.uuid4().hex[:8]}"
    # Upstream's form: several hosts after one flag.
    common = [*api_args(job_api, credentials), "--zk-hosts", *zookeeper.hosts.split(",")]
    distributor = container(
        [
            "--",
            "/app/job_distributor.py",
            *common,
            "--name",
            name,
            "--distribution-exclude",
            "deployment_state_new",
            "deployment_state_old",
            "--distribution-interval",
            "monitor_bulk_job:5",
        ],
        wait=False,
    )

    def contends(distribution: str) -> bool:
        path = election_path(distribution)
        return zk.exists(path) is not None and name in zk.Election(path).contenders()

    wait_for(lambda: contends("monitor_bulk_job"), "the distributor in upstream's election", 60)
    assert contends("register_usage_record_updated_deployment")
    assert not contends("deployment_state_new")
    executor = container(["--", "/app/job_executor.py", *common], wait=False)
    wait_for(lambda: "running up to" in executor.log(), "the executor", 60)
    job = wait_state(admin_api, add(admin_api, "dummy_test_action"))
    assert job["state"] == "SUCCESS", job.get("status-message")
    for process in (executor, distributor):
        assert stop_process(process, 30) == 0, process.log()


def test_the_default_command_is_configured_by_the_environment(
    container, image, job_api: JobApiProcess, admin_api: Api, credentials, zookeeper
) -> None:
    executor = container(
        image.cmd,
        wait=False,
        JOB_API_URL=job_api.endpoint,
        JOB_API_KEY=credentials["key"],
        JOB_API_SECRET=credentials["secret"],
        ZK_HOSTS=zookeeper.hosts,
    )
    wait_for(lambda: "running up to" in executor.log(), "the executor", 60)
    assert wait_state(admin_api, add(admin_api, "dummy_test_action"))["state"] == "SUCCESS"
    assert stop_process(executor, 30) == 0


def test_my_init_refuses_what_it_cannot_run(container) -> None:
    for command, message in (
        ([], "no command: give it after --"),
        (
            [
                "--",
            ],
            "no command: give it after --",
        ),
        (["--bogus", "--", "true"], "unknown option --bogus"),
    ):
        process = container(command)
        assert process.returncode == 2 and message in process.log(), (command, process.log())
    assert container(["--skip-startup-files", "--quiet", "--", "true"]).returncode == 0

"""The installed form, as a user gets it: `pip install` (not editable) into a fresh virtualenv
outside the checkout, then only that install's console scripts, against the tests' ZooKeeper.

The project is built from a copy of what the Dockerfile's build stage copies (pyproject.toml,
README.md, nuvla_job/), once for the module; pip's cache is reused, so only the first run
on a machine downloads anything (from PyPI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nuvla_job.localstack.processes import REPO, EngineProcess
from tests.integration.test_container_config import (
    container_env,
    read_dockerfile,
)
from tests.support.jobapi import JobApiProcess
from tests.support.zookeeper import ZooKeeperServer

INSTALL_TIMEOUT = 600
BUILTIN_NAMES = (
    "bulk_jobs",
    "cancel_children_jobs",
    "cleanup_jobs",
    "dummy_test_action",
    "http_request",
    "monitor_bulk_job",
    "monitor_bulk_jobs",
    "restore_queue",
    "sleep",
)
USER_ACTION = """\
from nuvla_job.registry import action


@action("{name}")
class UserAction:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        self.job.set_status_message("{name} ran")
        return 0
"""


@dataclass(frozen=True)
class Installed:
    root: Path  # outside the checkout: the virtualenv and the processes' folders
    bin: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a user's shell: nothing points at the checkout."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, **extra}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    root = Path(tempfile.mkdtemp(prefix="nuvla-job-installed-"))
    try:
        source = root / "src"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, source / name)
        shutil.copytree(
            REPO / "nuvla_job", source / "nuvla_job", ignore=shutil.ignore_patterns("__pycache__")
        )
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, cwd=root)
        install = Installed(root, venv / "bin")
        # "./src": a bare "src" would be looked up on the package index.
        result = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "./src"],
            capture_output=True,
            text=True,
            cwd=root,
            env=install.env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
            stdin=subprocess.DEVNULL,
            timeout=INSTALL_TIMEOUT,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        shutil.rmtree(source)  # nothing of the sources is left to import from
        yield install
    finally:
        shutil.rmtree(root, ignore_errors=True)


def readme_actions_path() -> str:
    """The JOB_ACTIONS_PATH of the README's Docker recipe."""
    docker = (REPO / "README.md").read_text().split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    [value] = re.findall(r'JOB_ACTIONS_PATH="([^"]+)"', docker)
    return value


def test_the_install_is_a_copy_outside_the_checkout(installed: Installed) -> None:
    result = installed.run(
        "python",
        "-c",
        "import json, importlib.metadata as m, nuvla_job, nuvla_job.actions as a; "
        "print(json.dumps([nuvla_job.__file__, a.__file__, "
        "m.distribution('nuvla-job').read_text('direct_url.json')]))",
    )
    assert result.returncode == 0, result.stderr
    package, actions, direct_url = json.loads(result.stdout)
    site = installed.root / "venv" / "lib"
    assert Path(package).is_relative_to(site) and Path(actions).is_relative_to(site)
    assert not Path(package).is_relative_to(REPO)
    assert not json.loads(direct_url or "{}").get("dir_info", {}).get("editable")


def test_every_console_script_is_installed_and_answers(installed: Installed) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"job-api", "job-executor", "job-distributor", "job", "nuvla-job-demo"} <= set(scripts)
    for script in scripts:
        result = installed.run(script, "--help")
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert "Usage:" in result.stdout, script


def test_the_postgresql_store_without_its_extra_is_a_one_line_error(installed: Installed) -> None:
    # A plain `pip install .` has no psycopg: the store says which extra to install.
    for args in (["serve"], ["add-key", "--identity", "user/x"]):
        result = installed.run("job-api", *args, "--db", "postgresql://u@127.0.0.1:9/jobs")
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "pip install 'nuvla-job[postgresql]'" in result.stderr


def test_builtin_and_own_actions_run_through_the_installed_scripts(
    installed: Installed, zookeeper: ZooKeeperServer, zk: KazooClient
) -> None:
    """`job-api serve`, `job-executor` with the image's environment and the README's two
    action folders, and `job submit` / `job watch`: all from the install."""
    stack = installed.root / "stack"
    stack.mkdir()
    server = JobApiProcess(
        zookeeper.hosts, program=[str(installed.bin / "job-api")], env=installed.env()
    )
    executor: EngineProcess | None = None
    try:
        server.start()
        # The image's environment with the README's JOB_ACTIONS_PATH, its folders and hosts
        # rewritten to local ones as for the compose services.
        env = container_env(
            read_dockerfile(),
            {"environment": {"JOB_ACTIONS_PATH": readme_actions_path(), "JOB_API_URL": ""}},
            stack,
            zookeeper.hosts,
            server.port,
        )
        del env["PYTHONPATH"]  # the installed script imports its own install only
        env["JOB_API_CREDENTIALS"] = str(server.credentials_path)
        folders = env["JOB_ACTIONS_PATH"].split(" ")
        assert len(folders) == 2, folders
        own = [f"own_action_{index}" for index in range(len(folders))]
        for folder, name in zip(folders, own, strict=True):
            (Path(folder) / f"{name}.py").write_text(USER_ACTION.format(name=name))
        executor = EngineProcess(
            "job-executor",
            ["--name", "installed"],
            env,
            program=[str(installed.bin / "job-executor")],
        ).start()
        executor.wait_for_log("running up to")
        loaded = re.search(r"(\d+) action\(s\) loaded: (.*)", executor.log())
        assert loaded is not None, executor.log()
        assert set(BUILTIN_NAMES) | set(own) <= set(loaded.group(2).split(", "))
        assert "not a directory" not in executor.log()

        common = [
            "--api-url",
            server.endpoint,
            "--api-credentials-file",
            str(server.credentials_path),
        ]
        for name, payload, message in [
            ("sleep", '{"seconds": 0}', None),
            (own[0], None, f"{own[0]} ran"),
            (own[1], None, f"{own[1]} ran"),
        ]:
            submit = installed.run(
                "job",
                *common,
                "submit",
                *(["--payload", payload] if payload else []),
                "--json",
                name,
            )
            assert submit.returncode == 0, submit.stderr
            job_id = json.loads(submit.stdout)["id"]
            watch = installed.run("job", *common, "watch", job_id, "--interval", "0.1")
            assert watch.returncode == 0, watch.stdout + watch.stderr  # SUCCESS
            shown = installed.run("job", *common, "show", job_id, "--json")
            job = json.loads(shown.stdout)
            assert job["state"] == "SUCCESS"
            if message is not None:
                assert job["status-message"] == message
    finally:
        if executor is not None:
            assert executor.stop() == 0, executor.log()[-3000:]
        server.close()


def test_quick_start_runs_from_the_install(installed: Installed) -> None:
    # ZooKeeper, the job API and an executor of its own, with the built-in `sleep` action.
    result = installed.run(
        "nuvla-job-demo", "--jobs", "5", "--seconds", "0.1", "--failing", "0", timeout=180
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5 demo jobs through the engine" in result.stdout
    summary = result.stdout.split("5 demo jobs through the engine", 1)[1]
    assert "SUCCESS" in summary and "FAILED" not in summary

"""The Docker image and the compose stack, checked without Docker.

The Dockerfile's ENV/CMD/ENTRYPOINT and every nuvla-job service of docker-compose.yml are read
as the container runtime would, then each service's command runs as a real process with the
image's and the service's environment; only the container-specific parts are rewritten:
hosts and ports to the test's ZooKeeper and to free loopback ports, and the image's folders to
temporary ones (the shared credentials volume becomes a shared folder).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.cli.actions_options import Directories
from nuvla_job.distributor import election_path
from nuvla_job.localstack.ports import free_port
from nuvla_job.localstack.processes import REPO, stop_process
from tests.support.haproxy import Balancer, require_haproxy
from tests.support.zookeeper import ZooKeeperServer

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
IMAGE_HOME = "/var/lib/nuvla-job"
IMAGE_ACTIONS = "/opt/nuvla-job/actions"
# Set by the image for Python itself, not for the engine's commands.
RUNTIME_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
# Secrets must come from the environment or a file, never from a command line.
SECRET_FLAGS = (
    "--api-secret",
    "--api-pass",
    "--api-authn-header",
    "--sentry-dsn",
    "--api-key",
    "--password",
)
START_TIMEOUT = 25.0


# -- reading the files ------------------------------------------------------------------------


@dataclass
class Dockerfile:
    env: dict[str, str] = field(default_factory=dict)  # of the final stage
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    copies: list[list[str]] = field(default_factory=list)
    stages: int = 0


def read_dockerfile(path: Path = DOCKERFILE, target: str | None = None) -> Dockerfile:
    """The instructions that configure a stage (continuation lines joined): the last one,
    which `docker build .` builds, or the stage named ``target``; with what it inherits from
    the stage it is built FROM."""
    text = re.sub(r"\\\n", " ", path.read_text())
    named: dict[str, Dockerfile] = {}
    result = Dockerfile()
    stages = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages += 1
            words = rest.split()
            base = named.get(words[0])
            result = copy.deepcopy(base) if base is not None else Dockerfile()
            if len(words) == 3 and words[1].upper() == "AS":
                named[words[2]] = result
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                result.env[key] = value
        elif instruction in ("ENTRYPOINT", "CMD"):
            setattr(result, instruction.lower(), json.loads(rest))  # exec form only
        elif instruction == "USER":
            result.user = rest.strip()
        elif instruction == "COPY" and "--from=" not in rest:
            result.copies.append(rest.split())
    if target is not None:
        result = named[target]
    result.stages = stages
    return result


_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, applied to every string of
    the document."""

    def one(match: re.Match[str]) -> str:
        name, kind, text = match.groups()
        if variables.get(name):
            return variables[name]
        if kind == "?":
            raise ValueError(f"compose would stop: {name}: {text}")
        return text if kind == "-" else ""

    if isinstance(value, str):
        return _VARIABLE.sub(one, value)
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    return value


# What an operator puts in .env before `docker compose up` (the file's header says so).
OPERATOR_ENV = {"POSTGRES_PASSWORD": "a-password-from-dot-env"}


def read_compose(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), {**OPERATOR_ENV, **(variables or {})})


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image (built from the Dockerfile)."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.fixture(scope="module")
def cli_variables() -> dict[str, set[str]]:
    """Environment variables each command reads through its options, by console script.

    Asked of a child process: importing the commands monkey-patches the interpreter.
    """
    program = """
import json, click
from nuvla_job.cli import api, distributor, executor, operator
def names(command):
    found = {p.envvar for p in command.params if p.envvar}
    for sub in getattr(command, "commands", {}).values():
        found |= names(sub)
    return found
commands = {"job-api": api.main, "job-executor": executor.main,
            "job-distributor": distributor.main, "job": operator.cli}
print(json.dumps({name: sorted(names(command)) for name, command in commands.items()}))
"""
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return {name: set(found) for name, found in json.loads(result.stdout).items()}


# -- static checks ------------------------------------------------------------------------------


def test_image_runs_the_executor_under_tini_as_a_non_root_user() -> None:
    image = read_dockerfile()
    assert image.stages >= 2, "multi-stage build"
    assert image.entrypoint[0].endswith("/tini") and image.entrypoint[1:] == ["--"]
    assert image.cmd == ["job-executor"]
    assert image.cmd[0] in console_scripts()
    user = image.user.split(":")[0]
    assert user and user not in ("root", "0")
    # The built-in actions come with the installed package: nothing of actions/ is copied,
    # and JOB_ACTIONS_PATH names the (empty) folder for users' own modules.
    assert not any(copy[0].startswith("actions") for copy in image.copies)
    assert image.env["JOB_ACTIONS_PATH"] == IMAGE_ACTIONS


def test_every_variable_the_image_sets_is_read_by_a_command(
    cli_variables: dict[str, set[str]],
) -> None:
    read = set().union(*cli_variables.values())
    unknown = set(read_dockerfile().env) - RUNTIME_VARIABLES - read
    assert not unknown, f"the Dockerfile sets variables no command reads: {unknown}"


def test_every_service_variable_is_read_by_its_command(cli_variables: dict[str, set[str]]) -> None:
    services = our_services(read_compose())
    for name, service in services.items():
        command = service["command"]
        assert command[0] in cli_variables, f"{name}: unknown command {command}"
        unknown = set(environment(service)) - cli_variables[command[0]]
        assert not unknown, f"{name} sets variables {command[0]} does not read: {unknown}"
        assert not any(arg.startswith(SECRET_FLAGS) for arg in command), (
            f"{name}: a secret on the command line"
        )


def test_compose_needs_the_database_password_from_the_operator() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        interpolate(yaml.safe_load(COMPOSE.read_text()), {})


def job_api_names(services: Mapping[str, dict[str, Any]]) -> list[str]:
    return sorted(n for n, s in services.items() if s["command"][0] == "job-api")


def haproxy_servers(config: str) -> dict[str, str]:
    """The balancer's backend servers: name -> host:port."""
    return dict(re.findall(r"^\s*server\s+(\S+)\s+(\S+)\s+check\b", config, re.MULTILINE))


def test_compose_stack_shape() -> None:
    compose = read_compose()
    services = compose["services"]
    zookeepers = {n: s for n, s in services.items() if s.get("image", "").startswith("zookeeper:")}
    assert len(zookeepers) == 3
    ids = {environment(s)["ZOO_MY_ID"] for s in zookeepers.values()}
    assert ids == {"1", "2", "3"}
    for service in zookeepers.values():
        servers = environment(service)["ZOO_SERVERS"].split()
        assert sorted(servers) == sorted(
            f"server.{i}={n}:2888:3888;2181" for i, n in zip("123", sorted(zookeepers), strict=True)
        )
    ours = our_services(compose)
    roles = sorted(s["command"][0] for s in ours.values())
    assert roles == [
        "job-api",
        "job-api",
        "job-distributor",
        "job-distributor",
        "job-executor",
        "job-executor",
    ]
    ensemble = ",".join(f"{n}:2181" for n in sorted(zookeepers))
    apis = job_api_names(ours)
    # No single job API process: the replicas share one PostgreSQL, behind the balancer.
    (database,) = [n for n, s in services.items() if s.get("image", "").startswith("postgres:")]
    pg_env = environment(services[database])
    urls = {environment(ours[n])["JOB_API_DB"] for n in apis}
    assert urls == {
        f"postgresql://{pg_env['POSTGRES_USER']}:{OPERATOR_ENV['POSTGRES_PASSWORD']}"
        f"@{database}:5432/{pg_env['POSTGRES_DB']}"
    }
    (balancer,) = [n for n, s in services.items() if s.get("image", "").startswith("haproxy:")]
    lb = services[balancer]
    config_file, target = lb["volumes"][0].split(":")[:2]
    assert target == "/usr/local/etc/haproxy/haproxy.cfg"
    config = (REPO / config_file).read_text()
    port = environment(ours[apis[0]])["JOB_API_PORT"]
    assert haproxy_servers(config) == {n: f"{n}:{port}" for n in apis}
    assert "option httpchk GET /api/health" in config and "option forwardfor" in config
    assert lb["depends_on"][apis[0]]["condition"] == "service_healthy"
    assert "healthcheck" in lb and "healthcheck" in services[database]
    api_env = environment(ours[apis[0]])
    for name, service in ours.items():
        env = environment(service)
        assert env["ZK_HOSTS"] == ensemble, name
        assert "healthcheck" in service or name not in apis
        if name in apis:
            assert env["JOB_API_TRUSTED_PROXIES"] == balancer
            assert service["depends_on"][database]["condition"] == "service_healthy"
            continue
        # The engines talk to the balancer, and read the key the first replica writes,
        # from the volume they share.
        assert env["JOB_API_URL"] == f"http://{balancer}:{port}"
        assert env["JOB_API_CREDENTIALS"] == api_env["JOB_API_ADMIN_CREDENTIALS"]
        shared = Path(env["JOB_API_CREDENTIALS"]).parent
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        for api in apis:
            api_mounts = {v.split(":")[1]: v.split(":")[0] for v in ours[api]["volumes"]}
            assert mounts[str(shared)] == api_mounts[str(shared)]
        assert service["depends_on"][balancer]["condition"] == "service_healthy"
    # The second replica starts once the first has made the tables and the admin key.
    assert ours[apis[1]]["depends_on"][apis[0]]["condition"] == "service_healthy"
    # Names that compose resolves against the file's other sections.
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


# -- the stack as processes ---------------------------------------------------------------------


class ServiceProcess:
    """A compose service's command run as its console script would, with its environment."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        target = console_scripts()[command[0]]
        module, function = target.split(":")
        self.argv = [
            sys.executable,
            "-c",
            f"import sys; from {module} import {function} as main; "
            f"sys.argv[0] = {command[0]!r}; sys.exit(main())",
            *command[1:],
        ]
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )

    def stop(self) -> int | None:
        return None if self.process is None else stop_process(self.process, 15.0)


def wait_for(
    condition, what: str, processes: list[ServiceProcess], timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            process.check_alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log()[-1500:]}" for p in processes)
            raise AssertionError(f"{what} not within {timeout} s\n{logs}")
        time.sleep(0.05)


def container_folders(value: str, root: Path) -> str:
    """A JOB_ACTIONS_PATH of the container with each folder moved under ``root`` (and made, as
    the image makes its own)."""
    folders = []
    for folder in Directories().split_envvar_value(value):
        local = root / folder.lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        folders.append(str(local))
    return " ".join(folders)


def container_env(
    image: Dockerfile,
    service: dict[str, Any],
    root: Path,
    zk_hosts: str,
    port: int,
    db_url: str = "",
) -> dict[str, str]:
    """The image's and the service's environment, with the container-only parts rewritten:
    a job API replica serves on ``port`` over ``db_url``; an engine calls the balancer on
    ``port``."""
    # Nothing from the test's own environment may configure the engine: only the files do.
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOB_", "ZK_", "SENTRY_", "IMAGE_NAME"))
    }
    env = {
        **base,
        **{k: v for k, v in image.env.items() if k != "PATH"},
        **environment(service),
        "PYTHONPATH": str(REPO),
    }
    for key, value in env.items():
        if value.startswith(IMAGE_HOME):
            env[key] = str(root / value[len(IMAGE_HOME) + 1 :])
    if "JOB_ACTIONS_PATH" in env:
        env["JOB_ACTIONS_PATH"] = container_folders(env["JOB_ACTIONS_PATH"], root)
    env["ZK_HOSTS"] = zk_hosts
    if "JOB_API_URL" in env:
        env["JOB_API_URL"] = f"http://127.0.0.1:{port}"
    if (service.get("command") or [""])[0] == "job-api":
        env["JOB_API_HOST"] = "127.0.0.1"
        env["JOB_API_PORT"] = str(port)
        env["JOB_API_DB"] = db_url
        env["JOB_API_TRUSTED_PROXIES"] = "127.0.0.1"  # the balancer, here
    if "JOB_METRICS_PORT" in env:
        # Each container has its own 9100; here the services share one host.
        env["JOB_METRICS_HOST"] = "127.0.0.1"
        env["JOB_METRICS_PORT"] = str(free_port())
    return env


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="compose-stack-") as name:
        root = Path(name)
        for folder in ("data", "credentials"):
            (root / folder).mkdir(mode=0o750)
        yield root


def test_compose_services_start_as_processes(
    zookeeper: ZooKeeperServer, zk: KazooClient, stack_dir: Path, postgres_db: str
) -> None:
    require_haproxy()
    image = read_dockerfile()
    compose = read_compose({"JOB_LOG_FORMAT": "json"})
    services = our_services(compose)
    apis = job_api_names(services)
    ports = {name: free_port() for name in apis}
    (lb,) = [s for s in compose["services"].values() if s.get("image", "").startswith("haproxy:")]
    balancer = Balancer(ports, stack_dir, REPO / lb["volumes"][0].split(":")[0])
    processes = {
        name: ServiceProcess(
            name,
            s["command"],
            container_env(
                image, s, stack_dir, zookeeper.hosts, ports.get(name, balancer.port), postgres_db
            ),
            stack_dir,
        )
        for name, s in services.items()
    }
    replicas = [processes.pop(name) for name in apis]
    executors = [p for n, p in processes.items() if services[n]["command"][0] == "job-executor"]
    distributors = [
        p for n, p in processes.items() if services[n]["command"][0] == "job-distributor"
    ]
    exit_codes: dict[str, int | None] = {}

    def healthy(port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2).ok
        except requests.ConnectionError:
            return False

    try:
        # depends_on: the first replica makes the tables and the admin key, the second
        # starts once it is healthy, the balancer then, the engines once it is healthy.
        replicas[0].start()
        wait_for(lambda: healthy(ports[apis[0]]), "the first replica's health", replicas[:1])
        replicas[1].start()
        wait_for(lambda: healthy(ports[apis[1]]), "the second replica's health", replicas)
        balancer.start()
        wait_for(lambda: healthy(balancer.port), "health through the balancer", replicas)
        for process in processes.values():
            process.start()
        wait_for(
            lambda: all("running up to" in p.log() for p in executors),
            "executors running",
            executors,
        )
        names = {environment(services[p.name])["JOB_NAME"] for p in distributors}

        def both_in_every_election() -> bool:
            if not zk.exists("/election"):
                return False
            elections = zk.get_children("/election")
            return bool(elections) and all(
                set(zk.Election(election_path(e)).contenders()) == names for e in elections
            )

        wait_for(both_in_every_election, "distributors in every election", distributors)

        # Jobs through the stack: the engines use the key the first replica wrote.
        creds = json.loads((stack_dir / "credentials" / "admin-credentials.json").read_text())
        client = Api(endpoint=f"http://127.0.0.1:{balancer.port}", persist_cookie=False)
        assert client.login_apikey(creds["key"], creds["secret"]).status_code == 201
        everything = [*replicas, *processes.values()]

        def run_a_job() -> None:
            job_id = client.add("job", {"action": "sleep", "payload": '{"seconds": 0}'}).data[
                "resource-id"
            ]
            wait_for(
                lambda: client.get(job_id).data["state"] == "SUCCESS",
                "the job's success",
                everything,
            )

        run_a_job()
        # No single job API process: with the first replica gone (its health check
        # fails), jobs still flow through the other, and the session stays valid.
        exit_codes[apis[0]] = replicas[0].stop()
        everything.remove(replicas[0])
        for _ in range(3):
            run_a_job()
    finally:
        for name, process in processes.items():
            exit_codes[name] = process.stop()
        for name, replica in zip(apis, replicas, strict=True):
            exit_codes.setdefault(name, replica.stop())
        balancer.stop()
    # SIGTERM (what tini forwards) is a clean stop for every command.
    assert exit_codes == dict.fromkeys(exit_codes, 0), exit_codes
    # JOB_LOG_FORMAT=json reached every command: each line is one JSON object.
    for process in [*replicas, *processes.values()]:
        lines = process.log().splitlines()
        assert lines, f"{process.name} logged nothing"
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"{process.name}: not a JSON line: {line!r}") from None
            assert {"time", "level", "logger", "message"} <= record.keys(), line
            assert record["level"] not in ("ERROR", "CRITICAL"), f"{process.name}: {line}"
    logs = "".join(p.log() for p in [*replicas, *processes.values()])
    assert creds["secret"] not in logs
    assert OPERATOR_ENV["POSTGRES_PASSWORD"] not in logs

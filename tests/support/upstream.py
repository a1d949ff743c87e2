"""The package's own executor and distributor (`nuvla-job-engine`, the `nuvla` extra), as
real processes beside this engine's, for the drop-in tests.

They run the package's code unchanged, started as its image's scripts start them (`main` of
its Executor or Distributor), after importing the test modules of tests/actions_nuvla/.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from nuvla_job.localstack.processes import REPO, EngineProcess, executor_process

NUVLA_TEST_ACTIONS = REPO / "tests" / "actions_nuvla"
TEST_MODULES = ("counted", "short_waits")
_PROGRAM = (
    "import sys; sys.path.insert(0, {actions!r}); import {modules}; "
    "from nuvla.job_engine.job.base import main; "
    "from nuvla.job_engine.job.{package}.{package} import {cls}; main({cls})"
)


def _upstream(
    package: str,
    cls: str,
    args: list[str],
    actions: Path = NUVLA_TEST_ACTIONS,
    modules: Sequence[str] = TEST_MODULES,
) -> EngineProcess:
    program = _PROGRAM.format(
        actions=str(actions), modules=", ".join(modules), package=package, cls=cls
    )
    return EngineProcess(
        f"upstream-{package}",
        args,
        program=[sys.executable, "-c", program],
        env={"PYTHONPATH": str(REPO)},
    )


def api_args(api_url: str, credentials: dict[str, str]) -> list[str]:
    return [
        "--api-url",
        api_url,
        "--api-key",
        credentials["key"],
        "--api-secret",
        credentials["secret"],
    ]


def upstream_executor(
    zk_hosts: str,
    api_url: str,
    credentials: dict[str, str],
    actions: Path = NUVLA_TEST_ACTIONS,
    modules: Sequence[str] = TEST_MODULES,
) -> EngineProcess:
    """The package's executor, after importing `modules` (action modules) from `actions`."""
    args = [*api_args(api_url, credentials), "--zk-hosts", zk_hosts]
    return _upstream("executor", "Executor", args, actions, modules)


def upstream_distributor(
    zk_hosts: str, api_url: str, credentials: dict[str, str], name: str, *extra: str
) -> EngineProcess:
    args = [*api_args(api_url, credentials), "--zk-hosts", zk_hosts, "--name", name, *extra]
    return _upstream("distributor", "Distributor", args)


def our_executor(zk_hosts: str, api_url: str, credentials_path: Path, *extra: str) -> EngineProcess:
    """This engine's executor with the package on and the test modules above."""
    return executor_process(
        zk_hosts,
        api_url,
        str(credentials_path),
        "--nuvla-package",
        *extra,
        actions_path=NUVLA_TEST_ACTIONS,
    )


def our_distributor(
    zk_hosts: str, api_url: str, credentials_path: Path, name: str, *extra: str
) -> EngineProcess:
    """This engine's distributor with the package on."""
    args = [
        "--zk-hosts",
        zk_hosts,
        "--api-url",
        api_url,
        "--api-credentials-file",
        str(credentials_path),
        "--name",
        name,
        "--nuvla-package",
        *extra,
    ]
    return EngineProcess("nuvla_job.cli.distributor", args)

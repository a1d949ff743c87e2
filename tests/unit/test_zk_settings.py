"""ZooKeeper settings are passed, never process-wide (nuvla_job/zk.py, cli/options.py).

An engine's command line resolves `--zk-hosts`, `--zk-timeout` and the security options into
one `ZkSettings` (`CommonConfig.zookeeper`), which the executor hands to each Job so that an
action connects as its executor does; a client made without them is a plain one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from click.testing import CliRunner

from nuvla_job.cli.options import CommonConfig, common_options, expand_multi_values
from nuvla_job.job import Job
from nuvla_job.zk import ZkSettings, make_client
from nuvla_job.zk_security import ZkSecurity

seen: list[CommonConfig] = []


@click.command()
@common_options
@click.option("--concurrency")
def command(common: CommonConfig, concurrency: str | None) -> None:
    seen.append(common)


def settings(argv: Sequence[str], env: dict[str, str | None]) -> ZkSettings:
    """The settings an executor started with `argv` and `env` would hand its jobs."""
    seen.clear()
    env = {"ZK_HOSTS": None, "ZK_AUTH": None, "ZK_TIMEOUT": None, **env}
    # As the engines' console scripts do (importing them here would monkey-patch gevent).
    args = expand_multi_values(argv, ("--zk-hosts",))
    result = CliRunner().invoke(command, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen[0].zookeeper


def test_hosts_resolve_as_the_executor_resolves_them() -> None:
    assert settings(["--zk-hosts", "a:1", "b:2", "--concurrency", "5"], {}).hosts == "a:1,b:2"
    assert settings(["--zk-hosts=a:1,b:2"], {"ZK_HOSTS": "c:3"}).hosts == "a:1,b:2"
    assert settings(["--concurrency", "5"], {"ZK_HOSTS": "c:3 d:4"}).hosts == "c:3,d:4"
    assert settings([], {}).hosts == "127.0.0.1:2181"


def test_timeout_and_security_come_along() -> None:
    zookeeper = settings(["--zk-timeout", "7", "--zk-auth", "engine:s3cret"], {})
    assert zookeeper.timeout == 7.0
    assert zookeeper.security.auth == "engine:s3cret"
    assert "s3cret" not in repr(zookeeper)
    client = zookeeper.make_client(use_gevent=False)
    assert set(client.auth_data) == {("digest", "engine:s3cret")}
    assert client.default_acl == zookeeper.security.acl
    assert client._session_timeout == 7000


def test_a_client_made_without_settings_is_plain_whatever_a_command_was_given() -> None:
    settings(["--zk-auth", "engine:s3cret", "--zk-tls"], {})
    plain = make_client("127.0.0.1:2181", use_gevent=False)
    assert not plain.auth_data and plain.default_acl is None and not plain.use_ssl


def test_jobs_carry_the_settings_they_are_given() -> None:
    zookeeper = ZkSettings("h:1", 3.0, ZkSecurity(auth="u:p"))
    api: Any = object()
    assert Job(api, {"id": "job/1"}, zookeeper=zookeeper).zookeeper is zookeeper
    assert Job(api, {"id": "job/1"}).zookeeper is None


def test_multi_values_end_at_a_subcommand() -> None:
    argv = ["--zk-hosts", "a:1", "b:2", "submit", "sleep", "--zk-hosts", "c:3"]
    assert expand_multi_values(argv, ("--zk-hosts",), {"submit"}) == [
        "--zk-hosts",
        "a:1",
        "--zk-hosts",
        "b:2",
        "submit",
        "sleep",
        "--zk-hosts",
        "c:3",
    ]

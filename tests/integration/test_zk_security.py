"""ZooKeeper security with a real ZooKeeper configured for it: digest auth and ACLs on the
engine's nodes, and TLS; the executor, the distributor and the job API run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from nuvla.api import Api

from nuvla_job import queue
from nuvla_job.localstack.processes import REPO
from nuvla_job.localstack.zookeeper import ZooKeeperTls
from nuvla_job.states import FINAL_STATES
from nuvla_job.zk import make_client
from nuvla_job.zk_security import ENGINE_ROOTS, ZkSecurity
from tests.conftest import wipe
from tests.support.certs import Pki, make_test_pki
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess, executor_process
from tests.support.waiting import wait_for
from tests.support.zookeeper import ZooKeeperServer

PASSWORD = "zk-Pass-7f3a9c"  # noqa: S105 - a test credential, grepped for in the logs
AUTH = f"engine:{PASSWORD}"
SECURITY = ZkSecurity(auth=AUTH)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_zk_server(pki: Pki) -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of this module: plain port plus a TLS port that needs client certificates.

    Not the session's server: a failed test could leave protected nodes that other tests'
    unauthenticated clients could not wipe.
    """
    with ZooKeeperServer(
        tls=ZooKeeperTls(keystore=str(pki.server_keystore), truststore=str(pki.ca))
    ) as server:
        yield server


@pytest.fixture
def clients(secure_zk_server: ZooKeeperServer) -> Iterator[Callable[..., KazooClient]]:
    """Started threading-handler clients on the plain port; the engine's trees are wiped
    (with the test credentials) before and after the test."""
    made: list[KazooClient] = []

    def make(
        security: ZkSecurity | None = None,
        hosts: str | None = None,
        timeout: float = 15.0,
        **kw: Any,
    ) -> KazooClient:
        client = make_client(
            hosts or secure_zk_server.hosts,
            timeout=5.0,
            use_gevent=False,
            security=security or ZkSecurity(),
            **kw,
        )
        made.append(client)
        client.start(timeout=timeout)
        return client

    def clean() -> None:
        admin = make(SECURITY)
        for root in ENGINE_ROOTS:
            wipe(admin, root)

    clean()
    yield make
    try:
        clean()
    finally:
        for client in made:
            client.stop()
            client.close()


@pytest.fixture
def stack() -> Iterator[Callable[..., Any]]:
    """Start job APIs and executors; every one is stopped by pid after the test."""
    apis: list[JobApiProcess] = []
    engines: list[EngineProcess] = []

    def start_api(zk_hosts: str, *args: str, env: dict[str, str] | None = None) -> JobApiProcess:
        api = JobApiProcess(zk_hosts, *args, env=env)
        apis.append(api)
        api.start()
        return api

    def start_executor(
        api: JobApiProcess,
        zk_hosts: str,
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> EngineProcess:
        process = executor_process(
            zk_hosts, api.endpoint, str(api.credentials_path), *args, env=env
        )
        engines.append(process.start())
        if wait:
            process.wait_for_log("running up to")
        return process

    start_api.executor = start_executor  # type: ignore[attr-defined]
    yield start_api
    for process in engines:
        process.stop()
    for api in apis:
        api.close()


# -- helpers ------------------------------------------------------------------------------------


def wait_state(api: Api, job_id: str, timeout: float = 30.0) -> dict:
    def finished() -> dict | None:
        job = api.get(job_id).data
        return job if job["state"] in FINAL_STATES else None

    return wait_for(finished, f"{job_id} to finish", timeout)


def add(api: Api, action: str = "test_ok") -> str:
    return api.add("job", {"action": action}).data["resource-id"]


def all_nodes(client: KazooClient) -> list[str]:
    """Every node under the engine's roots."""
    found: list[str] = []
    level = [root for root in ENGINE_ROOTS if client.exists(root)]
    while level:
        found.extend(level)
        below: list[str] = []
        for node in level:
            try:
                below.extend(f"{node}/{child}" for child in client.get_children(node))
            except NoNodeError:
                pass
        level = below
    return found


def open_nodes(client: KazooClient) -> list[str]:
    """Engine nodes whose ACL is not exactly the engine's digest identity."""
    wanted = {(acl.perms, acl.id.scheme, acl.id.id) for acl in SECURITY.acl or []}
    result = []
    for node in all_nodes(client):
        try:
            acls, _ = client.get_acls(node)
        except NoNodeError:
            continue
        if {(acl.perms, acl.id.scheme, acl.id.id) for acl in acls} != wanted:
            result.append(node)
    return result


def operator(
    zk_hosts: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nuvla_job.cli.operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        # Not `--zk-hosts HOSTS COMMAND`: the command would be taken for a second host.
        env={**clean_env(), "PYTHONPATH": str(REPO), "ZK_HOSTS": zk_hosts, **(env or {})},
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZK_")}


def auth_file(tmp_path: Path, content: str = AUTH) -> str:
    path = tmp_path / "zk-auth"
    path.write_text(content + "\n")
    path.chmod(0o600)
    return str(path)


# -- digest auth and ACLs -----------------------------------------------------------------------


def test_with_auth_other_clients_cannot_read_or_tamper_and_jobs_still_run(
    secure_zk_server: ZooKeeperServer, clients, stack, tmp_path: Path
) -> None:
    hosts = secure_zk_server.hosts
    # The password from the environment for the API, from a file for the executor.
    api = stack(hosts, env={"ZK_AUTH": AUTH})
    admin = api.admin_api()
    waiting = add(admin)  # queued before any executor runs: its entry stays in the queue
    engine = clients(SECURITY)
    entries = wait_for(lambda: engine.get_children(queue.ENTRIES), "the queue entry")

    executor = stack.executor(
        api,
        hosts,
        "--zk-auth-file",
        auth_file(tmp_path),
        "--zk-timeout",
        "3",
        "--distributions",
        "--distribution-include",
        "tick",
    )
    assert wait_state(admin, waiting)["state"] == "SUCCESS"
    later = add(admin)
    assert wait_state(admin, later)["state"] == "SUCCESS"
    # An action's own client (restore_queue's) gets the executor's credentials too.
    restore = admin.add(
        "job", {"action": "restore_queue", "payload": json.dumps({"min-age": 0})}
    ).data["resource-id"]
    assert wait_state(admin, restore)["state"] == "SUCCESS", admin.get(restore).data
    contenders = wait_for(
        lambda: engine.exists("/election/tick") and engine.get_children("/election/tick"),
        "the tick election",
    )

    stranger = clients()
    entry = f"{queue.ENTRIES}/{entries[0]}"
    # A node of the queue that is still there: one the stranger may not list nor delete.
    for parent in (
        queue.ROOT,
        queue.ENTRIES,
        queue.TAKEN,
        "/election",
        "/election/tick",
        "/locks/restore_queue",
    ):
        with pytest.raises(NoAuthError):
            stranger.get_children(parent)
    with pytest.raises(NoAuthError):
        stranger.get(f"/election/tick/{contenders[0]}")
    with pytest.raises(NoAuthError):
        stranger.delete(f"/election/tick/{contenders[0]}")
    with pytest.raises(NoAuthError):
        stranger.create(queue.entry_prefix(50), b"job/forged", sequence=True)
    with pytest.raises(NoAuthError):
        stranger.create("/election/tick/forged", b"x", ephemeral=True)
    # The consumed entry is gone; a new one made by the API is just as closed.
    assert not engine.exists(entry)
    executor.stop()
    assert wait_for(
        lambda: not engine.exists("/election/tick") or not engine.get_children("/election/tick"),
        "the election to empty",
    )
    third = add(admin)
    name = wait_for(lambda: engine.get_children(queue.ENTRIES), "a new entry")[0]
    with pytest.raises(NoAuthError):
        stranger.get(f"{queue.ENTRIES}/{name}")
    with pytest.raises(NoAuthError):
        stranger.delete(f"{queue.ENTRIES}/{name}")
    # Every node the engine made (entries, parents, election nodes) has the digest ACL only.
    assert open_nodes(engine) == []
    assert admin.get(third).data["state"] == "QUEUED"
    # The password is in no log.
    assert PASSWORD not in executor.log()
    assert PASSWORD not in api.log_path.read_text()


def test_existing_open_nodes_are_secured_at_start_and_by_zk_secure(
    secure_zk_server: ZooKeeperServer, clients, stack, tmp_path: Path
) -> None:
    hosts = secure_zk_server.hosts
    before = clients()  # no auth: what an engine without --zk-auth left behind
    old_entry = queue.put(before, "job/00000000-0000-0000-0000-000000000000")
    before.ensure_path(queue.TAKEN)
    before.ensure_path("/election/tick")
    before.ensure_path("/locks/restore_queue")
    engine = clients(SECURITY)
    assert set(open_nodes(engine)) >= {queue.ROOT, queue.ENTRIES, old_entry}

    api = stack(hosts, "--zk-auth-file", auth_file(tmp_path))
    api.wait_queue_connected()
    # The parents (roots and their children) get the ACL when the API connects...
    parents = {
        queue.ROOT,
        queue.ENTRIES,
        queue.TAKEN,
        "/election",
        "/election/tick",
        "/locks",
        "/locks/restore_queue",
    }
    wait_for(lambda: not parents & set(open_nodes(engine)), "the parents to be secured")
    assert open_nodes(engine) == [old_entry]  # ... not every old entry
    with pytest.raises(NoAuthError):
        before.get_children(queue.ENTRIES)

    # `job zk-secure` does the whole tree.
    refused = operator(hosts, "zk-secure")
    assert refused.returncode == 3 and "needs --zk-auth" in refused.stderr
    result = operator(hosts, "zk-secure", "--json", env={"ZK_AUTH": AUTH})
    assert result.returncode == 0, result.stderr
    assert old_entry in result.stdout
    assert open_nodes(engine) == []
    with pytest.raises(NoAuthError):
        before.get(old_entry)
    assert PASSWORD not in result.stdout + result.stderr


def test_wrong_credentials_are_a_clear_error(
    secure_zk_server: ZooKeeperServer, clients, stack, tmp_path: Path
) -> None:
    clients(SECURITY).ensure_path(queue.ENTRIES)  # the tree belongs to engine:PASSWORD
    api = stack(secure_zk_server.hosts, env={"ZK_AUTH": AUTH})
    wrong = "engine:not-the-Password-42"
    executor = stack.executor(api, secure_zk_server.hosts, env={"ZK_AUTH": wrong}, wait=False)
    assert executor.wait(60) == 1
    log = executor.log()
    assert "protected by other credentials" in log
    assert "Traceback" not in log
    assert "not-the-Password-42" not in log
    result = operator(secure_zk_server.hosts, "queue", env={"ZK_AUTH": wrong})
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "NoAuth" in result.stderr and "not-the-Password-42" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zk-auth", "no-colon-Secret9"], "user:password"),
        (["--zk-auth", "user:"], "user:password"),
        (["--zk-auth", "a:b", "--zk-auth-file", str(REPO / "README.md")], "not both"),
        (["--zk-tls-cert", str(REPO / "README.md")], "go together"),
        (["--zk-tls-ca", str(REPO / "README.md")], "not usable PEM"),
        (
            ["--zk-tls-cert", str(REPO / "README.md"), "--zk-tls-key", str(REPO / "README.md")],
            "not a usable PEM",
        ),
    ],
)
def test_bad_security_options_are_usage_errors(args: list[str], message: str) -> None:
    result = operator("127.0.0.1:1", *args, "queue")
    assert result.returncode == 3
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-colon-Secret9" not in result.stderr


# -- TLS ----------------------------------------------------------------------------------------


def test_executor_and_job_api_run_jobs_over_tls(
    secure_zk_server: ZooKeeperServer, pki: Pki, clients, stack
) -> None:
    hosts = secure_zk_server.secure_hosts
    tls_args = (
        "--zk-tls",
        "--zk-tls-ca",
        str(pki.ca),
        "--zk-tls-cert",
        str(pki.client_cert),
        "--zk-tls-key",
        str(pki.client_key),
    )
    api = stack(hosts, *tls_args)
    admin = api.admin_api()
    env = {
        "ZK_TLS": "1",
        "ZK_TLS_CA": str(pki.ca),
        "ZK_TLS_CERT": str(pki.client_cert),
        "ZK_TLS_KEY": str(pki.client_key),
    }
    executor = stack.executor(api, hosts, env=env)
    job_ids = [add(admin) for _ in range(5)]
    assert [wait_state(admin, job_id)["state"] for job_id in job_ids] == ["SUCCESS"] * 5
    # They did use the secure port: ZooKeeper authenticated their client certificate.
    assert "Authenticated Id 'CN=job-engine' for Scheme 'x509'" in secure_zk_server.log_tail(
        100_000
    )
    assert "Traceback" not in executor.log()


def test_tls_port_refuses_plain_untrusted_and_certificateless_clients(
    secure_zk_server: ZooKeeperServer, pki: Pki, clients
) -> None:
    hosts = secure_zk_server.secure_hosts
    good = ZkSecurity(
        tls=True, tls_ca=str(pki.ca), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
    )
    client = clients(good, hosts=hosts)
    assert client.get_children("/") is not None
    # The gevent handler (the engine's) speaks TLS too.
    gevent_client = make_client(hosts, timeout=5.0, use_gevent=True, security=good)
    try:
        gevent_client.start(timeout=15)
        assert gevent_client.exists("/zookeeper") is not None
    finally:
        gevent_client.stop()
        gevent_client.close()

    bad = {
        "plain": ZkSecurity(),
        "server not trusted": ZkSecurity(
            tls=True,
            tls_ca=str(pki.other_ca),
            tls_cert=str(pki.client_cert),
            tls_key=str(pki.client_key),
        ),
        "no client certificate": ZkSecurity(tls=True, tls_ca=str(pki.ca)),
    }
    for what, security in bad.items():
        with pytest.raises(KazooTimeoutError):
            clients(
                security, hosts=hosts, timeout=2.0, connection_retry={"max_tries": 2, "delay": 0.1}
            )
            pytest.fail(f"a {what} client connected to the TLS port")

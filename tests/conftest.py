"""Shared fixtures: one real ZooKeeper per test session, a clean kazoo client per test; one
real PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from nuvla.api import Api

from nuvla_job.zk import make_client
from tests.support.jobapi import JobApiClients, JobApiProcess
from tests.support.needs import require
from tests.support.postgres import PostgresNotAvailable, PostgresServer
from tests.support.processes import EngineProcess, executor_process, serving_on_free_port
from tests.support.replicas import JobApiReplicas
from tests.support.stores import (
    API_DEPLOYMENTS,
    STORE_KINDS,
    ApiStore,
    StoreWith,
    postgres_store_factory,
    sqlite_store_with,
)
from tests.support.zookeeper import ZooKeeperServer

# Trees owned by the engine; wiped before each test that uses `zk`.
CLEAN_PATHS = ("/job", "/election", "/limits")
CLIENT_START_TIMEOUT = 15.0


def wipe(client: KazooClient, path: str) -> None:
    """Delete `path` and everything under it.

    Requests are pipelined level by level: kazoo's recursive delete makes one round trip per
    node, which takes seconds after a test that queued thousands of entries.
    """
    levels: list[list[str]] = []
    level = [path]
    while level:
        levels.append(level)
        listings = [(node, client.get_children_async(node)) for node in level]
        level = []
        for node, listing in listings:
            try:
                level.extend(f"{node}/{child}" for child in listing.get())
            except NoNodeError:
                pass
    for level in reversed(levels):
        for deletion in [client.delete_async(node) for node in level]:
            try:
                deletion.get()
            except NoNodeError:
                pass


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZooKeeperServer]:
    """The session's ZooKeeper server (see tests/support/zookeeper.py for its API)."""
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture
def zk_factory(zookeeper: ZooKeeperServer) -> Iterator[Callable[..., KazooClient]]:
    """Make extra started clients (threading handler); all are stopped after the test.

    Keyword arguments go to `nuvla_job.zk.make_client`, e.g. `timeout=2.0` for short
    sessions in crash-recovery tests.
    """
    clients: list[KazooClient] = []

    def factory(**kw: Any) -> KazooClient:
        kw.setdefault("timeout", 5.0)
        kw.setdefault("use_gevent", False)
        client = make_client(zookeeper.hosts, **kw)
        clients.append(client)
        client.start(timeout=CLIENT_START_TIMEOUT)
        return client

    yield factory
    for client in clients:
        try:
            client.stop()
        finally:
            client.close()


@pytest.fixture
def zk(zookeeper: ZooKeeperServer, zk_factory: Callable[..., KazooClient]) -> KazooClient:
    """A connected client on a clean tree: /job, /election and /limits are deleted first."""
    # A fault test that failed while the server was down must not break every later test.
    zookeeper.start()
    client = zk_factory()
    for path in CLEAN_PATHS:
        wipe(client, path)
    return client


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (see nuvla_job/localstack/postgres.py), started on
    first use; stopped by pid at the end of the session, whatever the tests did."""
    try:
        server = PostgresServer()
    except PostgresNotAvailable as exc:
        require(False, str(exc))
        raise
    with server:
        yield server


_databases = itertools.count()


@pytest.fixture
def postgres_db(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new empty database on the session's server, dropped after the test."""
    name = f"test_{os.getpid()}_{next(_databases)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture(scope="module", params=STORE_KINDS)
def store_with(request: pytest.FixtureRequest) -> Iterator[StoreWith]:
    """Make stores holding given documents, on each store in turn (module-scoped: a
    PostgreSQL database per module, emptied at each use)."""
    if request.param == "sqlite":
        yield sqlite_store_with
        return
    server = request.getfixturevalue("postgres")
    name = f"store_{os.getpid()}_{next(_databases)}"
    with postgres_store_factory(server.create_database(name)) as factory:
        yield factory
    server.drop_database(name)


# job API fixtures: see tests/support/jobapi.py


@pytest.fixture(scope="session")
def job_api(zookeeper: ZooKeeperServer) -> Iterator[JobApiProcess]:
    """The session's job API process, on its own temporary database."""
    with JobApiProcess(zookeeper.hosts) as server:
        yield server


@pytest.fixture
def fresh_api(zookeeper: ZooKeeperServer) -> Iterator[JobApiProcess]:
    """A job API of its own on an empty database (no jobs of other tests)."""
    with JobApiProcess(zookeeper.hosts) as server:
        yield server


def _api_store(request: pytest.FixtureRequest) -> ApiStore:
    return ApiStore(
        request.param,
        lambda: request.getfixturevalue("postgres"),
        lambda: f"api_{os.getpid()}_{next(_databases)}",
    )


@pytest.fixture(scope="module", params=STORE_KINDS)
def api_store(request: pytest.FixtureRequest) -> Iterator[ApiStore]:
    """The store of the job APIs a module starts itself: each test using it runs on SQLite,
    then on PostgreSQL."""
    choice = _api_store(request)
    yield choice
    choice.drop_all()


@pytest.fixture(scope="module", params=API_DEPLOYMENTS)
def api_deployment(request: pytest.FixtureRequest) -> Iterator[ApiStore]:
    """As `api_store`, and a third time as two replicas on PostgreSQL (`job_api_each_store`)."""
    choice = _api_store(request)
    yield choice
    choice.drop_all()


@pytest.fixture(scope="module")
def job_api_each_store(
    zookeeper: ZooKeeperServer, api_deployment: ApiStore
) -> Iterator[JobApiClients]:
    """A job API for the module on each store in turn, then as two replicas behind a
    balancer that sends each request to the next one (tests/support/replicas.py). A module
    runs its tests on all three by overriding `job_api` with it (see
    tests/integration/test_api_http.py); each test's requests must then reach both
    replicas (`_replicas_alternate`)."""
    server: JobApiClients
    if api_deployment.kind == "replicas":
        server = JobApiReplicas(zookeeper.hosts, db=str(api_deployment.db()))
    else:
        server = JobApiProcess(zookeeper.hosts, db=api_deployment.db())
    with server:
        yield server


@pytest.fixture(autouse=True)
def _replicas_alternate(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the replicas that made two requests or more had both replicas answer."""
    if "job_api_each_store" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("job_api_each_store")
    if not isinstance(server, JobApiReplicas):
        yield
        return
    before = server.served()
    yield
    served = {e: n - before[e] for e, n in server.served().items()}
    if sum(served.values()) >= 2:
        assert all(served.values()), f"requests per replica: {served}"


@pytest.fixture
def admin_api(job_api: JobApiProcess, zookeeper: ZooKeeperServer) -> Api:
    """A `nuvla.api.Api` logged in with the admin key written by the job API.

    An earlier test may have restarted ZooKeeper: wait until the job API has reconnected,
    so that adds are queued again.
    """
    zookeeper.start()
    job_api.wait_queue_connected()
    return job_api.admin_api()


@pytest.fixture(autouse=True)
def _engine_processes_closed() -> Iterator[None]:
    """After each test, every engine process it started is stopped and its folder removed
    (a test may read a stopped process's log until then)."""
    yield
    EngineProcess.close_all()


@pytest.fixture
def start_executor(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient
) -> Iterator[Callable[..., EngineProcess]]:
    """Start executor processes on the test stack (test actions loaded); stopped after.

    ``metrics=True``: it serves its metrics on a free port, its ``port``.
    """
    started: list[EngineProcess] = []

    def start(
        *extra: str, env: dict[str, str] | None = None, metrics: bool = False
    ) -> EngineProcess:
        def make(*more: str) -> EngineProcess:
            process = executor_process(
                zookeeper.hosts,
                job_api.endpoint,
                str(job_api.credentials_path),
                *extra,
                *more,
                env=env,
            )
            started.append(process.start())
            return process

        if metrics:
            return serving_on_free_port(
                lambda port: make("--metrics-port", str(port)), "running up to"
            )
        process = make()
        process.wait_for_log("running up to")
        return process

    yield start
    for process in started:
        process.stop()

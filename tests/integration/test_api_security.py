"""The job API's transport and login defences, against real `job-api serve` processes:
HTTPS with a self-signed certificate, and the back-off after repeated failed logins."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import requests.adapters
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.api.app import COOKIE
from nuvla_job.localstack.processes import REPO
from tests.integration.test_executor import add, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.processes import executor_process
from tests.support.tls import self_signed_cert
from tests.support.zookeeper import ZooKeeperServer

# -- TLS ----------------------------------------------------------------------------------------


def test_tls_serves_https_and_refuses_plain_http(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    # Configured through the environment, as a container would.
    server = JobApiProcess(
        zookeeper.hosts, env={"JOB_API_TLS_CERT": str(cert), "JOB_API_TLS_KEY": str(key)}
    )
    try:
        server.start()
        assert server.endpoint.startswith("https://")
        admin = server.admin_api()  # the nuvla.api client, insecure=True
        job_id = add(admin, "test_ok")
        assert admin.get(job_id).data["state"] == "QUEUED"

        login = server.api().login_apikey(**_key_and_secret(server))
        [cookie] = [c for c in login.cookies if c.name == COOKIE]
        assert cookie.secure, "the session cookie must be Secure over HTTPS"

        url = f"{server.endpoint}/api/cloud-entry-point"
        assert requests.get(url, verify=str(cert), timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=10)  # self-signed: not trusted by default
        with pytest.raises(requests.ConnectionError):
            requests.get(url.replace("https://", "http://"), timeout=10)
        # The server keeps serving after the failed handshakes, and did not log tracebacks.
        assert requests.get(url, verify=str(cert), timeout=10).status_code == 200
        assert "Traceback" not in server.log_tail(500)
    finally:
        server.close()


def _key_and_secret(server: JobApiProcess) -> dict[str, str]:
    creds = server.credentials()
    return {"key": creds["key"], "secret": creds["secret"]}


def test_engine_with_api_insecure_runs_jobs_over_tls(
    zookeeper: ZooKeeperServer, zk: KazooClient, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    server = JobApiProcess(zookeeper.hosts, "--tls-cert", str(cert), "--tls-key", str(key))
    processes = []
    try:
        server.start()
        admin = server.admin_api()
        verifying = executor_process(
            zookeeper.hosts, server.endpoint, str(server.credentials_path), "--name", "verifying"
        )
        processes.append(verifying.start())
        # Without --api-insecure (or a CA bundle) the self-signed certificate is refused.
        assert verifying.wait(60) == 1
        assert "cannot reach the job API" in verifying.log()
        assert "Traceback" not in verifying.log()

        insecure = executor_process(
            zookeeper.hosts, server.endpoint, str(server.credentials_path), "--api-insecure"
        )
        processes.append(insecure.start())
        insecure.wait_for_log("running up to")
        job_id = add(admin, "test_ok")
        assert wait_state(admin, job_id)["state"] == "SUCCESS"
    finally:
        for process in processes:
            process.stop()
        server.close()


def test_unreadable_tls_files_are_a_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("not a certificate\n")
    db = tmp_path / "data" / "jobs.sqlite"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nuvla_job.cli.api",
            "serve",
            "--db",
            str(db),
            "--tls-cert",
            str(bogus),
            "--tls-key",
            str(bogus),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode != 0
    assert "cannot load TLS certificate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists(), "nothing is created when the certificate is bad"


# -- failed logins ------------------------------------------------------------------------------


def _login(server: JobApiProcess, name: str, password: str) -> requests.Response:
    return server.api().login_password(name, password)


def _wait_allowed(
    server: JobApiProcess, name: str, password: str, timeout: float = 15.0
) -> requests.Response:
    """Retry a login until it is no longer refused with 429 (the back-off has passed)."""
    deadline = time.monotonic() + timeout
    while True:
        response = _login(server, name, password)
        if response.status_code != 429:
            return response
        assert time.monotonic() < deadline, "still refused after the back-off"
        time.sleep(0.1)


def test_repeated_failed_logins_are_refused_with_429(zookeeper: ZooKeeperServer) -> None:
    server = JobApiProcess(
        zookeeper.hosts, "--login-max-failures", "3", "--login-backoff", "1", "--login-window", "60"
    )
    try:
        server.start()
        server.user_api("alice", "alice-Pass-1")
        server.user_api("carol", "carol-Pass-1")

        for _ in range(3):
            assert _login(server, "alice", "wrong").status_code == 403
        refused = _login(server, "alice", "alice-Pass-1")  # even the right password
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["status"] == 429
        assert "too many failed logins" in refused.json()["message"]
        # Another name from the same address is not affected.
        assert _login(server, "carol", "carol-Pass-1").status_code == 201

        # After the back-off the right password works, and the success resets the count.
        assert _wait_allowed(server, "alice", "alice-Pass-1").status_code == 201
        for _ in range(3):
            assert _login(server, "alice", "wrong").status_code == 403
        assert _login(server, "alice", "wrong").status_code == 429
        # Each failure after the back-off doubles it.
        assert _wait_allowed(server, "alice", "wrong").status_code == 403
        assert _login(server, "alice", "wrong").headers["Retry-After"] == "2"

        # A name that does not exist is throttled the same way (no hint that it is unknown).
        for _ in range(3):
            assert _login(server, "nobody", "x").status_code == 403
        assert _login(server, "nobody", "x").status_code == 429

        # Parallel guesses cannot slip past the limit while earlier ones are verified.
        with ThreadPoolExecutor(12) as pool:
            statuses = list(
                pool.map(lambda _: _login(server, "carol", "wrong").status_code, range(12))
            )
        assert statuses.count(403) <= 3 and statuses.count(429) >= 9, statuses
    finally:
        server.close()


def test_failed_logins_from_one_address_are_refused(zookeeper: ZooKeeperServer) -> None:
    server = JobApiProcess(
        zookeeper.hosts,
        "--login-max-failures",
        "0",
        "--login-max-failures-per-address",
        "4",
        "--login-backoff",
        "30",
    )
    try:
        server.start()
        for index in range(4):  # a spray: one guess for each of many names
            assert _login(server, f"name-{index}", "guess").status_code == 403
        response = server.api().login_apikey(**_key_and_secret(server))
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "30"
        log = server.log_tail(500)
        assert "repeated failed logins" in log
        assert "name-3" not in log, "a login name may be a mistyped password: never logged"
    finally:
        server.close()


def test_a_throttled_executor_waits_and_starts_while_the_cli_says_so(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    server = JobApiProcess(zookeeper.hosts, "--login-max-failures", "1", "--login-backoff", "3")
    try:
        server.start()
        creds = server.credentials()
        assert (
            Api(endpoint=server.endpoint, persist_cookie=False)
            .login_apikey(creds["key"], "wrong")
            .status_code
            == 403
        )
        # The operator CLI, from the same address, is refused at once with a clear error.
        from tests.integration.test_operator_cli import run_cli, stack_env

        result = run_cli("list", env=stack_env(server, zookeeper, tmp_path / "data"))
        assert result.returncode != 0
        assert "failed (429)" in result.stderr and "Traceback" not in result.stderr
        # An executor waits the back-off out and starts (it used to exit at once).
        executor = executor_process(
            zookeeper.hosts, server.endpoint, str(server.credentials_path)
        ).start()
        try:
            executor.wait_for_log("refused for now (429", timeout=30)
            executor.wait_for_log("running up to", timeout=60)
            job_id = add(server.admin_api(), "test_ok")
            assert wait_state(server.admin_api(), job_id)["state"] == "SUCCESS"
        finally:
            executor.stop()
    finally:
        server.close()


def _from(address: str) -> requests.Session:
    """A session whose connections leave from `address` (any of 127.0.0.0/8 on Linux)."""

    class SourceAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: object, **kwargs: object) -> None:
            kwargs["source_address"] = (address, 0)
            super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]

    session = requests.Session()
    session.mount("http://", SourceAdapter())
    return session


def _key_login(session: requests.Session, server: JobApiProcess, secret: str) -> int:
    template = {
        "href": "session-template/api-key",
        "key": server.credentials()["key"],
        "secret": secret,
    }
    response = session.post(
        f"{server.endpoint}/api/session", json={"template": template}, timeout=30
    )
    return response.status_code


def test_an_anonymous_client_cannot_lock_the_admin_key_out(zookeeper: ZooKeeperServer) -> None:
    # The finding: five anonymous bad logins for the admin key (its id is in the INFO log)
    # made even its right secret get 429, doubling to 15 minutes; executors then exited.
    server = JobApiProcess(zookeeper.hosts, "--login-backoff", "60")
    try:
        server.start()
        attacker, executor = _from("127.0.0.2"), _from("127.0.0.3")
        statuses = [_key_login(attacker, server, "guess") for _ in range(8)]
        assert statuses == [403] * 5 + [429] * 3
        right = server.credentials()["secret"]
        assert _key_login(attacker, server, right) == 429  # that address backs off
        assert _key_login(executor, server, right) == 201  # a clean address gets in
        # The admin key's own address is not slowed by others' failures either.
        assert _key_login(_from("127.0.0.1"), server, right) == 201
    finally:
        server.close()


def test_behind_a_trusted_balancer_the_back_off_counts_each_client(
    zookeeper: ZooKeeperServer,
) -> None:
    # Behind a load balancer every login comes from its address: counted per address, one
    # attacker would lock the key out for every client. The balancer (127.0.0.5 here) says
    # whom it relays in X-Forwarded-For; only a trusted one is believed.
    server = JobApiProcess(zookeeper.hosts, "--login-backoff", "60", "--trusted-proxy", "127.0.0.5")
    try:
        server.start()
        balancer, right = _from("127.0.0.5"), server.credentials()["secret"]

        def via(client: str, secret: str, header: str | None = None) -> int:
            forwarded = header if header is not None else client
            balancer.headers["X-Forwarded-For"] = forwarded
            return _key_login(balancer, server, secret)

        # What a client writes in the header itself is left of what the balancer adds.
        statuses = [via("10.0.0.1", "guess", f"10.9.9.{i}, 10.0.0.1") for i in range(6)]
        assert statuses == [403] * 5 + [429]
        assert via("10.0.0.1", right) == 429  # the attacker backs off
        assert via("10.0.0.2", right) == 201  # another client behind the balancer does not
        # From an untrusted peer the header is ignored: it cannot dodge the back-off.
        direct = _from("127.0.0.6")
        for i in range(5):
            direct.headers["X-Forwarded-For"] = f"10.1.1.{i}"
            assert _key_login(direct, server, "guess") == 403
        direct.headers["X-Forwarded-For"] = "10.1.1.99"
        assert _key_login(direct, server, right) == 429
    finally:
        server.close()


def test_a_bad_trusted_proxy_is_a_usage_error(tmp_path: Path) -> None:
    for env in ({}, {"JOB_API_TRUSTED_PROXIES": "10.0.0.1 not/a-proxy"}):
        args = [] if env else ["--trusted-proxy", "not/a-proxy"]
        result = subprocess.run(
            [sys.executable, "-m", "nuvla_job.cli.api", "serve", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, "XDG_DATA_HOME": str(tmp_path), **env},
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "'not/a-proxy' is not an address, a network or a host name" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing created


# -- files --------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_files_the_server_creates_are_owner_only_whatever_the_umask(
    zookeeper: ZooKeeperServer,
) -> None:
    # They hold argon2 hashes, session digests and job payloads. Under umask 0 SQLite would
    # make the database and its -wal/-shm files 0666, and umask 022 leaves them world-readable.
    server = JobApiProcess(zookeeper.hosts)
    previous = os.umask(0)
    try:
        server.start()
    finally:
        os.umask(previous)
    try:
        add(server.admin_api(), "test_ok")  # a write: the WAL and its index exist now
        files = [server.db, Path(f"{server.db}-wal"), Path(f"{server.db}-shm")]
        files.append(server.credentials_path)
        assert {str(f): _mode(f) for f in files} == {str(f): 0o600 for f in files}
        # A user added with the CLI into a folder that does not exist yet: the same.
        folder = server.base_dir / "new-folder"
        result = subprocess.run(
            [sys.executable, "-m", "nuvla_job.cli.api", "add-user", "bob", "--password", "x"]
            + ["--db", str(folder / "jobs.sqlite")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            umask=0,
        )
        assert result.returncode == 0, result.stderr
        assert _mode(folder) == 0o700
        assert _mode(folder / "jobs.sqlite") == 0o600
    finally:
        server.close()


def test_an_existing_world_readable_database_is_made_owner_only(
    zookeeper: ZooKeeperServer,
) -> None:
    server = JobApiProcess(zookeeper.hosts)
    try:
        server.start()
        server.stop()
        for path in (server.db, server.credentials_path):
            path.chmod(0o644)
        server.start()
        assert _mode(server.db) == 0o600
        assert "made it readable by its owner only" in server.log_tail(200)
    finally:
        server.close()

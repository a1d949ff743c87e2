"""A full small run with every secret passed through the environment or files: the job API
(HTTPS), two executors and a distributor on the real ZooKeeper, Sentry on a local receiver,
and jobs and a distribution that put the secrets they hold into errors and log lines.

Afterwards no secret may appear in any process's output, in a job's status message, in a
Sentry event, or in a process's command line (/proc/<pid>/cmdline)."""

from __future__ import annotations

import secrets
import textwrap
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nuvla_job.localstack.processes import TEST_ACTIONS
from tests.integration.test_executor import wait_state
from tests.integration.test_sentry import SentryReceiver
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess
from tests.support.tls import self_signed_cert
from tests.support.zookeeper import ZooKeeperServer

MASK = "********"

# Actions and a distribution that do what careless code does: put the credentials they can
# reach into exceptions and log lines.
LEAKY_MODULE = textwrap.dedent("""
    import logging

    from nuvla_job.registry import action, distribution

    log = logging.getLogger("leaky")
    _calls = []


    def _credential(api):
        params = api.session.login_params
        return params.get("secret") or params.get("password")


    @action("leaky_fails")
    class LeakyFails:
        def __init__(self, job):
            self.job = job

        def do_work(self):
            credential = _credential(self.job.api)
            log.warning("about to fail, credential %s", credential)
            raise RuntimeError(f"could not log in with {credential}")


    @distribution("leaky_tick", interval=1)
    def leaky_tick(api):
        _calls.append(1)
        if len(_calls) == 1:
            raise RuntimeError(f"distribution failed with {_credential(api)}")
        yield {"action": "test_ok", "tags": ["leaky_tick"]}
""")


def _secret_file(directory: Path, name: str, value: str) -> str:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _contains(text: str, secret: str) -> bool:
    # A plain bool, so that a failing assertion does not print the secret in the report.
    return secret in text


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def test_no_secret_in_logs_errors_sentry_or_process_listing(
    zookeeper: ZooKeeperServer, zk: KazooClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    actions = tmp_path / "actions"
    actions.mkdir()
    (actions / "leaky_secrets.py").write_text(LEAKY_MODULE)
    cert, key = self_signed_cert(tmp_path)
    sentry = SentryReceiver()
    sentry.thread.start()
    sentry_key = secrets.token_hex(16)
    dsn = f"http://{sentry_key}@127.0.0.1:{sentry.server.server_address[1]}/1"
    executor_password = f"exec-pw-{secrets.token_urlsafe(12)}"
    distributor_password = f"dist-pw-{secrets.token_urlsafe(12)}"

    server = JobApiProcess(
        zookeeper.hosts, env={"JOB_API_TLS_CERT": str(cert), "JOB_API_TLS_KEY": str(key)}
    )
    # Its folder (TLS key, database, log) goes after the test, once its log has been read.
    request.addfinalizer(server.close)
    processes: list[EngineProcess] = []
    try:
        server.start()
        admin = server.admin_api()
        creds = server.credentials()
        api_secret = creds["secret"]
        for name, password in (
            ("executor", executor_password),
            ("distributor", distributor_password),
        ):
            # The add-user password comes from a file, not the command line.
            result = server.cli(
                "add-user",
                name,
                "--admin",
                "--password-file",
                _secret_file(tmp_path, f"{name}.pw", password),
            )
            assert result.returncode == 0, result.stderr
        all_secrets = {
            "API secret": api_secret,
            "executor password": executor_password,
            "distributor password": distributor_password,
            "Sentry DSN": dsn,
            "Sentry key": sentry_key,
        }

        # Engine processes verify the test certificate as their CA bundle.
        base_env = {"REQUESTS_CA_BUNDLE": str(cert), "CURL_CA_BUNDLE": ""}
        common = [
            "--zk-hosts",
            zookeeper.hosts,
            "--api-url",
            server.endpoint,
            "--actions-path",
            str(TEST_ACTIONS),
            "--actions-path",
            str(actions),
        ]
        by_key = EngineProcess(
            "nuvla_job.cli.executor",
            [*common, "--name", "exec-key", "--api-key", creds["key"]],
            env={
                **base_env,
                "JOB_API_SECRET_FILE": _secret_file(tmp_path, "api.secret", api_secret),
                "SENTRY_DSN_FILE": _secret_file(tmp_path, "sentry.dsn", dsn),
            },
        )
        by_password = EngineProcess(
            "nuvla_job.cli.executor",
            [
                *common,
                "--name",
                "exec-pw",
                "--api-user",
                "executor",
                "--api-pass-file",
                _secret_file(tmp_path, "exec.pw", executor_password),
            ],
            env={**base_env, "SENTRY_DSN": dsn},
        )
        distributor = EngineProcess(
            "nuvla_job.cli.distributor",
            [*common, "--name", "dist", "--distribution-include", "leaky_tick"],
            env={
                **base_env,
                "JOB_API_USER": "distributor",
                "JOB_API_PASS": distributor_password,
                "SENTRY_DSN": dsn,
            },
        )
        for process in (by_key, by_password, distributor):
            processes.append(process.start())
        by_key.wait_for_log("running up to")
        by_password.wait_for_log("running up to")

        # Each executor takes some jobs; the failing ones leak whichever credential it has.
        job_ids = [
            admin.add("job", {"action": action}).data["resource-id"]
            for action in ["test_ok", "leaky_fails"] * 6
        ]
        jobs = [wait_state(admin, job_id, timeout=60) for job_id in job_ids]
        assert {j["state"] for j in jobs if j["action"] == "test_ok"} == {"SUCCESS"}
        failed = [j for j in jobs if j["action"] == "leaky_fails"]
        assert {j["state"] for j in failed} == {"FAILED"}
        # The distribution failed once (with the password in its error), then made jobs.
        _wait_for(
            lambda: admin.search("job", filter="tags='leaky_tick'", last=0).count >= 2,
            "the distribution created jobs",
        )
        _wait_for(lambda: len(sentry.events) >= 2, "Sentry events arrived")

        # No secret on any command line (what `ps` shows to every user of the machine).
        for pid in (server.pid, *(p.pid for p in processes)):
            assert pid is not None
            cmdline = _cmdline(pid)
            for what, value in all_secrets.items():
                assert not _contains(cmdline, value), f"{what} in the command line of {pid}"

        for job in failed:
            assert MASK in job["status-message"], job["status-message"]
    finally:
        stops = [p.stop() for p in processes]
        server.stop()
        sentry.server.shutdown()
        sentry.server.server_close()
    assert stops == [0, 0, 0]

    outputs = {
        "job API": server.log_path.read_text("utf-8", "replace"),
        **{p.args[p.args.index("--name") + 1]: p.log() for p in processes},
        "ZooKeeper": zookeeper.log_path.read_text("utf-8", "replace"),
    }
    failed_messages = "\n".join(j["status-message"] for j in failed)
    sentry_events = "\n".join(str(event) for event in sentry.events)
    # The leaks were really attempted, and masked: proof that the grep below means something.
    assert MASK in outputs["exec-key"] or MASK in outputs["exec-pw"]
    assert MASK in outputs["dist"]
    assert MASK in sentry_events
    for what, value in all_secrets.items():
        for source, text in outputs.items():
            assert not _contains(text, value), f"{what} in the output of {source}"
        assert not _contains(failed_messages, value), f"{what} in a job's status message"
        if what.startswith("Sentry"):
            continue  # the DSN is how the SDK reaches the receiver
        assert not _contains(sentry_events, value), f"{what} in a Sentry event"
        for body in sentry.raw:
            assert not _contains(body.decode("utf-8", "replace"), value), f"{what} sent to Sentry"


def test_secret_files_that_cannot_be_read_are_usage_errors(
    tmp_path: Path, job_api: JobApiProcess
) -> None:
    missing = tmp_path / "missing.secret"
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    both = tmp_path / "both.secret"
    both.write_text("s3cret-in-file\n")
    cases = [
        (["--api-key", "credential/x", "--api-secret-file", str(missing)], {}, "--api-secret-file"),
        (["--api-user", "u"], {"JOB_API_PASS_FILE": str(empty)}, "is empty"),
        (
            [
                "--api-key",
                "credential/x",
                "--api-secret",
                "s3cret-on-argv",
                "--api-secret-file",
                str(both),
            ],
            {},
            "not both",
        ),
        ([], {"SENTRY_DSN_FILE": str(missing)}, "--sentry-dsn-file"),
    ]
    for args, env, message in cases:
        process = EngineProcess(
            "nuvla_job.cli.executor", ["--api-url", job_api.endpoint, *args], env=env
        ).start()
        try:
            assert process.wait(60) == 2, process.log()
            assert message in process.log(), process.log()
            assert "Traceback" not in process.log()
            assert "s3cret-in-file" not in process.log()
        finally:
            process.stop()

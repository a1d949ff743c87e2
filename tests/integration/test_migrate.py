"""`job-api migrate` with real servers: a store filled by a real job API, copied SQLite ->
PostgreSQL -> SQLite, served again by a real job API on each copy; a copy killed mid-way
resumed; refusals. (tests/integration/test_api_migrate.py: the same at the store level.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nuvla.api import Api

from nuvla_job.api.identity import Identities
from nuvla_job.api.sqlite import SqliteStore
from tests.support.jobapi import JobApiProcess

MIGRATE = [sys.executable, "-m", "nuvla_job.cli.api", "migrate"]
PASSWORD = "pw-Secret-1"


def migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MIGRATE, *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def all_jobs(api: Api) -> dict[str, dict[str, Any]]:
    """Every job the caller sees, by id, without what the server derives per caller."""
    found = api.search("job", orderby="id", last=10_000)
    return {r.id: {k: v for k, v in r.data.items() if k != "operations"} for r in found.resources}


def login_key(server: JobApiProcess, key: str, secret: str) -> Api:
    api = server.api()
    response = api.login_apikey(key, secret)
    assert response.status_code == 201, response.text
    return api


def login_user(server: JobApiProcess, name: str) -> Api:
    api = server.api()
    response = api.login_password(name, PASSWORD)
    assert response.status_code == 201, response.text
    return api


def fill(server: JobApiProcess) -> dict[str, Any]:
    """Jobs in every state, with ACLs and unique keys; a user, her API key and session."""
    admin = server.admin_api()
    name = f"alice-{uuid.uuid4().hex[:6]}"
    alice = server.user_api(name, PASSWORD)
    made = server.cli("add-key", "--identity", alice.user_id)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    acl = {"owners": ["group/nuvla-admin"], "view-data": [alice.user_id], "manage": [alice.user_id]}
    ids: dict[str, list[str]] = {}
    for state in ("QUEUED", "RUNNING", "SUCCESS", "FAILED", "CANCELED"):
        for n in range(4):
            body: dict[str, Any] = {"action": f"migrated_{n % 2}", "execution-mode": "pull"}
            if n % 2:
                body["acl"] = acl
            if n == 0:
                body["unique-key"] = f"key-{state}-{uuid.uuid4().hex[:6]}"
            job_id = admin.add("job", body).data["resource-id"]
            if state == "CANCELED":
                admin.operation(admin.get(job_id), "cancel")
            elif state != "QUEUED":
                admin.edit(job_id, {"state": state, "status-message": f"now {state}"})
            ids.setdefault(state, []).append(job_id)
    return {
        "alice": alice,
        "name": name,
        "key": key,
        "ids": ids,
        "admin_jobs": all_jobs(admin),
        "alice_jobs": all_jobs(alice),
    }


def check_served(server: JobApiProcess, admin_creds: dict[str, str], filled: dict[str, Any]) -> Api:
    """The server answers as the one the data came from: jobs, states, ACLs, logins."""
    admin = login_key(server, admin_creds["key"], admin_creds["secret"])
    assert all_jobs(admin) == filled["admin_jobs"]
    # Alice's API key and password log in, and see exactly what she saw before.
    by_key = login_key(server, filled["key"]["key"], filled["key"]["secret"])
    assert all_jobs(by_key) == filled["alice_jobs"]
    assert all_jobs(login_user(server, filled["name"])) == filled["alice_jobs"]
    # Her session cookie from the first server is valid here too.
    cookie = server.api()
    cookie.session.cookies.update(filled["alice"].session.cookies)
    assert all_jobs(cookie) == filled["alice_jobs"]
    # An unfinished job's unique-key is still held: an add with it answers the holder.
    holder = filled["ids"]["QUEUED"][0]
    key = filled["admin_jobs"][holder]["unique-key"]
    answer = admin.add("job", {"action": "again", "unique-key": key}).data
    assert answer["resource-id"] == holder and "no job added" in answer["message"]
    return admin


def test_a_store_copied_to_postgresql_and_back_serves_the_same(
    zookeeper: Any, postgres_db: str, tmp_path: Path
) -> None:
    source = JobApiProcess(zookeeper.hosts)
    on_postgres = JobApiProcess(zookeeper.hosts, db=postgres_db)
    back = JobApiProcess(zookeeper.hosts, db=str(tmp_path / "back" / "jobs.sqlite"))
    try:
        source.start()
        filled = fill(source)
        creds = source.credentials()
        source.stop()

        result = migrate(str(source.db), postgres_db)
        assert result.returncode == 0, result.stderr
        assert "counts: source 20, destination 20" in result.stdout, result.stdout
        assert "principals: 3 copied" in result.stdout  # admin key, alice, her key

        on_postgres.start()
        admin = check_served(on_postgres, creds, filled)
        # A change made on PostgreSQL travels back.
        moved = filled["ids"]["QUEUED"][1]
        admin.operation(admin.get(moved), "cancel")
        filled["admin_jobs"] = all_jobs(admin)
        filled["alice_jobs"] = all_jobs(login_key(on_postgres, **filled["key"]))
        assert filled["admin_jobs"][moved]["state"] == "CANCELED"
        on_postgres.stop()

        result = migrate(postgres_db, str(back.db))
        assert result.returncode == 0, result.stderr
        assert "counts: source 20, destination 20" in result.stdout, result.stdout
        back.start()
        check_served(back, creds, filled)
    finally:
        for server in (source, on_postgres, back):
            server.close()


SEEDED = 20_000


def copied(conn: psycopg.Connection) -> int:
    made = conn.execute(b"SELECT to_regclass('job') IS NOT NULL").fetchone()
    if not (made and made[0]):
        return 0  # the copy has not created the schema yet
    row = conn.execute(b"SELECT count(*) FROM job").fetchone()
    assert row is not None
    return int(row[0])


def seeded_sqlite(path: Path, jobs: int = SEEDED) -> None:
    """A SQLite store of `jobs` jobs (some owed a queue entry) and a few identities."""
    store = SqliteStore(path)
    try:
        docs = (
            {"id": f"job/{n:08d}", "action": "seeded", "state": "QUEUED", "created": "x"}
            for n in range(jobs)
        )
        store.jobs.insert_many(docs)
        store.jobs.insert({"id": "job/pending", "action": "owed", "state": "QUEUED"}, True)
        identities = Identities(store.identities)
        identities.add_api_key("user/a", ["group/nuvla-admin"])
        identities.add_user("bob", PASSWORD)
    finally:
        store.close()


def test_an_interrupted_copy_resumed_gives_exact_counts(postgres_db: str, tmp_path: Path) -> None:
    source = tmp_path / "jobs.sqlite"
    seeded_sqlite(source)
    copying = subprocess.Popen(
        [*MIGRATE, str(source), postgres_db, "--batch", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        with psycopg.connect(postgres_db, autocommit=True) as conn:
            # Once a first batch is in, the copy is held at its next one (the lock) and
            # killed there, mid-way.
            deadline = time.monotonic() + 60
            while not copied(conn):
                assert copying.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            with conn.transaction():
                conn.execute(b"LOCK TABLE job IN EXCLUSIVE MODE")
                os.kill(copying.pid, signal.SIGKILL)
                copying.wait(30)
                copied_before = copied(conn)
    finally:
        if copying.poll() is None:
            copying.kill()
        copying.wait()
    assert 200 <= copied_before < SEEDED

    result = migrate(str(source), postgres_db)
    assert result.returncode == 0, result.stderr
    assert f"jobs: {SEEDED + 1 - copied_before} copied, {copied_before} already there" in (
        result.stdout
    )
    assert f"counts: source {SEEDED + 1}, destination {SEEDED + 1}" in result.stdout
    # Not a terminal: plain progress lines, the last one when every job is read.
    assert f"jobs: {SEEDED + 1:,} / {SEEDED + 1:,} read" in result.stdout
    with psycopg.connect(postgres_db) as conn:
        rows = conn.execute(b"SELECT count(*), count(DISTINCT id) FROM job").fetchone()
        total = conn.execute(b"SELECT sum(n) FROM job_total").fetchone()
        pending = conn.execute(b"SELECT id FROM job WHERE enqueue_pending").fetchall()
    assert rows == (SEEDED + 1, SEEDED + 1) and total == (SEEDED + 1,)
    assert pending == [("job/pending",)]  # the owed queue entry is still owed

    # Once more: nothing to do, nothing doubled.
    again = migrate(str(source), postgres_db)
    assert again.returncode == 0, again.stderr
    assert f"jobs: 0 copied, {SEEDED + 1} already there" in again.stdout


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_counts_that_differ_exit_non_zero(postgres_db: str, tmp_path: Path) -> None:
    source = tmp_path / "jobs.sqlite"
    seeded_sqlite(source, 10)
    from nuvla_job.api.postgres import PostgresStore

    destination = PostgresStore(postgres_db)
    try:
        destination.jobs.insert({"id": "job/other", "action": "theirs", "state": "QUEUED"})
    finally:
        destination.close()
    result = migrate(str(source), postgres_db)
    assert result.returncode == 1
    line = error_line(result)
    assert "the destination holds 1 jobs more than the source" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{db}", "{db}"], "SOURCE and DESTINATION are the same database"),
        (["{db}", "sqlite://{db}"], "SOURCE and DESTINATION are the same database"),
        (["{missing}", "{other}"], "no SQLite file at"),
        (["mysql://x@h/db", "{other}"], "unknown database scheme 'mysql://'"),
        (["{db}", "postgresql:///jobs"], "a PostgreSQL URL is postgresql://"),
        (["{db}"], "Missing argument 'DESTINATION'"),
    ],
)
def test_bad_values_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    source = tmp_path / "jobs.sqlite"
    seeded_sqlite(source, 1)
    names = {"db": source, "missing": tmp_path / "nope.sqlite", "other": tmp_path / "o.sqlite"}
    result = migrate(*(a.format(**names) for a in args))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "o.sqlite").exists()


def test_the_same_postgresql_database_is_refused(postgres_db: str) -> None:
    # The same host, port and database, with a libpq option: still the same one.
    result = migrate(postgres_db, postgres_db + "?application_name=other")
    assert result.returncode == 2
    assert "SOURCE and DESTINATION are the same database" in result.stderr

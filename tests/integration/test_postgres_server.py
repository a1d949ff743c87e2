"""The PostgreSQL the tests start (nuvla_job/localstack/postgres.py): a real server of its
own, not running as root, fast settings, stopped by pid, its folder removed."""

from __future__ import annotations

import os

import psycopg

from tests.support.postgres import PostgresServer


def _one(url: str, sql: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return row[0]


def test_a_fresh_database_per_test(postgres: PostgresServer, postgres_db: str) -> None:
    assert _one(postgres_db, "SELECT current_database()") == postgres_db.rsplit("/", 1)[1]
    with psycopg.connect(postgres_db) as conn:
        conn.execute(b"CREATE TABLE t (x int)")
        conn.execute(b"INSERT INTO t VALUES (1)")
    assert _one(postgres_db, "SELECT count(*) FROM t") == 1
    # Tuned for tests, not for safety; on loopback only.
    assert _one(postgres_db, "SHOW fsync") == "off"
    assert _one(postgres_db, "SHOW listen_addresses") == "127.0.0.1"


def test_the_server_does_not_run_as_root(postgres: PostgresServer) -> None:
    assert postgres.pid is not None
    status = open(f"/proc/{postgres.pid}/status").read()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid) != 0
    assert open(f"/proc/{postgres.pid}/comm").read().strip() == "postgres"


def test_stopped_by_pid_and_removed() -> None:
    server = PostgresServer()
    with server:
        pid = server.pid
        assert pid is not None
        server.restart()  # same port, same cluster
        assert _one(server.url(), "SELECT 1") == 1
        pid = server.pid
    assert pid is not None
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
    assert not server.base_dir.exists()

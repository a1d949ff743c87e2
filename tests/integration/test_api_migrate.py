"""`job-api migrate SOURCE DESTINATION` (nuvla_job/api/migrate.py): SQLite to PostgreSQL and
back, through the real command; identities and owed-entry marks kept, resumable, the counts
checked, and a job the destination cannot hold reported, not lost silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nuvla_job.api.identity import Identities
from nuvla_job.api.postgres import PostgresStore
from nuvla_job.api.query import Query
from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.localstack.processes import child_env


def job_api(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nuvla_job.cli.api", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )


def docs(n: int) -> list[dict]:
    return [
        {
            "id": f"job/{i:05d}",
            "action": f"a{i % 7}",
            "state": "QUEUED" if i % 3 else "SUCCESS",
            "created": f"2026-01-01T00:00:{i % 60:02d}.000Z",
            "tags": [f"t{i % 5}"],
            "acl": {"owners": ["group/nuvla-admin"]},
        }
        for i in range(n)
    ]


def everything(store) -> list[dict]:
    return store.jobs.search(Query(orderby=[("id", False)]), None)[1]


def test_sqlite_to_postgresql_and_back(tmp_path: Path, postgres_db: str) -> None:
    source_path = tmp_path / "jobs.sqlite"
    source = SqliteStore(source_path)
    jobs = docs(2500)
    source.jobs.insert_many(jobs[:-1])
    source.jobs.insert(jobs[-1], enqueue_pending=True)  # an add a crash interrupted
    identities = Identities(source.identities)
    user = identities.add_user("alice", "pw-Secret-1")
    session_id, token = identities.open_session(identities.check("user", "alice", "pw-Secret-1"))
    source.close()

    copied = job_api("migrate", str(source_path), postgres_db, "--batch", "700")
    assert copied.returncode == 0, copied.stderr
    assert "jobs: 2500 copied, 0 already there" in copied.stdout
    assert "counts: source 2500, destination 2500" in copied.stdout

    target = PostgresStore(postgres_db)
    try:
        assert everything(target) == jobs
        # The mark travels: the destination's job API finishes that add.
        assert [d["id"] for d in target.jobs.pending_enqueue()] == [jobs[-1]["id"]]
        moved = Identities(target.identities)
        assert moved.check("user", "alice", "pw-Secret-1") is not None
        caller = moved.session_caller(token)
        assert caller is not None and caller.identity == user and caller.session_id == session_id
        # Interrupted midway: the jobs not there yet are copied by a rerun, only those.
        for job in jobs[1000:1200]:
            target.jobs.delete(job["id"])
    finally:
        target.close()
    again = job_api("migrate", str(source_path), postgres_db)
    assert again.returncode == 0, again.stderr
    assert "jobs: 200 copied, 2300 already there; principals: 0 copied" in again.stdout

    back_path = tmp_path / "back" / "jobs.sqlite"
    back = job_api("migrate", postgres_db, f"sqlite://{back_path}")
    assert back.returncode == 0, back.stderr
    assert "counts: source 2500, destination 2500" in back.stdout
    returned = SqliteStore(back_path)
    try:
        assert everything(returned) == jobs
    finally:
        returned.close()


def test_a_job_the_destination_cannot_hold_is_reported(tmp_path: Path, postgres_db: str) -> None:
    source_path = tmp_path / "jobs.sqlite"
    source = SqliteStore(source_path)
    source.jobs.insert_many([*docs(3), {"id": "job/nul", "name": "a\x00b"}])
    source.close()
    result = job_api("migrate", str(source_path), postgres_db)
    assert result.returncode == 1
    assert "1 job(s) the destination cannot hold (a NUL character): job/nul" in result.stderr
    assert "counts: source 4, destination 3" in result.stdout


def test_the_same_database_twice_is_a_usage_error(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.sqlite")
    result = job_api("migrate", path, path)
    assert result.returncode == 2 and "the same database" in result.stderr

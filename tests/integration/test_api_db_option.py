"""`job-api --db`: what each kind of value does, through the real console script.

A file path or ``sqlite:///path`` is a SQLite store; anything the server cannot serve is a
one-line error before anything is created (issue: `--db postgresql://...` used to start on
SQLite in a folder named ``postgresql:``).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nuvla_job.localstack.ports import free_port
from tests.support.jobapi import JobApiProcess

JOB_API = Path(sys.executable).with_name("job-api")


def job_api(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    assert JOB_API.exists(), f"the console script {JOB_API} is not installed"
    return subprocess.run(
        [str(JOB_API), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("postgresql://jobs:hunter2@db.example:port/jobs", "a PostgreSQL URL is postgresql://"),
        ("postgres://jobs:hunter2@db.example", "a PostgreSQL URL is postgresql://"),
        ("mysql://jobs:hunter2@db.example/jobs", "unknown database scheme 'mysql://'"),
        ("sqlite://db.example/jobs.sqlite", "a sqlite URL is sqlite:///"),
        (":memory:", ":memory: is not served"),
        ("", "the database is empty"),
    ],
)
def test_a_db_the_server_cannot_serve_is_a_usage_error(
    tmp_path: Path, value: str, message: str
) -> None:
    home = tmp_path / "home"
    env = {"XDG_DATA_HOME": str(home)}
    for args in (["serve", "--db", value], ["add-key", "--identity", "user/x", "--db", value]):
        result = job_api(*args, cwd=tmp_path, env=env)
        assert result.returncode == 2, (args, result.stderr)  # click's usage error
        line = one_line_error(result)
        assert "Invalid value for '--db'" in line and message in line, line
        assert "hunter2" not in result.stderr + result.stdout
    # Nothing was created: no `postgresql:` folder, no fallback database in the data home.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_environment_variable_is_checked_the_same_way(tmp_path: Path) -> None:
    result = job_api("serve", cwd=tmp_path, env={"JOB_API_DB": "postgresql:///jobs"})
    assert result.returncode == 2
    assert "a PostgreSQL URL is postgresql://" in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_a_postgresql_server_that_does_not_answer_is_a_one_line_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"postgresql://jobs:hunter2@127.0.0.1:{free_port()}/jobs"
    result = job_api("serve", "--db", url, cwd=tmp_path, env={"XDG_DATA_HOME": str(home)})
    assert result.returncode == 1, result.stderr
    assert "cannot connect to the PostgreSQL database" in one_line_error(result)
    assert "hunter2" not in result.stderr + result.stdout


def test_a_folder_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database's folder should be\n")
    for args in (["serve"], ["add-key", "--identity", "user/x"]):
        result = job_api(*args, "--db", str(blocker / "data" / "jobs.sqlite"), cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        line = one_line_error(result)
        assert f"cannot create the folder {blocker / 'data'} for the database" in line, line


def test_a_folder_given_as_the_database_is_a_one_line_error(tmp_path: Path) -> None:
    result = job_api("serve", "--db", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot open database" in one_line_error(result)


def test_without_db_the_database_is_in_the_data_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = job_api(
        "add-key", "--identity", "user/x", cwd=tmp_path, env={"XDG_DATA_HOME": str(home)}
    )
    assert result.returncode == 0, result.stderr
    assert (home / "nuvla-job" / "jobs.sqlite").is_file()


def test_a_sqlite_url_serves_from_its_file(zookeeper, tmp_path: Path) -> None:
    target = tmp_path / "by-url" / "jobs.sqlite"
    server = JobApiProcess(zookeeper.hosts, "--db", f"sqlite://{target}")
    server.start()
    try:
        job_id = server.admin_api().add("job", {"action": "by_url"}).data["resource-id"]
    finally:
        server.close()
    with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM job WHERE id = ?", (job_id,)).fetchone() == (1,)
    assert not server.db.exists(), "the URL's file is used, not the default one"

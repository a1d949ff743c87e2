"""Which store a --db value names (store.parse_store_url, store.open_store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.store import StoreError, StoreUrlError, open_store, parse_store_url
from nuvla_job.localstack.ports import free_port


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("/var/lib/nuvla-job/jobs.sqlite", "/var/lib/nuvla-job/jobs.sqlite"),
        ("jobs.sqlite", "jobs.sqlite"),
        ("./data/jobs.sqlite", "data/jobs.sqlite"),
        ("sqlite:///var/lib/nuvla-job/jobs.sqlite", "/var/lib/nuvla-job/jobs.sqlite"),
        ("SQLITE:///tmp/a%20b.sqlite", "/tmp/a b.sqlite"),
        ("a:b.sqlite", "a:b.sqlite"),  # a colon alone does not make a URL
    ],
)
def test_paths_and_sqlite_urls_name_a_sqlite_file(value: str, path: str) -> None:
    url = parse_store_url(value)
    assert (url.scheme, url.path) == ("sqlite", Path(path))
    assert url.folder == Path(path).parent


def test_a_home_path_is_expanded() -> None:
    assert parse_store_url("~/jobs.sqlite").path == Path.home() / "jobs.sqlite"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "the database is empty"),
        ("   ", "the database is empty"),
        (":memory:", ":memory: is not served"),
        ("postgresql://user:hunter2@db.example", "a PostgreSQL URL is postgresql://"),
        ("postgresql://user:hunter2@db.example:port/jobs", "a PostgreSQL URL is postgresql://"),
        ("postgres:///jobs", "a PostgreSQL URL is postgresql://"),
        ("postgresql://user:hunter2@db.example/jobs/more", "a PostgreSQL URL is postgresql://"),
        ("mysql://user:hunter2@db/jobs", "unknown database scheme 'mysql://'"),
        ("sqlite://host/jobs.sqlite", "a sqlite URL is sqlite:/// and the file's absolute path"),
        ("sqlite:///jobs.sqlite?mode=ro", "with no host or options"),
        ("sqlite:///", "a sqlite URL is sqlite:///"),
    ],
)
def test_anything_else_is_a_usage_error_that_never_repeats_a_secret(
    value: str, message: str
) -> None:
    with pytest.raises(StoreUrlError) as caught:
        parse_store_url(value)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            "postgresql://jobs:hunter2@db.example:5433/jobs",
            "postgresql://jobs:***@db.example:5433/jobs",
        ),
        (
            "postgres://db.example/jobs?sslmode=require",
            "postgres://db.example/jobs?sslmode=require",
        ),
    ],
)
def test_postgresql_urls_name_the_postgresql_store(value: str, shown: str) -> None:
    url = parse_store_url(value)
    assert (url.scheme, url.url) == ("postgresql", value)
    assert str(url) == shown  # what the server logs: never the password


def test_open_store_opens_sqlite_with_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "new" / "folder" / "jobs.sqlite"
    store = open_store(f"sqlite://{target}")
    try:
        assert isinstance(store, SqliteStore) and target.is_file()
    finally:
        store.close()
    # Nothing listens there: a one-line error without the password, nothing created.
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://jobs:hunter2@127.0.0.1:{free_port()}/jobs")
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)
    assert not Path("postgresql:").exists()

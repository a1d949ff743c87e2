"""The storage seam of the job API: what any database behind it provides, and which one a
``--db`` value names.

The job rules (jobs.py) and the identity rules (identity.py) speak only to the protocols
here; everything a database speaks itself (SQL, its dialect of the filter language, its
schema) lives in the module that implements them: sqlite.py (with sqlite_sql.py) and
postgres.py (with postgres_sql.py), sharing sql_common.py. Another database is a sibling
module and one more branch in :func:`open_store`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from .query import Query

Doc = dict[str, Any]


class StoreError(Exception):
    """The database failed (disk full, read-only, locked): the request cannot be served.

    The message is for the caller, in the API's own words; ``detail`` is the database's
    own text, for the server's log only.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class QueryTimeout(StoreError):
    """A call ran past its time budget (StoreLimits.query_timeout) and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the query ran longer than its {seconds:g} s budget and was stopped; "
            "narrow its filter (an indexed attribute: state, action, created, ...)"
        )
        self.seconds = seconds


class PageTooLarge(Exception):
    """The page of documents a search asks for is larger than one answer may be."""

    def __init__(self, most: int) -> None:
        super().__init__(
            f"the page of documents would be larger than {most // (1024 * 1024)} MiB; "
            "ask for fewer (first/last)"
        )


@dataclass(frozen=True)
class StoreLimits:
    """What one call to a store may cost; each store enforces them in its own way (SQLite:
    a progress handler; a server database: its statement timeout)."""

    query_timeout: float = 10.0  # seconds one transaction (a search, a bulk delete) may run
    max_page_bytes: int = 64 * 1024 * 1024  # the stored documents of one page of a search


class Unstorable(Exception):
    """A value this store's database cannot hold (PostgreSQL: a NUL character in text);
    the message is for a 400 answer."""


class Conflict(Exception):
    """The write would break a rule the database keeps (e.g. a duplicate id)."""


class DuplicateId(Conflict):
    """A record with this id (or unique name) exists already."""


class UniqueKeyTaken(Conflict):
    """An unfinished job holds this ``unique-key`` already (see :class:`JobStore`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"an unfinished job holds unique-key {key!r}")
        self.key = key


class StoreUrlError(ValueError):
    """A ``--db`` value that names no store this server can open (a usage error)."""


class JobStore(Protocol):
    """Job documents, searchable with the CIMI query language.

    ``principals`` narrows reads and deletes to the documents whose ACL grants a view right
    to one of them; ``None`` means no narrowing (an administrator).

    Unique keys: at most one unfinished (QUEUED or RUNNING) job holds a given ``unique-key``.
    A store keeps this with a constraint of its database (in SQLite a partial unique index),
    never by a read before the write, so that concurrent adds through any number of job API
    processes cannot both succeed; a write that would break it raises UniqueKeyTaken.
    """

    def insert(self, doc: Doc, enqueue_pending: bool = False) -> None:
        """Store a new document (DuplicateId when its id exists, UniqueKeyTaken when an
        unfinished job holds its unique-key). ``enqueue_pending`` marks it as still owed a
        queue entry."""

    def get(self, job_id: str) -> Doc | None: ...

    def update(self, job_id: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        """Atomically read, change and write one document.

        ``change`` gets the current document and returns the new one (or None to leave it
        as it is). Returns the stored result, or None when there is no such document.
        UniqueKeyTaken when the new one is unfinished and another unfinished job holds its
        unique-key.
        """

    def mark_enqueued(self, job_id: str, entry_path: str | None) -> None:
        """Record the queue entry of a job: add it to ``tags`` and clear the pending mark."""

    def pending_enqueue(self, limit: int = 1000) -> list[Doc]:
        """Documents still marked as owed a queue entry (an add interrupted by a crash).

        A store shared by several processes returns only marks no other live process is
        still working on (its adds in progress), taking them over, so that no two
        processes finish one add."""

    def claim_due(self, now: str, limit: int) -> list[Doc]:
        """Atomically take up to ``limit`` waiting jobs (``QUEUED`` with a ``not-before`` at
        or before ``now``), earliest first: each loses its ``not-before`` and is marked owed
        a queue entry, so that no two callers take one job. An indexed query: it runs at
        every scheduler tick."""

    def unclaim(self, job_ids: Iterable[str], due: str) -> None:
        """Undo a claim whose entries were not made: the jobs still QUEUED wait again, due
        at ``due``; the marks are cleared."""

    def delete(self, job_id: str) -> bool: ...

    def search(self, query: Query, principals: frozenset[str] | None) -> tuple[int, list[Doc]]:
        """(count of all matches, the page of documents the query asks for)."""

    def aggregate(self, query: Query, principals: frozenset[str] | None) -> dict[str, Any]:
        """The query's aggregations, keyed and shaped as query.aggregation_key and
        query.terms_answer / query.metric_answer say."""

    def updated_counts(
        self,
        since: str,
        until: str,
        principals: frozenset[str] | None,
        states: Iterable[str] | None = None,
    ) -> list[tuple[str | None, str | None, int | None, int]]:
        """How many jobs last ``updated`` in [since, until) (CIMI timestamps, compared as
        text) there are for each (action, state, duration), narrowed to ``states`` when
        given: the dashboard's per-action table and fleet samples. A final job is never
        edited again, so its ``updated`` is the time it ended.

        Answered from an index on (updated, action, state, duration) alone (for an
        administrator), so its cost follows the jobs in the range, not the table: the fleet
        sampler asks it every few seconds.
        """

    def delete_matching(self, query: Query, principals: frozenset[str] | None) -> int:
        """Delete every document the query's filter matches; return how many."""

    def insert_many(self, docs: Iterable[Doc]) -> int:
        """Bulk load (benchmarks, imports): no queue entries are made."""


@dataclass(frozen=True)
class Principal:
    """Who can log in: a user (by name and password) or an API key (by key id and secret)."""

    id: str
    kind: str  # "user" or "api-key"
    name: str  # the user name, or the key id itself for an API key
    secret_hash: str  # argon2
    identity: str  # the user id a key acts as (a user's own id)
    claims: tuple[str, ...]  # sorted: the identity and every group it holds
    created: float  # epoch seconds


@dataclass(frozen=True)
class SessionRecord:
    """A login session; only the digest of its token is stored."""

    id: str
    token_hash: str
    identity: str
    claims: tuple[str, ...]
    created: float
    expiry: float


class IdentityStore(Protocol):
    """Principals and sessions: storage only (hashing, tokens and caching are identity.py's)."""

    def add_principal(self, principal: Principal) -> None:
        """DuplicateId when the id or the name is taken."""

    def principal(self, kind: str, name: str) -> Principal | None: ...

    def has_api_key_with(self, claim: str) -> bool:
        """Whether some API key holds `claim` (is there an admin key yet?)."""

    def add_session(self, session: SessionRecord) -> None: ...

    def session_by_token(self, token_hash: str) -> SessionRecord | None: ...

    def session(self, session_id: str) -> SessionRecord | None: ...

    def delete_session(self, session_id: str) -> bool: ...

    def principals(self) -> list[Principal]:
        """Every principal (`job-api migrate` copies them)."""

    def sessions(self) -> list[SessionRecord]:
        """Every session (`job-api migrate` copies them, so that logins survive a move)."""


class Store(Protocol):
    """One database: the jobs and the identities in it.

    ``cooperative`` (a class attribute, False when absent): its calls yield to other
    greenlets while they wait on the database, so the server may call it on its event loop.
    ``shared`` (likewise): other job API processes may write the same database (replicas),
    so nothing read from it may be kept in one process (sessions), and interrupted adds are
    looked for again every so often (an add of a replica that died is finished by another).
    """

    @property
    def jobs(self) -> JobStore: ...

    @property
    def identities(self) -> IdentityStore: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Which store a --db value names

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_FORMS = "a file path, sqlite:///absolute/path or postgresql://user@host:port/database"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreUrl:
    """A parsed ``--db`` value: SQLite's file (``path``), or a PostgreSQL URL (``url``)."""

    scheme: str  # "sqlite" or "postgresql"
    path: Path = Path()
    url: str = ""

    @property
    def folder(self) -> Path:
        """Where the admin credentials go by default: beside a SQLite file; in the user's
        data folder for a server database."""
        if self.scheme == "sqlite":
            return self.path.parent
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return Path(base) / "nuvla-job"

    def __str__(self) -> str:
        if self.scheme == "sqlite":
            return str(self.path)
        return redacted(self.url)


def redacted(url: str) -> str:
    """A URL without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _postgres_url(value: str) -> StoreUrl:
    bad = StoreUrlError(
        "a PostgreSQL URL is postgresql://user[:password]@host[:port]/database"
        " (libpq options may follow as ?name=value)"
    )
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise bad from None
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database or parts.fragment:
        raise bad
    return StoreUrl("postgresql", url=value)


def parse_store_url(value: str) -> StoreUrl:
    """The store a ``--db`` value names: a file path or ``sqlite:///path`` (SQLite), or
    ``postgresql://...`` (PostgreSQL).

    Raises StoreUrlError, with a message fit for a usage error, for anything else. The
    message never repeats a URL (it may hold a password).
    """
    if not value.strip():
        raise StoreUrlError(f"the database is empty: give {_FORMS}")
    if value == ":memory:" or value.startswith("file::memory:"):
        # A server on a memory database loses every job at each restart while their queue
        # entries stay in ZooKeeper, and writes a new admin key each time.
        raise StoreUrlError(
            ":memory: is not served: jobs must outlive the server, as their queue entries "
            "do; give a file path (a temporary folder for a throw-away server)"
        )
    if not _URL.match(value):
        return StoreUrl("sqlite", Path(value).expanduser())
    scheme = value.split(":", 1)[0].lower()
    if scheme in _POSTGRES_SCHEMES:
        return _postgres_url(value)
    if scheme != "sqlite":
        raise StoreUrlError(f"unknown database scheme '{scheme}://': give {_FORMS}")
    parts = urlsplit(value)
    if parts.netloc or parts.query or parts.fragment or not parts.path.strip("/"):
        raise StoreUrlError(
            "a sqlite URL is sqlite:/// and the file's absolute path "
            "(sqlite:///var/lib/nuvla-job/jobs.sqlite), with no host or options"
        )
    return StoreUrl("sqlite", Path(unquote(parts.path)))


def open_store(url: StoreUrl | str, limits: StoreLimits | None = None) -> Store:
    """The store `url` names, opened (its folder and schema created when missing, a
    PostgreSQL schema upgraded).

    StoreUrlError for a value that names no store; StoreError when it cannot be opened.
    A store is synchronous and may be called from several threads at once; unless it is
    ``cooperative`` (it yields to other greenlets while it waits), the server runs it off
    its event loop (offloop.OffLoopStore).
    """
    if isinstance(url, str):
        url = parse_store_url(url)
    # Imported here: each store module imports this one for the protocols and errors (and
    # psycopg is an extra, imported after gevent's patch: postgres.py says why).
    if url.scheme == "postgresql":
        try:
            from .postgres import PostgresStore
        except ImportError:
            # A StoreError (one line, exit 1): the value is right, the install lacks a part.
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'nuvla-job[postgresql]'"
            ) from None
        return PostgresStore(url.url, limits)
    from .sqlite import SqliteStore

    return SqliteStore(url.path, limits)

"""The PostgreSQL store: jobs and identities in one PostgreSQL database, shared by any number
of job API processes.

Every document is kept as ``jsonb``; the attributes jobs are searched by (schema.INDEXED) are
also written, from the document, into columns of their own with indexes on them (text ones
``COLLATE "C"``, so that they order as SQLite's do), as sqlite.py does. The SQL for searches
comes from postgres_sql.py, this store's dialect of the query language.

Concurrency: connections come from a psycopg_pool pool. The job API runs gevent-patched, and
psycopg then waits on its sockets through gevent (psycopg.waiting picks its wait function
when it is imported, after the patch): a query in progress yields to every other greenlet,
so this store is called on the event loop itself (``cooperative``), not in offloop.py's
threads. Read-change-writes lock their row (``FOR UPDATE``); the scheduler's claims skip
rows another process holds (``SKIP LOCKED``); the total is kept in a few counter rows so
that concurrent adds do not queue on one.

Time budget: ``statement_timeout`` is the server's query timeout; a statement running past
it is cancelled by PostgreSQL, answered as QueryTimeout.

Replicas: each process takes an owner number and holds an advisory lock on it while it
lives; the marks of its adds carry it. Interrupted-add recovery takes over only the marks
of owners whose lock is gone (dead processes), so it never queues an add another replica is
still doing, and two replicas never recover one mark.

Schema: versioned migrations (MIGRATIONS), applied at start under an advisory lock, so
replicas starting together apply each exactly once; ``schema_migrations`` records them.
"""

from __future__ import annotations

import functools
import hashlib
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from . import postgres_sql
from . import query as cimi_query
from .filters import Comparison
from .sql_common import COLUMNS
from .store import (
    Doc,
    DuplicateId,
    PageTooLarge,
    Principal,
    QueryTimeout,
    SessionRecord,
    StoreError,
    StoreLimits,
    UniqueKeyTaken,
    Unstorable,
)
from .throttle import Counter

# The indexed paths the store writes itself, with (column, SQL type): `id` is the primary key.
STORED_COLUMNS = {
    path: (column, postgres_sql.column_sql_type(path))
    for path, column in COLUMNS.items()
    if path != "id"
}
_COLUMN_NAMES = [column for column, _ in STORED_COLUMNS.values()]
# Rows of job_total: adds pick one at random, so that concurrent ones rarely wait on a lock.
TOTAL_SLOTS = 16
# Connections one process keeps at most (each request holds one for its transaction only).
POOL_SIZE = 16
# Searches, aggregations and bulk deletes running at once (the others keep connections free).
HEAVY_CALLS = POOL_SIZE - 4
# How long a connect may take.
CONNECT_TIMEOUT = 10.0
# How long a call waits for a connection of the pool (then: 503, the database is unavailable).
POOL_WAIT = 3.0
# How long the pool's own reconnection attempts go on (its back-off doubles each time):
# short, as requests start new attempts when they need a connection, with no back-off.
RECONNECT_FOR = 2.0
# Migrations take this advisory lock: one process at a time changes the schema.
_MIGRATION_LOCK = 0x6E756A6F62  # "nujob"
# Each process holds the advisory lock (_OWNERS, its owner number) while it lives: marks of
# an owner whose lock is gone are left by a dead process.
_OWNERS = 0x6E756A6F  # "nujo"
_UNIQUE_KEY_INDEX = "job_unique_key"
T = TypeVar("T")


def _job_table() -> str:
    columns = ",\n".join(f"  {column} {sql_type}" for column, sql_type in STORED_COLUMNS.values())
    return f"""CREATE TABLE job (
  id TEXT COLLATE "C" PRIMARY KEY,
  doc JSONB NOT NULL,
  enqueue_pending BOOLEAN NOT NULL DEFAULT FALSE,
{columns}
)"""


# Version -> statements. Never edit a released one: add the next.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        _job_table(),
        # The orders the engine and the CLI ask for most (NULLS FIRST: SQLite's order, so
        # that an ascending search reads the index forwards).
        "CREATE INDEX job_state_created ON job (state, created NULLS FIRST)",
        "CREATE INDEX job_action_created ON job (action, created NULLS FIRST)",
        "CREATE INDEX job_created ON job (created NULLS FIRST)",
        # Covers the dashboard's updated_counts: a range of `updated` read from the index.
        "CREATE INDEX job_updated_action_state"
        " ON job (updated NULLS FIRST, action, state, duration)",
        "CREATE INDEX job_priority ON job (priority NULLS FIRST)",
        "CREATE INDEX job_target ON job (target_href NULLS FIRST)",
        "CREATE INDEX job_parent ON job (parent_job NULLS FIRST)",
        "CREATE INDEX job_mode ON job (execution_mode NULLS FIRST)",
        "CREATE INDEX job_pending ON job (created) WHERE enqueue_pending",
        "CREATE INDEX job_due ON job (not_before) WHERE not_before IS NOT NULL",
        # The unique-key rule (store.JobStore): one unfinished job per key, kept by the
        # database whichever process writes.
        "CREATE UNIQUE INDEX job_unique_key ON job (unique_key)"
        " WHERE unique_key IS NOT NULL AND state IN ('QUEUED', 'RUNNING')",
        "CREATE TABLE job_total (slot INTEGER PRIMARY KEY, n BIGINT NOT NULL)",
        f"INSERT INTO job_total (slot, n) SELECT s, 0 FROM generate_series(0, {TOTAL_SLOTS - 1}) s",
        """CREATE TABLE principal (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  name TEXT NOT NULL UNIQUE,
  secret_hash TEXT NOT NULL,
  identity TEXT NOT NULL,
  claims JSONB NOT NULL,
  created DOUBLE PRECISION NOT NULL
)""",
        """CREATE TABLE session (
  id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  identity TEXT NOT NULL,
  claims JSONB NOT NULL,
  created DOUBLE PRECISION NOT NULL,
  expiry DOUBLE PRECISION NOT NULL
)""",
    ],
    # Replicas: which process owes a marked job its queue entry (Database.owner).
    2: [
        "ALTER TABLE job ADD COLUMN pending_owner INTEGER",
        "CREATE SEQUENCE job_api_owner CYCLE MAXVALUE 2147483647",
    ],
    # Replicas: failed-login counters shared by every process (throttle.py), by digest of
    # the key (a name may be a password typed in the wrong field: never stored).
    3: [
        """CREATE TABLE login_counter (
  key TEXT PRIMARY KEY,
  failures INTEGER NOT NULL DEFAULT 0,
  pending INTEGER NOT NULL DEFAULT 0,
  last_failure DOUBLE PRECISION NOT NULL DEFAULT 0,
  pending_until DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
        "CREATE INDEX login_counter_last_failure ON login_counter (last_failure)",
    ],
    # The count of a search for one state or a few (the queue's view: state='QUEUED'), kept
    # by the store in the same transactions as the rows, as job_total is: counting a
    # hundred thousand QUEUED rows costs PostgreSQL hundreds of milliseconds. All replicas
    # must run a version that keeps it (upgrade them together).
    4: [
        """CREATE TABLE job_state_total (
  state TEXT COLLATE "C" NOT NULL,
  slot INTEGER NOT NULL,
  n BIGINT NOT NULL,
  PRIMARY KEY (state, slot)
)""",
        "INSERT INTO job_state_total (state, slot, n)"
        " SELECT state, 0, count(*) FROM job WHERE state IS NOT NULL GROUP BY state",
        # Both at once, in the created order (no LIMIT scan of job_created past every row).
        "CREATE INDEX job_action_state_created ON job (action, state, created NULLS FIRST)",
    ],
}


def _column_value(doc: Doc, path: str, sql_type: str) -> Any:
    value: Any = doc
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    # A column keeps only values of its own JSON type (others are NULL), as in sqlite.py.
    if sql_type.startswith("TEXT"):
        return value if isinstance(value, str) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _columns(doc: Doc) -> list[Any]:
    return [_column_value(doc, path, t) for path, (_, t) in STORED_COLUMNS.items()]


def _dumps(doc: Any) -> str:
    return orjson.dumps(doc).decode()


_INSERT = (
    f"INSERT INTO job (id, doc, enqueue_pending, pending_owner, {', '.join(_COLUMN_NAMES)})"
    f" VALUES (%s, %s::jsonb, %s, %s{', %s' * len(_COLUMN_NAMES)})"
)
_COPY = f"COPY job (id, doc, enqueue_pending, {', '.join(_COLUMN_NAMES)}) FROM STDIN"
# Marks of adds no live process is doing any more (their owner's lock is gone: it died),
# taken over by this one (SKIP LOCKED: two replicas never take one mark).
_TAKE_OVER = f"""UPDATE job SET pending_owner = %(me)s WHERE id IN (
  SELECT id FROM job WHERE enqueue_pending AND pending_owner IS DISTINCT FROM %(me)s
  AND NOT EXISTS (
    SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = {_OWNERS}::oid AND objid = pending_owner::oid)
  FOR UPDATE SKIP LOCKED)"""
_DUE = (
    "SELECT id, doc::text FROM job WHERE not_before IS NOT NULL AND not_before <= %s"
    " AND state = 'QUEUED' ORDER BY not_before LIMIT %s FOR UPDATE SKIP LOCKED"
)


def _write_doc(conn: psycopg.Connection, job_id: str, new: Doc, extra: str = "") -> None:
    names = ["doc = %s::jsonb", *(f"{name} = %s" for name in _COLUMN_NAMES)]
    if extra:
        names.append(extra)
    conn.execute(
        f"UPDATE job SET {', '.join(names)} WHERE id = %s".encode(),
        [_dumps(new), *_columns(new), job_id],
    )


def _state_deltas(conn: psycopg.Connection, deltas: dict[str | None, int]) -> None:
    """Keep job_state_total: ``deltas`` per state (None, a job without one: not kept)."""
    rows = [(state, random.randrange(TOTAL_SLOTS), n) for state, n in deltas.items() if state and n]
    if rows:
        with conn.cursor() as cursor:
            cursor.executemany(
                b"INSERT INTO job_state_total (state, slot, n) VALUES (%s, %s, %s)"
                b" ON CONFLICT (state, slot) DO UPDATE SET n = job_state_total.n + EXCLUDED.n",
                rows,
            )


def _state_of(doc: Doc) -> str | None:
    state = doc.get("state")
    return state if isinstance(state, str) else None  # what the column holds


def _states_only(node: Any) -> list[str] | None:
    """The states a filter is exactly ``state='A'`` or ``state=['A', 'B']`` of, else None."""
    if not isinstance(node, Comparison) or node.path != "state" or node.op != "=":
        return None
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    if not values or not all(isinstance(v, str) for v in values):
        return None
    return sorted(set(values))  # type: ignore[arg-type]


def _count_delta(conn: psycopg.Connection, delta: int) -> None:
    if delta:
        conn.execute(
            b"UPDATE job_total SET n = n + %s WHERE slot = %s",
            (delta, random.randrange(TOTAL_SLOTS)),
        )


def _check_storable(value: Any) -> None:
    """PostgreSQL's text and jsonb hold no NUL character (U+0000)."""
    if "\\u0000" in _dumps(value):
        raise Unstorable("a text value holds a NUL character (\\u0000), which cannot be stored")


class Database:
    """A pool of connections to one PostgreSQL database, and its schema."""

    def __init__(self, url: str, limits: StoreLimits | None = None, pool_size: int = POOL_SIZE):
        self.limits = limits or StoreLimits()
        timeout_ms = max(1, round(self.limits.query_timeout * 1000))
        # One connection first: a server that does not answer is one clear error at once,
        # not a pool retrying in the background until its timeout.
        try:
            psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT)).close()
        except psycopg.Error as exc:
            raise StoreError(
                "cannot connect to the PostgreSQL database", f"{type(exc).__name__}: {exc}"
            ) from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=POOL_WAIT,
            reconnect_timeout=RECONNECT_FOR,
            kwargs={
                "options": f"-c statement_timeout={timeout_ms}",
                "connect_timeout": int(CONNECT_TIMEOUT),
                "application_name": "nuvla-job-api",
            },
            open=False,
            name="nuvla-job-store",
            # A connection is checked as it is handed out: after a restart of PostgreSQL
            # the first requests get new connections, not errors.
            check=ConnectionPool.check_connection,
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout:
            self.pool.close()
            raise StoreError("cannot connect to the PostgreSQL database") from None
        self._url = url
        # threading's: a greenlet lock under gevent's patch, an OS-thread one otherwise.
        self._owner_lock = threading.Lock()
        try:
            self.migrate()
            self.owner, self._owner_conn = self._own(url)
        except BaseException:
            self.pool.close()
            raise

    def _own(self, url: str) -> tuple[int, psycopg.Connection]:
        """This process's owner number, and the connection holding its advisory lock for as
        long as the process lives (closed with it, whichever way it ends)."""
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT))
            row = conn.execute(b"SELECT nextval('job_api_owner')::integer").fetchone()
            assert row is not None
            conn.execute(b"SELECT pg_advisory_lock(%s, %s)", (_OWNERS, row[0]))
        except psycopg.Error as exc:
            raise _store_error(exc) from exc
        return int(row[0]), conn

    def current_owner(self) -> int:
        """This process's owner number, its lock checked first: a new number and lock when
        the connection holding it was lost (PostgreSQL restarted), as other processes may
        have taken the old one for dead already. Called before a mark is written."""
        with self._owner_lock:
            try:
                self._owner_conn.execute(b"SELECT 1")
            except psycopg.Error:
                self._owner_conn.close()
                self.owner, self._owner_conn = self._own(self._url)
            return self.owner

    @contextmanager
    def transaction(self, snapshot: bool = False) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection (``snapshot``: every statement of it sees
        the same data)."""
        try:
            with self.pool.connection() as conn:
                with conn.transaction():
                    if snapshot:
                        conn.execute(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield conn
        except PoolTimeout:
            raise StoreError("the job database is unavailable (no connection)") from None
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateId(_constraint(exc)) from exc
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout(self.limits.query_timeout) from None
        except psycopg.Error as exc:
            raise _store_error(exc) from exc

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.transaction() as conn:
            return conn.execute(sql.encode(), list(params)).fetchall()

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns the versions applied."""
        applied: list[int] = []
        with self.transaction() as conn:
            conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                b"CREATE TABLE IF NOT EXISTS schema_migrations"
                b" (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            row = conn.execute(b"SELECT max(version) FROM schema_migrations").fetchone()
            current = (row[0] if row else None) or 0
            for version in sorted(v for v in MIGRATIONS if v > current):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement.encode())
                conn.execute(b"INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        return applied

    def close(self) -> None:
        self.pool.close()
        self._owner_conn.close()


def _constraint(exc: psycopg.Error) -> str:
    return getattr(exc.diag, "constraint_name", None) or ""


# What SQLSTATE classes mean for a caller (any other: "failed").
_CLASSES = {
    "08": "the job database is unavailable",  # connection exception
    "53": "the job database is out of resources (disk, memory or connections)",
    "57": "the job database is unavailable",  # operator intervention (shutdown)
    "40": "the job database is busy",  # transaction rollback (deadlock, serialization)
    "25": "the job database is read-only",  # e.g. a hot standby
    "58": "the job database cannot read or write its files",
}


def _store_error(exc: psycopg.Error) -> StoreError:
    """The StoreError for a psycopg error, chosen by its SQLSTATE, never by its text (which
    goes to the log only: it may quote values)."""
    state = exc.sqlstate or ""
    if isinstance(exc, psycopg.OperationalError) and not state:
        message = "the job database is unavailable"
    else:
        message = _CLASSES.get(state[:2], "the job database failed")
    return StoreError(message, f"{type(exc).__name__} {state}: {exc}")


@contextmanager
def _unique_key_of(doc: Doc) -> Iterator[None]:
    """A write of ``doc`` refused by the unique-key index raises UniqueKeyTaken (the job
    table's only unique index beside its primary key, reported as DuplicateId)."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        if _constraint(exc) == _UNIQUE_KEY_INDEX and "unique-key" in doc:
            raise UniqueKeyTaken(doc["unique-key"]) from None
        raise DuplicateId(_constraint(exc)) from exc
    except DuplicateId as exc:
        if str(exc) == _UNIQUE_KEY_INDEX and "unique-key" in doc:
            raise UniqueKeyTaken(doc["unique-key"]) from None
        raise


def _unstorable_id(key: str) -> bool:
    """A key no row can have (PostgreSQL text holds no NUL): looked up, it is simply absent."""
    return "\x00" in key


P = ParamSpec("P")
R = TypeVar("R")


def _heavy(
    method: Callable[Concatenate[PostgresJobStore, P], R],
) -> Callable[Concatenate[PostgresJobStore, P], R]:
    """A call whose cost follows what it scans: at most HEAVY_CALLS of them at once, so
    that gets, edits, adds and logins always find a connection of the pool."""

    @functools.wraps(method)
    def bounded(self: PostgresJobStore, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.heavy:
            return method(self, *args, **kwargs)

    return bounded


class PostgresJobStore:
    """store.JobStore on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # threading's: a greenlet semaphore under gevent's patch.
        self.heavy = threading.BoundedSemaphore(HEAVY_CALLS)

    # -- writes ---------------------------------------------------------------------------

    def insert(self, doc: Doc, enqueue_pending: bool = False) -> None:
        _check_storable(doc)
        try:
            with _unique_key_of(doc), self.db.transaction() as conn:
                owner = self.db.current_owner() if enqueue_pending else None
                values = [doc["id"], _dumps(doc), enqueue_pending, owner, *_columns(doc)]
                conn.execute(_INSERT.encode(), values)
                _count_delta(conn, 1)
                _state_deltas(conn, {_state_of(doc): 1})
        except UniqueKeyTaken:
            raise
        except DuplicateId as exc:
            raise DuplicateId(f"{doc['id']} already exists") from exc

    def insert_many(self, docs: Iterable[Doc]) -> int:
        rows = []
        states: dict[str | None, int] = {}
        for doc in docs:
            _check_storable(doc)
            rows.append((doc["id"], _dumps(doc), False, *_columns(doc)))
            states[_state_of(doc)] = states.get(_state_of(doc), 0) + 1
        if not rows:
            return 0
        # COPY: about twice as fast as batched INSERTs (a million jobs in about a minute),
        # with every index and constraint kept as for any insert.
        with self.db.transaction() as conn:
            with conn.cursor().copy(_COPY.encode()) as copy:
                for row in rows:
                    copy.write_row(row)
            _count_delta(conn, len(rows))
            _state_deltas(conn, states)
        return len(rows)

    def _locked(self, conn: psycopg.Connection, job_id: str, where: str = "") -> Doc | None:
        row = conn.execute(
            f"SELECT doc::text FROM job WHERE id = %s{where} FOR UPDATE".encode(), (job_id,)
        ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def update(self, job_id: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        if _unstorable_id(job_id):
            return None
        with self.db.transaction() as conn:
            current = self._locked(conn, job_id)
            if current is None:
                return None
            new = change(current)
            if new is None:
                return current
            _check_storable(new)
            with _unique_key_of(new):
                _write_doc(conn, job_id, new)
            before, after = _state_of(current), _state_of(new)
            if before != after:
                _state_deltas(conn, {before: -1, after: 1})
            return new

    def claim_due(self, now: str, limit: int) -> list[Doc]:
        owner = int(self.db.current_owner())
        with self.db.transaction() as conn:
            rows = conn.execute(_DUE.encode(), (now, limit)).fetchall()
            claimed = []
            for job_id, text in rows:
                current = orjson.loads(text)
                new = {k: v for k, v in current.items() if k != "not-before"}
                extra = f"enqueue_pending = TRUE, pending_owner = {owner}"
                _write_doc(conn, job_id, new, extra=extra)
                claimed.append(new)
            return claimed

    def unclaim(self, job_ids: Iterable[str], due: str) -> None:
        with self.db.transaction() as conn:
            for job_id in job_ids:
                if _unstorable_id(job_id):
                    continue
                current = self._locked(conn, job_id, " AND enqueue_pending")
                if current is None:
                    continue
                new = current
                if current.get("state") == "QUEUED":
                    new = {**current, "not-before": due}
                _write_doc(conn, job_id, new, extra="enqueue_pending = FALSE")

    def mark_enqueued(self, job_id: str, entry_path: str | None) -> None:
        if _unstorable_id(job_id):
            return
        with self.db.transaction() as conn:
            doc = self._locked(conn, job_id)
            if doc is None:
                return
            tags = [] if entry_path is None else [entry_path]
            new = {**doc, "tags": [*doc.get("tags", []), *tags]}
            _write_doc(conn, job_id, new, extra="enqueue_pending = FALSE")

    def pending_enqueue(self, limit: int = 1000) -> list[Doc]:
        """This process's marks (its adds in progress are for jobs.py to leave alone), and
        those of dead processes, taken over first."""
        me = self.db.current_owner()
        with self.db.transaction() as conn:
            conn.execute(_TAKE_OVER.encode(), {"me": me})
            rows = conn.execute(
                b"SELECT doc::text FROM job WHERE enqueue_pending AND pending_owner = %s"
                b" ORDER BY created LIMIT %s",
                (me, limit),
            ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def delete(self, job_id: str) -> bool:
        if _unstorable_id(job_id):
            return False
        with self.db.transaction() as conn:
            rows = conn.execute(b"DELETE FROM job WHERE id = %s RETURNING state", (job_id,))
            gone = rows.fetchall()
            _count_delta(conn, -len(gone))
            _state_deltas(conn, {state: -1 for (state,) in gone})
            return bool(gone)

    @_heavy
    def delete_matching(self, query: cimi_query.Query, principals: frozenset[str] | None) -> int:
        where, params = self._where(query, principals)
        sql = (
            f"WITH gone AS (DELETE FROM job WHERE {where} RETURNING state)"
            " SELECT state, count(*) FROM gone GROUP BY state"
        )
        with self.db.transaction() as conn:
            by_state = conn.execute(sql.encode(), params).fetchall()
            deleted = sum(int(n) for _, n in by_state)
            _count_delta(conn, -deleted)
            _state_deltas(conn, {state: -int(n) for state, n in by_state})
            return deleted

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Doc | None:
        if _unstorable_id(job_id):
            return None
        rows = self.db.read("SELECT doc::text FROM job WHERE id = %s", (job_id,))
        return orjson.loads(rows[0][0]) if rows else None

    def _where(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> tuple[str, list[Any]]:
        acl, params = postgres_sql.acl_sql(principals)
        if query.filter is None:
            return acl, params
        sql, filter_params = postgres_sql.filter_sql(query.filter)
        if any(isinstance(p, str) and "\x00" in p for p in filter_params):
            raise Unstorable("a filter value holds a NUL character (\\u0000)")
        return f"({sql}) AND {acl}", [*filter_params, *params]

    @_heavy
    def search(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> tuple[int, list[Doc]]:
        where, params = self._where(query, principals)
        limit, offset = cimi_query.limit_offset(query)
        with self.db.transaction(snapshot=True) as conn:
            states = None if principals is not None else _states_only(query.filter)
            if query.filter is None and principals is None:
                counting = conn.execute(b"SELECT coalesce(sum(n), 0) FROM job_total")
            elif states is not None:
                counting = conn.execute(
                    b"SELECT coalesce(sum(n), 0) FROM job_state_total WHERE state = ANY(%s)",
                    (states,),
                )
            else:
                counting = conn.execute(f"SELECT count(*) FROM job WHERE {where}".encode(), params)
            row = counting.fetchone()
            count = int(row[0]) if row else 0
            if limit == 0 or count == 0:
                return count, []
            sql = f"SELECT doc::text FROM job WHERE {where} {postgres_sql.order_by_sql(query)}"
            sql += " LIMIT %s OFFSET %s"
            texts, size = [], 0
            with conn.cursor() as cursor:
                cursor.execute(sql.encode(), [*params, limit, offset])
                for (text,) in cursor:
                    size += len(text)
                    if size > self.db.limits.max_page_bytes:
                        raise PageTooLarge(self.db.limits.max_page_bytes)
                    texts.append(text)
        return count, [orjson.loads(text) for text in texts]

    @_heavy
    def updated_counts(
        self,
        since: str,
        until: str,
        principals: frozenset[str] | None,
        states: Iterable[str] | None = None,
    ) -> list[tuple[str | None, str | None, int | None, int]]:
        acl, params = postgres_sql.acl_sql(principals)
        where = "updated >= %s AND updated < %s"
        values: list[Any] = [since, until]
        if states is not None:
            where += " AND state = ANY(%s::text[])"
            values.append(sorted(states))
        rows = self.db.read(
            f"SELECT action, state, duration, count(*) FROM job"
            f" WHERE {where} AND {acl} GROUP BY action, state, duration",
            [*values, *params],
        )
        return [(a, s, d, int(n)) for a, s, d, n in rows]

    @_heavy
    def aggregate(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> dict[str, Any]:
        where, params = self._where(query, principals)
        result: dict[str, Any] = {}
        with self.db.transaction(snapshot=True) as conn:
            for op, path in query.aggregations:
                sql = f"WITH hits AS (SELECT * FROM job WHERE {where}) "
                sql += postgres_sql.aggregation_sql(op, path)
                rows = conn.execute(sql.encode(), params).fetchall()
                key = cimi_query.aggregation_key(op, path)
                result[key] = postgres_sql.aggregation_result(op, rows)
        return result


def _claims(value: Any) -> tuple[str, ...]:
    return tuple(value if isinstance(value, list) else orjson.loads(value))


class PostgresIdentityStore:
    """store.IdentityStore on a :class:`Database`: tables ``principal`` and ``session``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add_principal(self, principal: Principal) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                b"INSERT INTO principal (id, kind, name, secret_hash, identity, claims, created)"
                b" VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
                (
                    principal.id,
                    principal.kind,
                    principal.name,
                    principal.secret_hash,
                    principal.identity,
                    _dumps(list(principal.claims)),
                    principal.created,
                ),
            )

    def principal(self, kind: str, name: str) -> Principal | None:
        if _unstorable_id(name):
            return None
        rows = self.db.read(
            "SELECT id, kind, name, secret_hash, identity, claims::text, created FROM principal"
            " WHERE kind = %s AND name = %s",
            (kind, name),
        )
        if not rows:
            return None
        pid, kind, name, secret_hash, identity, claims, created = rows[0]
        return Principal(pid, kind, name, secret_hash, identity, _claims(claims), created)

    def has_api_key_with(self, claim: str) -> bool:
        return bool(
            self.db.read(
                "SELECT 1 FROM principal WHERE kind = 'api-key' AND claims ? %s LIMIT 1", (claim,)
            )
        )

    def add_session(self, session: SessionRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                b"INSERT INTO session (id, token_hash, identity, claims, created, expiry)"
                b" VALUES (%s, %s, %s, %s::jsonb, %s, %s)",
                (
                    session.id,
                    session.token_hash,
                    session.identity,
                    _dumps(list(session.claims)),
                    session.created,
                    session.expiry,
                ),
            )

    def _session(self, where: str, value: str) -> SessionRecord | None:
        if _unstorable_id(value):
            return None
        rows = self.db.read(
            "SELECT id, token_hash, identity, claims::text, created, expiry FROM session"
            f" WHERE {where} = %s",
            (value,),
        )
        if not rows:
            return None
        sid, token_hash, identity, claims, created, expiry = rows[0]
        return SessionRecord(sid, token_hash, identity, _claims(claims), created, expiry)

    def session_by_token(self, token_hash: str) -> SessionRecord | None:
        return self._session("token_hash", token_hash)

    def session(self, session_id: str) -> SessionRecord | None:
        return self._session("id", session_id)

    def delete_session(self, session_id: str) -> bool:
        if _unstorable_id(session_id):
            return False
        with self.db.transaction() as conn:
            return conn.execute(b"DELETE FROM session WHERE id = %s", (session_id,)).rowcount > 0

    def principals(self) -> list[Principal]:
        rows = self.db.read(
            "SELECT id, kind, name, secret_hash, identity, claims::text, created FROM principal"
            " ORDER BY id"
        )
        return [Principal(p, k, n, h, i, _claims(c), t) for p, k, n, h, i, c, t in rows]

    def sessions(self) -> list[SessionRecord]:
        rows = self.db.read(
            "SELECT id, token_hash, identity, claims::text, created, expiry FROM session"
            " ORDER BY id"
        )
        return [SessionRecord(s, h, i, _claims(c), t, e) for s, h, i, c, t, e in rows]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class PostgresLoginCounters:
    """throttle.CounterStore in table ``login_counter``: the back-off holds across replicas
    (their clocks: the wall clock, which replicas must keep in sync, as NTP does)."""

    # One update in this many also forgets the counters past their window.
    PRUNE_EVERY = 200

    def __init__(self, db: Database, window: float) -> None:
        self.db = db
        self.window = window

    def update(self, keys: list[str], now: float, change: Callable[[dict[str, Counter]], T]) -> T:
        digests = {
            hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest(): key for key in keys
        }
        ordered = sorted(digests)  # rows locked in one order: no deadlock between replicas
        with self.db.transaction() as conn:
            conn.execute(
                b"INSERT INTO login_counter (key) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (ordered,),
            )
            rows = conn.execute(
                b"SELECT key, failures, pending, last_failure, pending_until FROM login_counter"
                b" WHERE key = ANY(%s::text[]) ORDER BY key FOR UPDATE",
                (ordered,),
            ).fetchall()
            counters = {digests[k]: Counter(f, p, last, until) for k, f, p, last, until in rows}
            result = change(counters)
            with conn.cursor() as cursor:
                cursor.executemany(
                    b"UPDATE login_counter SET failures = %s, pending = %s, last_failure = %s,"
                    b" pending_until = %s WHERE key = %s",
                    [
                        (c.failures, c.pending, c.last_failure, c.pending_until, digest)
                        for digest, c in ((d, counters[digests[d]]) for d in ordered)
                    ],
                )
            if random.randrange(self.PRUNE_EVERY) == 0:
                conn.execute(
                    b"DELETE FROM login_counter WHERE pending_until < %s AND last_failure < %s",
                    (now, now - self.window),
                )
        return result


class PostgresStore:
    """store.Store on one PostgreSQL database (its schema created or upgraded at open)."""

    # Its calls yield to other greenlets while they wait (module docstring): the server
    # calls them on the event loop.
    cooperative = True
    # Several job API processes may serve one database (store.Store).
    shared = True

    def __init__(self, url: str, limits: StoreLimits | None = None) -> None:
        self.db = Database(url, limits)
        self.jobs = PostgresJobStore(self.db)
        self.identities = PostgresIdentityStore(self.db)

    def login_counters(self, window: float) -> PostgresLoginCounters:
        """Failed-login counters shared by every process on this database."""
        return PostgresLoginCounters(self.db, window)

    def close(self) -> None:
        self.db.close()

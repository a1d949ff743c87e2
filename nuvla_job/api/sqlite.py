"""The SQLite store: jobs and identities in one database file in WAL mode.

Every document is kept as JSON text; the attributes jobs are searched by (schema.INDEXED) are
also written, from the document, into columns of their own with indexes on them, so filters
on them run on indexes while the document stays the single source of truth. A column keeps
only values of its type (NULL otherwise), as the filter language says. The SQL for searches
comes from sqlite_sql.py, this store's dialect of the query language.

Concurrency: the store is called from several OS threads at once (the server runs every
call in offloop.py's pool, so that SQLite, which never yields to other greenlets, cannot
stall the event loop). Reads take a connection of their own from a small pool; in WAL mode
they never wait for a writer and each sees one snapshot. Writes go through one writer
connection behind an OS-thread lock, which keeps a read-change-write atomic.

Time budget: every transaction gets ``limits.query_timeout`` seconds; SQLite's progress
handler stops a statement still running past it, which is answered as QueryTimeout.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from gevent.monkey import get_original

from . import query as cimi_query
from . import sqlite_sql
from .filters import And, Comparison, Node, fold
from .private_files import private_file, private_folder, tighten
from .schema import ACL_RIGHTS
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
)

# Locks between OS threads, also in a process gevent has monkey-patched (whose threading
# locks are greenlet locks of one thread).
# (threading's own RLock, even the original one, is built on the patched primitives.)
_RLock = get_original("_thread", "RLock")
_Lock = get_original("_thread", "allocate_lock")
# How many SQLite virtual-machine steps pass between two looks at the clock.
_PROGRESS_STEPS = 10_000

# Rights that let a principal see a document (every right implies viewing it).
VIEW_RIGHTS = ACL_RIGHTS


# The indexed paths the store writes itself, with (column, SQL type): `id` is the primary key.
STORED_COLUMNS = {
    path: (column, sqlite_sql.column_sql_type(path))
    for path, column in sqlite_sql.COLUMNS.items()
    if path != "id"
}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Give a database made by an older version the stored columns added since, filled from
    the documents (older ones may hold the attribute: `duration` was one long before it was
    a column)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(job)")}
    for path, (column, sql_type) in STORED_COLUMNS.items():
        if present and column not in present:
            conn.execute(f"ALTER TABLE job ADD COLUMN {column} {sql_type}")
            where = sqlite_sql.json_path(path)
            # The column's own JSON type only, as _column_value keeps it.
            json_type = "'text'" if sql_type == "TEXT" else "'integer'"
            conn.execute(
                f"UPDATE job SET {column} = json_extract(doc, '{where}')"
                f" WHERE json_type(doc, '{where}') = {json_type}"
            )


def _schema_sql() -> list[str]:
    columns = ",\n".join(f"  {column} {sql_type}" for column, sql_type in STORED_COLUMNS.values())
    return [
        f"""CREATE TABLE IF NOT EXISTS job (
  id TEXT PRIMARY KEY,
  doc TEXT NOT NULL,
  enqueue_pending INTEGER NOT NULL DEFAULT 0,
{columns}
)""",
        # The orders the engine and the CLI ask for most: the queue's view of a state,
        # and the cleanup's age scans.
        "CREATE INDEX IF NOT EXISTS job_state_created ON job(state, created)",
        "CREATE INDEX IF NOT EXISTS job_action_created ON job(action, created)",
        # The dashboard's default order (the latest updated first) within a state or an
        # action; with `state` last, an action's jobs of one state since a time (its failed
        # ones) are counted from the index alone.
        "CREATE INDEX IF NOT EXISTS job_state_updated ON job(state, updated)",
        "CREATE INDEX IF NOT EXISTS job_action_updated ON job(action, updated, state)",
        "CREATE INDEX IF NOT EXISTS job_created ON job(created)",
        # `updated` first, so it serves every query on `updated` alone too; the rest makes it
        # cover the dashboard's per-action table and fleet samples (updated_counts): a range
        # of `updated` answered from this index alone, however many jobs lie outside it.
        "CREATE INDEX IF NOT EXISTS job_updated_action_state"
        " ON job(updated, action, state, duration)",
        "DROP INDEX IF EXISTS job_updated",  # the one above replaces it
        # The dashboard's sorts: `id` ends every order (paging is stable), so with it in the
        # index a sort by priority or duration reads the index in order, ties included.
        "CREATE INDEX IF NOT EXISTS job_priority_id ON job(priority, id)",
        "DROP INDEX IF EXISTS job_priority",  # the one above replaces it
        "CREATE INDEX IF NOT EXISTS job_duration_id ON job(duration DESC, id)",
        "CREATE INDEX IF NOT EXISTS job_target ON job(target_href)",
        # A bulk job's children, the latest updated first.
        # Partial: most jobs have no parent, and an edit moves every entry holding `updated`.
        "CREATE INDEX IF NOT EXISTS job_child_updated ON job(parent_job, updated)"
        " WHERE parent_job IS NOT NULL",
        "DROP INDEX IF EXISTS job_parent_updated",
        "DROP INDEX IF EXISTS job_parent",  # the one above replaces it
        "CREATE INDEX IF NOT EXISTS job_mode ON job(execution_mode)",
        "CREATE INDEX IF NOT EXISTS job_pending ON job(enqueue_pending) WHERE enqueue_pending = 1",
        # The scheduler's due query: only waiting jobs have a not-before, so the index holds
        # those alone however many jobs the table has.
        "CREATE INDEX IF NOT EXISTS job_due ON job(not_before) WHERE not_before IS NOT NULL",
        # The unique-key rule (store.JobStore): one unfinished job per key. A job leaves the
        # index when it is final, so that its key can be used again.
        "CREATE UNIQUE INDEX IF NOT EXISTS job_unique_key ON job(unique_key)"
        " WHERE unique_key IS NOT NULL AND state IN ('QUEUED', 'RUNNING')",
        *SIDE_TABLES_SQL,
        # The total, kept by the store in the same transactions as the rows: `Api.add` asks
        # for it (search with last=0) before every add, and counting a million rows each
        # time would cost tens of milliseconds.
        "CREATE TABLE IF NOT EXISTS job_total (one INTEGER PRIMARY KEY CHECK (one = 1), n INTEGER)",
        "INSERT OR IGNORE INTO job_total(one, n) SELECT 1, count(*) FROM job",
        # The same for each state (a search for one state counts it here: the most common
        # filter, and SUCCESS may hold most of a million jobs), kept by triggers so that every
        # write of a state does.
        *STATE_TOTAL_SQL,
        """CREATE TABLE IF NOT EXISTS principal (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,              -- 'user' or 'api-key'
  name TEXT NOT NULL UNIQUE,       -- username, or the key id itself for an API key
  secret_hash TEXT NOT NULL,
  identity TEXT NOT NULL,          -- the user id a key acts as
  claims TEXT NOT NULL,            -- JSON list of groups beyond the identity
  created REAL NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS session (
  id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  identity TEXT NOT NULL,
  claims TEXT NOT NULL,
  created REAL NOT NULL,
  expiry REAL NOT NULL
)""",
    ]


_COLUMN_NAMES = [column for column, _ in STORED_COLUMNS.values()]


# Side tables: one row per (value, job) of a list in the document that searches narrow by,
# so that the narrowing is an index lookup rather than a read of every document's JSON.
# ``job_reader``: every principal a view right of the job's ACL names (VIEW_RIGHTS), for the
# ACL narrowing of a user's reads. ``job_tag``: every string in ``tags``, for ``tags='x'``.
# The store writes them with the document (in its transaction); deleting a job deletes its
# rows (a trigger, so that every kind of delete does).
def _readers(doc: Doc) -> set[str]:
    acl = doc.get("acl")
    if not isinstance(acl, dict):
        return set()
    found: set[str] = set()
    for right in VIEW_RIGHTS:
        principals = acl.get(right)
        if isinstance(principals, list):
            found.update(p for p in principals if isinstance(p, str))
    return found


def _tags(doc: Doc) -> set[str]:
    tags = doc.get("tags")
    return {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()


_RIGHTS_SQL = ", ".join(f"'{right}'" for right in VIEW_RIGHTS)
# (table, value column, the values of a document, SQL filling it from existing documents)
_SIDES: tuple[tuple[str, str, Callable[[Doc], set[str]], str], ...] = (
    (
        "job_reader",
        "principal",
        _readers,
        "SELECT DISTINCT p.value, job.id FROM job, json_each(job.doc, '$.acl') AS r,"
        " json_each(r.value) AS p WHERE r.key IN (" + _RIGHTS_SQL + ")"
        " AND r.type = 'array' AND p.type = 'text'",
    ),
    (
        "job_tag",
        "tag",
        _tags,
        "SELECT DISTINCT t.value, job.id FROM job, json_each(job.doc, '$.tags') AS t"
        " WHERE json_type(job.doc, '$.tags') = 'array' AND t.type = 'text'",
    ),
)
SIDE_TABLES_SQL = [
    *(
        statement
        for table, column, _, _ in _SIDES
        for statement in (
            f"CREATE TABLE IF NOT EXISTS {table} ({column} TEXT NOT NULL, job_id TEXT NOT NULL,"
            f" PRIMARY KEY ({column}, job_id)) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {table}_job ON {table}(job_id)",
        )
    ),
    "CREATE TRIGGER IF NOT EXISTS job_side_rows_gone AFTER DELETE ON job BEGIN "
    + " ".join(f"DELETE FROM {table} WHERE job_id = old.id;" for table, _, _, _ in _SIDES)
    + " END",
]


_STATE_PLUS = (
    "INSERT INTO job_state_total(state, n) VALUES (new.state, 1)"
    " ON CONFLICT(state) DO UPDATE SET n = n + 1;"
)
_STATE_MINUS = "UPDATE job_state_total SET n = n - 1 WHERE state = old.state;"
STATE_TOTAL_SQL = [
    "CREATE TABLE IF NOT EXISTS job_state_total (state TEXT PRIMARY KEY, n INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS job_state_total_insert AFTER INSERT ON job"
    f" WHEN new.state IS NOT NULL BEGIN {_STATE_PLUS} END",
    "CREATE TRIGGER IF NOT EXISTS job_state_total_delete AFTER DELETE ON job"
    f" WHEN old.state IS NOT NULL BEGIN {_STATE_MINUS} END",
    "CREATE TRIGGER IF NOT EXISTS job_state_total_from AFTER UPDATE OF state ON job"
    f" WHEN old.state IS NOT new.state AND old.state IS NOT NULL BEGIN {_STATE_MINUS} END",
    "CREATE TRIGGER IF NOT EXISTS job_state_total_to AFTER UPDATE OF state ON job"
    f" WHEN old.state IS NOT new.state AND new.state IS NOT NULL BEGIN {_STATE_PLUS} END",
]


def _fill_missing_side_tables(conn: sqlite3.Connection) -> list[str]:
    """The side tables a database made by an older version lacks: created and filled from
    the documents after the schema is made. Returns their fill statements."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "job" not in tables:
        return []
    fills = [
        f"INSERT OR IGNORE INTO {table}({column}, job_id) {fill}"
        for table, column, _, fill in _SIDES
        if table not in tables
    ]
    if "job_state_total" not in tables:
        fills.append(
            "INSERT INTO job_state_total(state, n) SELECT state, count(*) FROM job"
            " WHERE state IS NOT NULL GROUP BY state"
        )
    return fills


def _write_side_rows(conn: sqlite3.Connection, job_id: str, old: Doc | None, new: Doc) -> None:
    """Keep the side tables' rows of one job in step with its new document."""
    for table, column, values, _ in _SIDES:
        before, after = values(old) if old is not None else set(), values(new)
        if before == after:
            continue
        if before - after:
            conn.executemany(
                f"DELETE FROM {table} WHERE {column} = ? AND job_id = ?",
                [(v, job_id) for v in before - after],
            )
        conn.executemany(
            f"INSERT OR IGNORE INTO {table}({column}, job_id) VALUES (?, ?)",
            [(v, job_id) for v in after - before],
        )


def _column_value(doc: Doc, path: str, sql_type: str) -> Any:
    value: Any = doc
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    # A column keeps only values of its own JSON type (others are NULL), so SQLite's type
    # affinity cannot make '5' equal 5: SQL agrees with evaluate.py.
    if sql_type == "TEXT":
        return value if isinstance(value, str) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _columns(doc: Doc) -> list[Any]:
    """The stored columns' values of a document, in STORED_COLUMNS order."""
    return [_column_value(doc, path, t) for path, (_, t) in STORED_COLUMNS.items()]


# The scheduler's due jobs, on the partial index of waiting jobs: named, so that the planner
# never prefers the (state, created) index, which holds every QUEUED job, and a sort.
DUE_SQL = (
    "SELECT id, doc FROM job INDEXED BY job_due WHERE not_before IS NOT NULL"
    " AND not_before <= ? AND state = 'QUEUED' ORDER BY not_before LIMIT ?"
)

_INSERT = (
    f"INSERT INTO job(id, doc, enqueue_pending, {', '.join(_COLUMN_NAMES)})"
    f" VALUES (?, ?, ?{', ?' * len(_COLUMN_NAMES)})"
)


def _write_doc(conn: sqlite3.Connection, job_id: str, old: Doc, new: Doc, extra: str = "") -> None:
    """Rewrite a document, setting only the indexed columns whose value changed.

    SQLite rewrites the entries of every index on a column named in SET: naming only the
    changed ones keeps a progress update to the table row (a few pages, not nine indexes).
    """
    sets, params = ["doc = ?"], [_dumps(new)]
    for name, before, after in zip(_COLUMN_NAMES, _columns(old), _columns(new), strict=True):
        if before != after:
            sets.append(f"{name} = ?")
            params.append(after)
    if extra:
        sets.append(extra)
    conn.execute(f"UPDATE job SET {', '.join(sets)} WHERE id = ?", (*params, job_id))
    _write_side_rows(conn, job_id, old, new)


class _Connection(sqlite3.Connection):
    """A connection whose statements stop once its deadline has passed."""

    deadline = math.inf

    def past_deadline(self) -> bool:
        # SQLite's progress handler: a true answer interrupts the running statement.
        return time.monotonic() > self.deadline


def _connect(path: str) -> _Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
    # what the code says it is.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30, factory=_Connection
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode loses at most the last transactions on power loss, never corrupts.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA cache_size=-65536")
    conn.set_progress_handler(conn.past_deadline, _PROGRESS_STEPS)
    return conn


def _private_database_files(path: Path) -> None:
    """The database file owner-only before SQLite opens it: SQLite gives its -wal and -shm
    files the database file's mode, and would create the file itself 0644."""
    try:
        private_file(path)
        for suffix in ("-wal", "-shm", "-journal"):
            tighten(Path(f"{path}{suffix}"))
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from None


# An in-memory database (":memory:") is for tests of the store in one process: the server
# refuses it (store.parse_store_url), as jobs must outlive it.
_MEMORY = ":memory:"


class Database:
    """The SQLite file: a writer connection, a pool of reader connections, the schema."""

    def __init__(self, path: str, limits: StoreLimits | None = None) -> None:
        self.path = path
        self.limits = limits or StoreLimits()
        if path != _MEMORY:
            folder = Path(path).parent
            try:
                private_folder(folder)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder {folder} for the database: {exc.strerror or exc}"
                ) from None
            _private_database_files(Path(path))
        self._lock = _RLock()  # the writer's
        self._readers: list[_Connection] = []  # idle ones
        self._readers_lock = _Lock()
        try:
            self._writer = _connect(path)
            with self.write(bounded=False) as conn:
                _add_missing_columns(conn)
                fills = _fill_missing_side_tables(conn)
                for statement in [*_schema_sql(), *fills]:
                    conn.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc

    @contextmanager
    def _budget(self, conn: _Connection, bounded: bool = True) -> Iterator[None]:
        conn.deadline = time.monotonic() + self.limits.query_timeout if bounded else math.inf
        try:
            yield
        finally:
            conn.deadline = math.inf

    @contextmanager
    def write(self, bounded: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (nested calls join the outer one); ``bounded=False`` only for
        what no request makes: the schema's changes at open (which may fill a new table from
        every job) and bulk loads."""
        with self._lock:
            conn = self._writer
            if conn.in_transaction:
                yield conn
                return
            try:
                with self._budget(conn, bounded):
                    conn.execute("BEGIN IMMEDIATE")
                    yield conn
                    conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                _rollback(conn)
                if exc.sqlite_errorcode in _DUPLICATE_KEY:
                    raise DuplicateId(str(exc)) from exc
                raise self._error(exc) from exc
            except sqlite3.Error as exc:
                _rollback(conn)
                raise self._error(exc) from exc
            except BaseException:
                _rollback(conn)
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement in it sees the same snapshot."""
        if self.path == _MEMORY:
            # An in-memory database exists once per connection: read on the writer's.
            with self.write() as conn:
                yield conn
            return
        conn = self._reader()
        try:
            with self._budget(conn):
                conn.execute("BEGIN")
                yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            _rollback(conn)  # nothing was written: ending the snapshot is all it does
            with self._readers_lock:
                self._readers.append(conn)

    def _reader(self) -> _Connection:
        with self._readers_lock:
            if self._readers:
                return self._readers.pop()
        # One per thread reading at once: the pool of offloop.py bounds them.
        return _connect(self.path)

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.reading() as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def _error(self, exc: sqlite3.Error) -> StoreError:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
            return QueryTimeout(self.limits.query_timeout)
        return _store_error(exc)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


@contextmanager
def _unique_key_of(doc: Doc) -> Iterator[None]:
    """A write of ``doc`` refused by the unique-key index raises UniqueKeyTaken (the only
    UNIQUE constraint of the job table; its id is a PRIMARY KEY, reported as such)."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_UNIQUE and "unique-key" in doc:
            raise UniqueKeyTaken(doc["unique-key"]) from None
        raise


# The kinds of IntegrityError that say a primary key or UNIQUE value is taken.
_DUPLICATE_KEY = frozenset({sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE})


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# What SQLite's primary result codes mean for a caller (any other: "failed").
_CODES = {
    sqlite3.SQLITE_FULL: "the job database's disk is full",
    sqlite3.SQLITE_READONLY: "the job database is read-only",
    sqlite3.SQLITE_BUSY: "the job database is busy",
    sqlite3.SQLITE_LOCKED: "the job database is busy",
    sqlite3.SQLITE_IOERR: "the job database cannot read or write its file",
    sqlite3.SQLITE_CORRUPT: "the job database file is damaged",
}


def _store_error(exc: sqlite3.Error) -> StoreError:
    """The StoreError for an SQLite error: chosen by its result code, never by its text
    (which goes to the log only: it may quote the statement)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    message = _CODES.get(primary or -1, "the job database failed")
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StoreError(message, f"{name}: {exc}")


def _dumps(doc: Doc) -> str:
    return orjson.dumps(doc).decode()


# A user who may see at most this many jobs has their reads driven by those jobs (the
# side table job_reader, then each job by its id), whatever the filter: the cost follows the
# jobs they may see, not the table. Beyond it, the filter's indexes drive the read and each
# candidate is checked on job_reader's index.
READER_DRIVEN_MOST = 10_000


@dataclass(frozen=True)
class _Selection:
    """The rows a read or delete acts on: ``FROM {source} WHERE {where}`` (the columns of
    ``job`` unqualified), with the parameters of the source, then of the where."""

    source: str
    where: str
    params: list[Any]


def _states_only(node: Node | None) -> list[str] | None:
    """The states of a filter that is ``state = 'S'`` (or one of several) and nothing else."""
    node = None if node is None else fold(node)
    if not isinstance(node, Comparison) or node.path != "state" or node.op != "=":
        return None
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    if not values or not all(isinstance(v, str) for v in values):
        return None
    return sorted({str(v) for v in values})


def _select(
    conn: sqlite3.Connection, filter_node: Node | None, principals: frozenset[str] | None
) -> _Selection:
    where, params = ("1", []) if filter_node is None else sqlite_sql.filter_sql(filter_node)
    if principals is None:
        return _Selection("job", where, params)
    marks = ",".join("?" * len(principals))
    mine = sorted(principals)
    visible = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM job_reader WHERE principal IN ({marks}) LIMIT ?)",
        [*mine, READER_DRIVEN_MOST + 1],
    ).fetchone()[0]
    if visible <= READER_DRIVEN_MOST:
        # CROSS JOIN keeps the caller's jobs as the outer loop (SQLite never reorders it).
        source = (
            f"(SELECT DISTINCT job_id AS visible FROM job_reader WHERE principal IN ({marks}))"
            " AS mine CROSS JOIN job ON job.id = mine.visible"
        )
        return _Selection(source, where, [*mine, *params])
    check = (
        "EXISTS (SELECT 1 FROM job_reader WHERE job_reader.job_id = job.id"
        f" AND job_reader.principal IN ({marks}))"
    )
    return _Selection("job", f"({where}) AND {check}", [*params, *mine])


class SqliteJobStore:
    """store.JobStore on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writes ---------------------------------------------------------------------------

    def insert(self, doc: Doc, enqueue_pending: bool = False) -> None:
        try:
            with self.db.write() as conn, _unique_key_of(doc):
                conn.execute(
                    _INSERT, (doc["id"], _dumps(doc), int(enqueue_pending), *_columns(doc))
                )
                _write_side_rows(conn, doc["id"], None, doc)
                conn.execute("UPDATE job_total SET n = n + 1")
        except DuplicateId as exc:
            raise DuplicateId(f"{doc['id']} already exists") from exc

    def insert_many(self, docs: Iterable[Doc]) -> int:
        listed = list(docs)
        rows = ((d["id"], _dumps(d), 0, *_columns(d)) for d in listed)
        with self.db.write(bounded=False) as conn:
            count = conn.executemany(_INSERT, rows).rowcount
            for table, column, values, _ in _SIDES:
                conn.executemany(
                    f"INSERT OR IGNORE INTO {table}({column}, job_id) VALUES (?, ?)",
                    ((v, d["id"]) for d in listed for v in values(d)),
                )
            conn.execute("UPDATE job_total SET n = n + ?", (count,))
            return count

    def update(self, job_id: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        with self.db.write() as conn:
            row = conn.execute("SELECT doc FROM job WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            current = orjson.loads(row[0])
            new = change(current)
            if new is None:
                return current
            with _unique_key_of(new):
                _write_doc(conn, job_id, current, new)
            return new

    def claim_due(self, now: str, limit: int) -> list[Doc]:
        """Up to ``limit`` waiting jobs due at ``now``, earliest first, in one transaction:
        each loses its not-before and is marked owed a queue entry."""
        with self.db.write() as conn:
            rows = conn.execute(DUE_SQL, (now, limit)).fetchall()
            claimed = []
            for job_id, text in rows:
                current = orjson.loads(text)
                new = {k: v for k, v in current.items() if k != "not-before"}
                _write_doc(conn, job_id, current, new, extra="enqueue_pending = 1")
                claimed.append(new)
            return claimed

    def unclaim(self, job_ids: Iterable[str], due: str) -> None:
        """Undo :meth:`claim_due` for jobs whose entries could not be made: still QUEUED,
        they wait again, due at ``due``; the mark is cleared either way."""
        with self.db.write() as conn:
            for job_id in job_ids:
                row = conn.execute(
                    "SELECT doc FROM job WHERE id = ? AND enqueue_pending = 1", (job_id,)
                ).fetchone()
                if row is None:
                    continue
                current = orjson.loads(row[0])
                new = current
                if current.get("state") == "QUEUED":
                    new = {**current, "not-before": due}
                _write_doc(conn, job_id, current, new, extra="enqueue_pending = 0")

    def mark_enqueued(self, job_id: str, entry_path: str | None) -> None:
        """Record the job's entry in its tags and clear the pending mark (None: only clear
        it, for a job that has left QUEUED since)."""
        with self.db.write() as conn:
            row = conn.execute("SELECT doc FROM job WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return
            doc = orjson.loads(row[0])
            tags = [] if entry_path is None else [entry_path]
            new = {**doc, "tags": [*doc.get("tags", []), *tags]}
            _write_doc(conn, job_id, doc, new, extra="enqueue_pending = 0")

    def pending_enqueue(self, limit: int = 1000) -> list[Doc]:
        rows = self.db.read(
            "SELECT doc FROM job WHERE enqueue_pending = 1 ORDER BY created LIMIT ?", (limit,)
        )
        return [orjson.loads(r[0]) for r in rows]

    def delete(self, job_id: str) -> bool:
        with self.db.write() as conn:
            deleted = conn.execute("DELETE FROM job WHERE id = ?", (job_id,)).rowcount
            conn.execute("UPDATE job_total SET n = n - ?", (deleted,))
            return deleted > 0

    def delete_matching(self, query: cimi_query.Query, principals: frozenset[str] | None) -> int:
        with self.db.write() as conn:
            rows = _select(conn, query.filter, principals)
            if rows.source == "job":
                sql = f"DELETE FROM job WHERE {rows.where}"
            else:
                sql = f"DELETE FROM job WHERE id IN (SELECT job.id FROM {rows.source}"
                sql += f" WHERE {rows.where})"
            deleted = conn.execute(sql, rows.params).rowcount
            conn.execute("UPDATE job_total SET n = n - ?", (deleted,))
            return deleted

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Doc | None:
        rows = self.db.read("SELECT doc FROM job WHERE id = ?", (job_id,))
        return orjson.loads(rows[0][0]) if rows else None

    def _search_sql(
        self, conn: sqlite3.Connection, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
        """The (SQL, parameters) of a search's count and of its page (LIMIT and OFFSET last)."""
        rows = _select(conn, query.filter, principals)
        states = _states_only(query.filter)
        count: tuple[str, list[Any]]
        if query.filter is None and principals is None:
            count = ("SELECT n FROM job_total", [])
        elif states is not None and principals is None:
            marks = ",".join("?" * len(states))
            count = (
                f"SELECT coalesce(sum(n), 0) FROM job_state_total WHERE state IN ({marks})",
                list(states),
            )
        else:
            count = (f"SELECT count(*) FROM {rows.source} WHERE {rows.where}", rows.params)
        limit, offset = cimi_query.limit_offset(query)
        page = f"SELECT job.doc FROM {rows.source} WHERE {rows.where}"
        page += f" {sqlite_sql.order_by_sql(query)} LIMIT ? OFFSET ?"
        return count, (page, [*rows.params, -1 if limit is None else limit, offset])

    def explain(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> dict[str, list[str]]:
        """SQLite's query plans of a search's count and page statements (tests and
        diagnosis: which indexes answer it)."""
        with self.db.reading() as conn:
            plans = {}
            for name, (sql, params) in zip(
                ("count", "page"), self._search_sql(conn, query, principals), strict=True
            ):
                found = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
                plans[name] = [str(row[-1]) for row in found]
            return plans

    def search(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> tuple[int, list[Doc]]:
        # The count and the page from one snapshot: they agree however writes interleave.
        with self.db.reading() as conn:
            (count_sql, count_params), (page_sql, page_params) = self._search_sql(
                conn, query, principals
            )
            count: int = conn.execute(count_sql, count_params).fetchone()[0]
            limit, _ = cimi_query.limit_offset(query)
            if limit == 0 or count == 0:
                return count, []
            texts, size = [], 0
            for (text,) in conn.execute(page_sql, page_params):
                size += len(text)
                if size > self.db.limits.max_page_bytes:
                    raise PageTooLarge(self.db.limits.max_page_bytes)
                texts.append(text)
        return count, [orjson.loads(text) for text in texts]

    def _updated_counts_sql(
        self,
        conn: sqlite3.Connection,
        since: str,
        until: str,
        principals: frozenset[str] | None,
        states: Iterable[str] | None,
    ) -> tuple[str, list[Any]]:
        span: Node = And((Comparison("updated", ">=", since), Comparison("updated", "<", until)))
        if states is not None:
            span = And((span, Comparison("state", "=", tuple(sorted(states)))))
        rows = _select(conn, span, principals)
        # Named for an administrator (and a user who may see many jobs): the planner would
        # otherwise take the state index, which holds every job of those states.
        source = rows.source
        if source == "job":
            source = "job INDEXED BY job_updated_action_state"
        sql = f"SELECT action, state, duration, count(*) FROM {source} WHERE {rows.where}"
        return sql + " GROUP BY action, state, duration", rows.params

    def explain_updated_counts(
        self,
        since: str,
        until: str,
        principals: frozenset[str] | None,
        states: Iterable[str] | None = None,
    ) -> list[str]:
        """SQLite's query plan of :meth:`updated_counts` (tests and diagnosis)."""
        with self.db.reading() as conn:
            sql, params = self._updated_counts_sql(conn, since, until, principals, states)
            return [str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

    def updated_counts(
        self,
        since: str,
        until: str,
        principals: frozenset[str] | None,
        states: Iterable[str] | None = None,
    ) -> list[tuple[str | None, str | None, int | None, int]]:
        with self.db.reading() as conn:
            sql, params = self._updated_counts_sql(conn, since, until, principals, states)
            found = conn.execute(sql, params).fetchall()
        return [(a, s, d, n) for a, s, d, n in found]

    def aggregate(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with self.db.reading() as conn:
            hits = _select(conn, query.filter, principals)
            for op, path in query.aggregations:
                sql = f"WITH hits AS (SELECT job.* FROM {hits.source} WHERE {hits.where}) "
                sql += sqlite_sql.aggregation_sql(op, path)
                rows = conn.execute(sql, hits.params).fetchall()
                key = cimi_query.aggregation_key(op, path)
                result[key] = sqlite_sql.aggregation_result(op, rows)
        return result


def _claims(text: str) -> tuple[str, ...]:
    return tuple(orjson.loads(text))


class SqliteIdentityStore:
    """store.IdentityStore on a :class:`Database`: tables ``principal`` and ``session``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add_principal(self, principal: Principal) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO principal(id, kind, name, secret_hash, identity, claims, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    principal.id,
                    principal.kind,
                    principal.name,
                    principal.secret_hash,
                    principal.identity,
                    orjson.dumps(list(principal.claims)).decode(),
                    principal.created,
                ),
            )

    def principal(self, kind: str, name: str) -> Principal | None:
        rows = self.db.read(
            "SELECT id, kind, name, secret_hash, identity, claims, created FROM principal"
            " WHERE kind = ? AND name = ?",
            (kind, name),
        )
        if not rows:
            return None
        pid, kind, name, secret_hash, identity, claims, created = rows[0]
        return Principal(pid, kind, name, secret_hash, identity, _claims(claims), created)

    def has_api_key_with(self, claim: str) -> bool:
        # Claims are stored as a JSON list of strings: the quoted claim is one element.
        quoted = orjson.dumps(claim).decode()
        return bool(
            self.db.read(
                "SELECT 1 FROM principal WHERE kind = 'api-key' AND instr(claims, ?) LIMIT 1",
                (quoted,),
            )
        )

    def add_session(self, session: SessionRecord) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO session(id, token_hash, identity, claims, created, expiry)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.token_hash,
                    session.identity,
                    orjson.dumps(list(session.claims)).decode(),
                    session.created,
                    session.expiry,
                ),
            )

    def _session(self, where: str, value: str) -> SessionRecord | None:
        rows = self.db.read(
            "SELECT id, token_hash, identity, claims, created, expiry FROM session"
            f" WHERE {where} = ?",
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
        with self.db.write() as conn:
            return conn.execute("DELETE FROM session WHERE id = ?", (session_id,)).rowcount > 0

    def principals(self) -> list[Principal]:
        rows = self.db.read(
            "SELECT id, kind, name, secret_hash, identity, claims, created FROM principal"
            " ORDER BY id"
        )
        return [Principal(p, k, n, h, i, _claims(c), t) for p, k, n, h, i, c, t in rows]

    def sessions(self) -> list[SessionRecord]:
        rows = self.db.read(
            "SELECT id, token_hash, identity, claims, created, expiry FROM session ORDER BY id"
        )
        return [SessionRecord(s, h, i, _claims(c), t, e) for s, h, i, c, t, e in rows]


class SqliteStore:
    """store.Store on one SQLite file (its folder is created when missing)."""

    def __init__(self, path: Path | str, limits: StoreLimits | None = None) -> None:
        self.db = Database(str(path), limits)
        self.jobs = SqliteJobStore(self.db)
        self.identities = SqliteIdentityStore(self.db)

    def close(self) -> None:
        self.db.close()

"""The SQLite implementation of the job store: one database file in WAL mode.

Every document is kept as JSON text; the attributes jobs are searched by are generated
columns of that text with indexes on them, so filters on them run on indexes and the
document stays the single source of truth.

Concurrency: the API serves many requests on gevent greenlets in one thread. SQLite calls
never yield to other greenlets, so one connection for reads is enough; writes go through
a second connection behind a gevent lock, which keeps a read-change-write atomic without
ever blocking the event loop on SQLite's own file lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent.lock
import orjson

from . import query as cimi_query
from .filters import to_sql
from .schema import ACL_RIGHTS, INDEXED_COLUMNS
from .store import Conflict, Doc, StoreError

# Rights that let a principal see a document (every right implies viewing it).
VIEW_RIGHTS = ACL_RIGHTS


# The indexed attributes the store writes itself: `id` is the primary key column already.
STORED_COLUMNS = {path: spec for path, spec in INDEXED_COLUMNS.items() if path != "id"}


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
        "CREATE INDEX IF NOT EXISTS job_created ON job(created)",
        "CREATE INDEX IF NOT EXISTS job_updated ON job(updated)",
        "CREATE INDEX IF NOT EXISTS job_priority ON job(priority)",
        "CREATE INDEX IF NOT EXISTS job_target ON job(target_href)",
        "CREATE INDEX IF NOT EXISTS job_parent ON job(parent_job)",
        "CREATE INDEX IF NOT EXISTS job_mode ON job(execution_mode)",
        "CREATE INDEX IF NOT EXISTS job_pending ON job(enqueue_pending) WHERE enqueue_pending = 1",
        # The total, kept by the store in the same transactions as the rows: `Api.add` asks
        # for it (search with last=0) before every add, and counting a million rows each
        # time would cost tens of milliseconds.
        "CREATE TABLE IF NOT EXISTS job_total (one INTEGER PRIMARY KEY CHECK (one = 1), n INTEGER)",
        "INSERT OR IGNORE INTO job_total(one, n) SELECT 1, count(*) FROM job",
    ]


_COLUMN_NAMES = [column for column, _ in STORED_COLUMNS.values()]


def _column_value(doc: Doc, path: str, sql_type: str) -> Any:
    value: Any = doc
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    # A column keeps only values of its own JSON type (others are NULL), so SQLite's type
    # affinity cannot make '5' equal 5: SQL agrees with filters.evaluate.
    if sql_type == "TEXT":
        return value if isinstance(value, str) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _columns(doc: Doc) -> list[Any]:
    """The stored columns' values of a document, in STORED_COLUMNS order."""
    return [_column_value(doc, path, t) for path, (_, t) in STORED_COLUMNS.items()]


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


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
    # what the code says it is.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode loses at most the last transactions on power loss, never corrupts.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


class Database:
    """The SQLite file: one reader and one writer connection, and the schema."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._writer = _connect(path)
            # An in-memory database exists once per connection: share it.
            self._reader = self._writer if path == ":memory:" else _connect(path)
            self._lock = gevent.lock.RLock()
            with self.write() as conn:
                for statement in _schema_sql():
                    conn.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (nested calls join the outer one)."""
        with self._lock:
            conn = self._writer
            if conn.in_transaction:
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreError(_describe(exc)) from exc
            except BaseException:
                _rollback(conn)
                raise

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._reader.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(_describe(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            if self._reader is not self._writer:
                self._reader.close()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return "the job database is read-only"
    if "full" in text:
        return "the job database's disk is full"
    return f"database error: {text}"


def _dumps(doc: Doc) -> str:
    return orjson.dumps(doc).decode()


def _acl_sql(principals: frozenset[str] | None) -> tuple[str, list[Any]]:
    if principals is None:
        return "1", []
    marks = ",".join("?" * len(principals))
    rights = ",".join("?" * len(VIEW_RIGHTS))
    sql = (
        "EXISTS (SELECT 1 FROM json_each(job.doc, '$.acl') AS r, json_each(r.value) AS p"
        f" WHERE r.key IN ({rights}) AND p.value IN ({marks}))"
    )
    return sql, [*VIEW_RIGHTS, *sorted(principals)]


class SqliteJobStore:
    """JobStore on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writes ---------------------------------------------------------------------------

    def insert(self, doc: Doc, enqueue_pending: bool = False) -> None:
        try:
            with self.db.write() as conn:
                conn.execute(
                    _INSERT, (doc["id"], _dumps(doc), int(enqueue_pending), *_columns(doc))
                )
                conn.execute("UPDATE job_total SET n = n + 1")
        except StoreError as exc:
            if "UNIQUE" in str(exc):
                raise Conflict(f"{doc['id']} already exists") from exc
            raise

    def insert_many(self, docs: Iterable[Doc]) -> int:
        rows = ((d["id"], _dumps(d), 0, *_columns(d)) for d in docs)
        with self.db.write() as conn:
            count = conn.executemany(_INSERT, rows).rowcount
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
            _write_doc(conn, job_id, current, new)
            return new

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
        where, params = self._where(query, principals)
        with self.db.write() as conn:
            deleted = conn.execute(f"DELETE FROM job WHERE {where}", params).rowcount
            conn.execute("UPDATE job_total SET n = n - ?", (deleted,))
            return deleted

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Doc | None:
        rows = self.db.read("SELECT doc FROM job WHERE id = ?", (job_id,))
        return orjson.loads(rows[0][0]) if rows else None

    def _where(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> tuple[str, list[Any]]:
        acl, params = _acl_sql(principals)
        if query.filter is None:
            return acl, params
        sql, filter_params = to_sql(query.filter)
        return f"({sql}) AND {acl}", [*filter_params, *params]

    def search(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> tuple[int, list[Doc]]:
        where, params = self._where(query, principals)
        if query.filter is None and principals is None:
            count = self.db.read("SELECT n FROM job_total")[0][0]
        else:
            count = self.db.read(f"SELECT count(*) FROM job WHERE {where}", params)[0][0]
        limit, offset = cimi_query.limit_offset(query)
        if limit == 0 or count == 0:
            return count, []
        sql = f"SELECT doc FROM job WHERE {where} {cimi_query.order_by_sql(query)}"
        page_params = list(params)
        sql += " LIMIT ? OFFSET ?"
        page_params += [-1 if limit is None else limit, offset]
        rows = self.db.read(sql, page_params)
        return count, [orjson.loads(r[0]) for r in rows]

    def aggregate(
        self, query: cimi_query.Query, principals: frozenset[str] | None
    ) -> dict[str, Any]:
        where, params = self._where(query, principals)
        result: dict[str, Any] = {}
        for op, path in query.aggregations:
            sql = f"WITH hits AS (SELECT * FROM job WHERE {where}) "
            sql += cimi_query.aggregation_sql(op, path)
            rows = self.db.read(sql, params)
            result[cimi_query.aggregation_key(op, path)] = cimi_query.aggregation_result(op, rows)
        return result

    def close(self) -> None:
        self.db.close()

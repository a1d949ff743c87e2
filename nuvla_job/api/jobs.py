"""The job resource's rules: add, edit, delete, the three operations, and search.

Adding a queued job and putting it in ZooKeeper happen in this order:

1. the document is stored, marked "owed a queue entry";
2. the entry ``/job/entries/entry-PPP-`` is created in ZooKeeper;
3. the entry's path is written into ``tags`` and the mark is cleared.

A job added with a ``not-before`` in the future waits instead: it is stored ``QUEUED`` with no
entry, and the scheduler's call :meth:`JobService.queue_due` queues it when it is due, by the
same three steps (the claim in step 1 also removes its ``not-before``, so a job has a
``not-before`` exactly while it waits). The executor puts a failed job with attempts left
back the same way (``QUEUED`` with a ``not-before``), and the ``retry`` operation a FAILED one.

If step 2 fails the document is deleted and the caller gets a 503, so nothing is left. A job
is stored before its entry exists, so an executor that takes the entry always finds the job.
If the server dies between 1 and 3, the mark survives in the database and the next start of
the server finishes the add (``recover_pending``): it looks for an entry already holding the
job's id before creating one, so no job is queued twice. So no job can stay ``QUEUED``
without an entry. If only step 3 fails (a full disk), the add has happened and is answered
as such; the mark stays until recovery clears it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..states import FINAL_STATES, STATES, UNFINISHED_STATES
from ..timeutil import now_iso, parse_time
from . import acl as acls
from . import changes as waits
from .errors import ApiError, bad_request, forbidden, not_found
from .filters import And, Comparison
from .identity import Caller
from .query import Query, apply_select
from .schema import EXECUTION_MODES, MAX_UNIQUE_KEY
from .store import Conflict, Doc, JobStore, StoreError, UniqueKeyTaken
from .validation import check_acl, check_attributes, check_document_size

log = logging.getLogger(__name__)

SERVER_SET = frozenset(
    {"id", "resource-type", "created", "updated", "operations", "created-by", "updated-by"}
)
# Attributes an edit may never remove through ``select``.
REQUIRED = frozenset(
    {
        "id",
        "resource-type",
        "state",
        "action",
        "progress",
        "execution-mode",
        "version",
        "created",
        "updated",
        "acl",
    }
)
DEFAULT_PRIORITY = 999
JOB_VERSION = 2


class QueueUnavailable(Exception):
    """ZooKeeper did not take the entry (``put_many``: the entries made before the failure,
    and whether the others were surely not made)."""

    def __init__(self, message: str, created: list[str] | None = None, certain: bool = True):
        super().__init__(message)
        self.created = created or []
        self.certain = certain


class JobQueue:
    """What the job rules need from the queue: put an entry, and remove one again."""

    def put(self, job_id: str, priority: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def put_many(self, items: list[tuple[str, int]]) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def remove(self, path: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def find(self, job_id: str, priority: int) -> str | None:  # pragma: no cover
        raise NotImplementedError


def _queued(doc: Doc) -> bool:
    return doc.get("execution-mode") in ("push", "mixed")


# Most due jobs one call of the scheduler queues (it calls again while there are more).
MAX_DUE_BATCH = 5000


def _check_not_before(doc: Doc, now: str | None = None) -> None:
    """A ``not-before`` belongs to a QUEUED push or mixed job, which waits until then. On an
    add (``now`` given) one that is due already is dropped: the add queues the job at once.
    On an edit it stays even when due: the job has no entry, the scheduler queues it."""
    if "not-before" not in doc:
        return
    if doc.get("state") != "QUEUED" or not _queued(doc):
        raise bad_request("'not-before' is only for QUEUED jobs in push or mixed mode")
    if now is not None and doc["not-before"] <= now:
        del doc["not-before"]


class JobService:
    """The job collection as callers see it, on a store and a queue."""

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        base_uri: str = "",
        changes: waits.Changes | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.base_uri = base_uri
        # The requests held by wait(), woken after each write below.
        self.changes = changes if changes is not None else waits.Changes()
        # Ids whose add is under way here: recovery leaves them to it (it may be waiting
        # for ZooKeeper to take the entry, with the mark set).
        self._adding: set[str] = set()

    # -- views ----------------------------------------------------------------------------

    def operations(self, doc: Doc, caller: Caller) -> list[dict[str, str]]:
        job_id = doc["id"]
        ops = []
        final = doc.get("state") in FINAL_STATES
        if acls.can(doc, caller, "edit") and not final:
            ops.append({"rel": "edit", "href": job_id})
        if acls.can(doc, caller, "delete"):
            ops.append({"rel": "delete", "href": job_id})
        if doc.get("state") in UNFINISHED_STATES and acls.can(doc, caller, "manage"):
            ops.append({"rel": "cancel", "href": f"{job_id}/cancel"})
        if doc.get("state") == "FAILED" and acls.can(doc, caller, "manage"):
            ops.append({"rel": "retry", "href": f"{job_id}/retry"})
        if doc.get("state") == "RUNNING" and caller.is_admin:
            ops.append({"rel": "timeout", "href": f"{job_id}/timeout"})
        if caller.is_admin:
            ops.append({"rel": "get-context", "href": f"{job_id}/get-context"})
        return ops

    def present(self, doc: Doc, caller: Caller) -> Doc:
        return {**doc, "operations": self.operations(doc, caller)}

    def _load(self, job_id: str, caller: Caller, right: str) -> Doc:
        doc = self.store.get(job_id)
        if doc is None:
            raise not_found(job_id)
        if not acls.can(doc, caller, right):
            raise forbidden(job_id)
        return doc

    # -- collection -----------------------------------------------------------------------

    def collection_operations(self, caller: Caller) -> list[dict[str, str]]:
        return [{"rel": "add", "href": "job"}] if caller.is_admin else []

    def _check_query_right(self, caller: Caller) -> None:
        if caller.is_anonymous:
            raise forbidden("job")

    def search(self, query: Query, caller: Caller) -> dict[str, Any]:
        self._check_query_right(caller)
        principals = None if caller.is_admin else caller.claims
        count, docs = self.store.search(query, principals)
        if query.select:
            docs = [apply_select(d, query.select) for d in docs]
        else:
            docs = [self.present(d, caller) for d in docs]
        result: dict[str, Any] = {
            "count": count,
            "resources": docs,
            "id": "job",
            "resource-type": "job-collection",
            "operations": self.collection_operations(caller),
        }
        if query.aggregations:
            result["aggregations"] = self.store.aggregate(query, principals)
        return result

    def add(self, body: Any, caller: Caller) -> Doc:
        return self.add_or_find(body, caller)[0]

    def add_or_find(self, body: Any, caller: Caller) -> tuple[Doc, bool]:
        """Add a job: (the new job, True); or, when an unfinished job holds its unique-key,
        (that job, False), and nothing is added (the store's constraint decides, so that
        concurrent adds of one key add one job)."""
        if not caller.is_admin:
            raise forbidden("job")
        data = check_attributes(body, ignored=SERVER_SET)
        if not isinstance(data.get("action"), str) or not data["action"]:
            raise bad_request("'action' is required and must be a non-empty string")
        mode = data.get("execution-mode", "push")
        if mode not in EXECUTION_MODES:
            raise bad_request(f"'execution-mode' must be one of {', '.join(EXECUTION_MODES)}")
        now = now_iso()
        doc: Doc = {
            **data,
            "id": f"job/{uuid.uuid4()}",
            "resource-type": "job",
            "state": "QUEUED",
            "progress": data.get("progress", 0),
            "execution-mode": mode,
            "version": data.get("version", JOB_VERSION),
            "priority": data.get("priority", DEFAULT_PRIORITY),
            # Counted by the engine; its presence tells the engine that this job API takes
            # the engine's own attributes (nuvla_job/attempts.py).
            "attempts": data.get("attempts", 0),
            "created": now,
            "updated": now,
            "created-by": caller.identity,
            "acl": acls.normalise(data.get("acl") or acls.default_acl()),
        }
        doc.pop("started", None)
        if "target-resource" in doc:
            affected = list(doc.get("affected-resources", []))
            if doc["target-resource"] not in affected:
                affected.append(doc["target-resource"])
            doc["affected-resources"] = affected
        if "status-message" in doc:
            doc["time-of-status-change"] = now
        _check_not_before(doc, now)
        check_document_size(doc)
        key = doc.get("unique-key")
        if key is not None and not 0 < len(key) <= MAX_UNIQUE_KEY:
            raise bad_request(f"'unique-key' must have 1 to {MAX_UNIQUE_KEY} characters")
        for _ in range(_UNIQUE_ATTEMPTS):
            try:
                self._store_and_enqueue(doc)
                return doc, True
            except UniqueKeyTaken:
                assert key is not None
                holder = self.unfinished_holder(key)
                if holder is not None:
                    return holder, False
                # It became final between the refused insert and the look: add again.
        raise ApiError(409, f"unique-key {key!r} is taken and freed too often to add a job")

    def unfinished_holder(self, key: str) -> Doc | None:
        """The unfinished job holding ``key``, if any (on the indexed column)."""
        query = Query(
            filter=And(
                (Comparison("unique-key", "=", key), Comparison("state", "=", UNFINISHED_STATES))
            ),
            last=1,
        )
        _, docs = self.store.search(query, None)
        return docs[0] if docs else None

    def _store_and_enqueue(self, doc: Doc) -> None:
        self._adding.add(doc["id"])
        try:
            self._store_and_put(doc)
        finally:
            self._adding.discard(doc["id"])

    def _store_and_put(self, doc: Doc) -> None:
        queued = _queued(doc) and "not-before" not in doc
        try:
            self.store.insert(doc, enqueue_pending=queued)
        except UniqueKeyTaken:
            raise  # add_or_find answers the holder
        except Conflict as exc:  # DuplicateId: the id is taken
            raise ApiError(409, str(exc), doc["id"]) from exc
        if not queued:
            return
        try:
            path = self.queue.put(doc["id"], doc["priority"])
        except QueueUnavailable as exc:
            self.store.delete(doc["id"])
            raise ApiError(503, f"the job queue is unavailable: {exc}") from exc
        doc["tags"] = [*doc.get("tags", []), path]
        try:
            self.store.mark_enqueued(doc["id"], path)
            self.changes.changed(doc["id"])
        except StoreError as exc:
            # The entry exists, so the add has happened: the job is stored and queued, and
            # an executor may run it already. Answering an error would make the caller add
            # it again. Only the record of the entry failed (a full disk): the mark stays
            # and `recover_pending` clears it later.
            log.warning(
                "%s: queued as %s, but the database could not record it: %s", doc["id"], path, exc
            )

    def recover_pending(self) -> int:
        """Finish adds that a crash interrupted between storing and queueing (see above)."""
        done = 0
        while True:
            pending = [d for d in self.store.pending_enqueue() if d["id"] not in self._adding]
            if not pending:
                return done
            for doc in pending:
                if doc.get("state") != "QUEUED":
                    # Taken since, so its entry existed: only the mark is left to clear.
                    self.store.mark_enqueued(doc["id"], None)
                    done += 1
                    continue
                path = self.queue.find(doc["id"], doc.get("priority", DEFAULT_PRIORITY))
                if path is None:
                    path = self.queue.put(doc["id"], doc.get("priority", DEFAULT_PRIORITY))
                self.store.mark_enqueued(doc["id"], path)
                self.changes.changed(doc["id"])
                log.info("finished interrupted add of %s (entry %s)", doc["id"], path)
                done += 1

    # -- one job --------------------------------------------------------------------------

    def get(self, job_id: str, caller: Caller) -> Doc:
        return self.present(self._load(job_id, caller, "view"), caller)

    def edit(self, job_id: str, body: Any, select: list[str], caller: Caller) -> Doc:
        data = check_attributes(body, ignored=SERVER_SET)
        data.pop("priority", None)
        data.pop("action", None)
        data.pop("target-resource", None)
        data.pop("unique-key", None)
        if "state" in data and data["state"] not in STATES:
            raise bad_request(f"'state' must be one of {', '.join(STATES)}")
        if "execution-mode" in data and data["execution-mode"] not in EXECUTION_MODES:
            raise bad_request(f"'execution-mode' must be one of {', '.join(EXECUTION_MODES)}")
        if "acl" in data:
            data["acl"] = acls.normalise(check_acl(data["acl"]))
        now = now_iso()

        def change(current: Doc) -> Doc:
            if not acls.can(current, caller, "edit"):
                raise forbidden(job_id)
            if "acl" in data and not acls.can(current, caller, "edit-acl"):
                raise forbidden(job_id)
            if current.get("state") in FINAL_STATES:
                raise ApiError(409, f"{job_id} is in a final state and cannot be edited", job_id)
            if (
                "version" in data
                and data["version"] != current.get("version")
                and not caller.is_admin
            ):
                # The version picks which engine runs the job: a user could otherwise send
                # it to no engine at all (released for a newer one forever).
                raise ApiError(403, "only administrators can change a job's version", job_id)
            doc = {**current, **data}
            for name in select:
                if name not in data and name not in REQUIRED:
                    doc.pop(name, None)
            if "not-before" in data:
                _check_not_before(doc)
            doc = self._transition(current, doc, now, caller)
            check_document_size(doc)
            return doc

        result = self.store.update(job_id, change)
        if result is None:
            raise not_found(job_id)
        self.changes.changed(job_id)
        return self.present(result, caller)

    @staticmethod
    def _transition(current: Doc, doc: Doc, now: str, caller: Caller) -> Doc:
        """The timestamps and derived values an edit implies."""
        doc["updated"] = now
        doc["updated-by"] = caller.identity
        if doc.get("state") != "QUEUED":
            doc.pop("not-before", None)  # no longer waiting (running, cancelled, ...)
        if doc.get("state") == "RUNNING" and "started" not in current:
            doc["started"] = now
        if "status-message" in doc and doc.get("status-message") != current.get("status-message"):
            doc["time-of-status-change"] = now
        if doc.get("state") in FINAL_STATES:
            doc["progress"] = 100
            if "started" in doc:
                elapsed = datetime.now(UTC) - parse_time(doc["started"])
                doc["duration"] = max(0, int(elapsed.total_seconds()))
        return doc

    def delete(self, job_id: str, caller: Caller) -> None:
        self._load(job_id, caller, "delete")
        if not self.store.delete(job_id):
            raise not_found(job_id)
        self.changes.changed(job_id)

    def delete_bulk(self, query: Query, caller: Caller) -> dict[str, Any]:
        if not caller.is_admin:
            raise forbidden("job")
        if query.filter is None:
            raise bad_request("a bulk delete needs a non-empty filter")
        deleted = self.store.delete_matching(query, None)
        return {
            "status": 200,
            "message": f"{deleted} job(s) deleted",
            "deleted": deleted,
            "timed_out": False,
            "total": deleted,
            "failures": [],
        }

    # -- operations -----------------------------------------------------------------------

    def operation(self, job_id: str, name: str, caller: Caller) -> dict[str, Any]:
        handlers: dict[str, Callable[[str, Caller], dict[str, Any]]] = {
            "cancel": self._cancel,
            "timeout": self._timeout,
            "retry": self._retry,
            "get-context": self._get_context,
        }
        handler = handlers.get(name)
        if handler is None:
            raise ApiError(404, f"unknown operation '{name}' on {job_id}", job_id)
        return handler(job_id, caller)

    def _finish(
        self, job_id: str, caller: Caller, allowed: tuple[str, ...], right: str, message: str
    ) -> Doc:
        now = now_iso()

        def change(current: Doc) -> Doc:
            if right == "admin":
                if not caller.is_admin:
                    raise forbidden(job_id)
            elif not acls.can(current, caller, right):
                raise forbidden(job_id)
            if current.get("state") not in allowed:
                raise ApiError(
                    409, f"{job_id} is {current.get('state')}: operation not allowed", job_id
                )
            doc = {**current, "state": "CANCELED", "status-message": message}
            return self._transition(current, doc, now, caller)

        result = self.store.update(job_id, change)
        if result is None:
            raise not_found(job_id)
        self.changes.changed(job_id)
        return result

    def _cancel(self, job_id: str, caller: Caller) -> dict[str, Any]:
        doc = self._finish(job_id, caller, UNFINISHED_STATES, "manage", "cancelled by user")
        if str(doc.get("action", "")).startswith("bulk"):
            child = {
                "action": "cancel_children_jobs",
                "priority": 10,
                "target-resource": {"href": job_id},
                "acl": doc["acl"],
            }
            self.add(child, _SYSTEM)
        return {"status": 200, "message": f"{job_id} canceled", "resource-id": job_id}

    def _timeout(self, job_id: str, caller: Caller) -> dict[str, Any]:
        self._finish(job_id, caller, ("RUNNING",), "admin", "timed out")
        return {"status": 200, "message": f"{job_id} timed out", "resource-id": job_id}

    def _retry(self, job_id: str, caller: Caller) -> dict[str, Any]:
        """Queue a FAILED job again as one more attempt, keeping its attempts and their
        errors; the scheduler queues it at its next tick (it is due at once)."""
        now = now_iso()

        def change(current: Doc) -> Doc:
            if not acls.can(current, caller, "manage"):
                raise forbidden(job_id)
            if current.get("state") != "FAILED":
                raise ApiError(
                    409, f"{job_id} is {current.get('state')}: only a FAILED job is retried", job_id
                )
            doc = {k: v for k, v in current.items() if k not in ("return-code", "duration")}
            attempt = doc.get("attempts", 0) + 1 if isinstance(doc.get("attempts"), int) else 1
            doc.update(
                {
                    "state": "QUEUED",
                    "progress": 0,
                    "status-message": f"queued again by {caller.identity} for attempt {attempt}",
                }
            )
            if _queued(doc):
                doc["not-before"] = now
            return self._transition(current, doc, now, caller)

        try:
            updated = self.store.update(job_id, change)
        except UniqueKeyTaken as exc:
            holder = self.unfinished_holder(exc.key)
            by = holder["id"] if holder is not None else "another job"
            raise ApiError(
                409, f"{job_id} cannot be queued again: {by} holds its unique-key", job_id
            ) from None
        if updated is None:
            raise not_found(job_id)
        self.changes.changed(job_id)
        return {"status": 200, "message": f"{job_id} queued again", "resource-id": job_id}

    # -- the scheduler ----------------------------------------------------------------------

    def queue_due(self, caller: Caller, limit: int) -> dict[str, Any]:
        """Queue up to ``limit`` waiting jobs that are due, earliest first (the elected
        scheduler calls this every tick: nuvla_job/scheduler.py). ``more``: whether the
        batch was full, so that more may be due."""
        if not caller.is_admin:
            raise forbidden("job")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DUE_BATCH:
            raise bad_request(f"'limit' must be an integer from 1 to {MAX_DUE_BATCH}")
        now = now_iso()
        docs = self.store.claim_due(now, limit)
        if not docs:
            return {"queued": 0, "more": False}
        items = [(d["id"], d.get("priority", DEFAULT_PRIORITY)) for d in docs]
        try:
            paths = self.queue.put_many(items)
        except QueueUnavailable as exc:
            paths = exc.created
            rest = [d["id"] for d in docs[len(paths) :]]
            if exc.certain:
                self.store.unclaim(rest, now)
            else:
                # Their entries may exist: the marks stay, and the next start of the job API
                # finishes them (recover_pending looks for an entry before making one).
                log.error("queueing %d due job(s) failed midway: %s", len(rest), exc)
            for doc, path in zip(docs, paths, strict=False):
                self.store.mark_enqueued(doc["id"], path)
                self.changes.changed(doc["id"])
            raise ApiError(503, f"the job queue is unavailable: {exc}") from exc
        for doc, path in zip(docs, paths, strict=True):
            self.store.mark_enqueued(doc["id"], path)
            self.changes.changed(doc["id"])
        return {"queued": len(paths), "more": len(docs) == limit}

    def _get_context(self, job_id: str, caller: Caller) -> dict[str, Any]:
        if not caller.is_admin:
            raise forbidden(job_id)
        doc = self._load(job_id, caller, "view")
        context: dict[str, Any] = {}
        # This server stores only jobs: the context holds the target when it is one of them.
        target = (doc.get("target-resource") or {}).get("href", "")
        if target.startswith("job/"):
            target_doc = self.store.get(target)
            if target_doc is not None:
                context[target] = target_doc
        return context

    # -- waiting for changes -------------------------------------------------------------

    def wait(self, body: Any, caller: Caller) -> dict[str, Any]:
        """``POST job/wait``: the followed jobs whose version differs from the caller's,
        as soon as there is one, or nothing after ``timeout`` seconds (see changes.py).

        Body: ``{"jobs": {id: etag or null, ...}, "timeout": seconds, "watch": token,
        "seq": n}`` (watch and seq optional). Answer: ``{"jobs": [{"etag", "job"}, ...],
        "missing": [ids gone or not visible], "superseded": bool}``.
        """
        self._check_query_right(caller)
        known, timeout, watch, seq = _wait_request(body)
        waiter = self.changes.register(known, (caller.identity, watch) if watch else None, seq)
        found: list[dict[str, Any]] = []
        missing: list[str] = []
        try:
            deadline = time.monotonic() + timeout
            check = list(known)
            while True:
                found, missing = self._versions(check, known, caller)
                remaining = deadline - time.monotonic()
                if found or missing or waiter.done or remaining <= 0:
                    break
                notified = waiter.wait(min(remaining, waits.RECHECK))
                # Woken by a write: read only what was written. Else (the recheck time, a
                # stop, a newer request): read them all.
                check = [job_id for job_id in known if job_id in notified] or list(known)
        finally:
            self.changes.unregister(waiter)
        return {"jobs": found, "missing": missing, "superseded": waiter.superseded}

    def _versions(
        self, ids: list[str], known: dict[str, str | None], caller: Caller
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """(the jobs of ``ids`` whose etag is not the known one, the ids not found)."""
        principals = None if caller.is_admin else caller.claims
        docs: dict[str, Doc] = {}
        for start in range(0, len(ids), _READ_CHUNK):
            chunk = tuple(ids[start : start + _READ_CHUNK])
            _, page = self.store.search(Query(filter=Comparison("id", "=", chunk)), principals)
            docs.update((doc["id"], doc) for doc in page)
        found = []
        for job_id in ids:
            doc = docs.get(job_id)
            if doc is not None and (version := waits.etag(doc)) != known[job_id]:
                found.append({"etag": version, "job": self.present(doc, caller)})
        return found, [job_id for job_id in ids if job_id not in docs]


# Adds of one unique-key tried while its holder keeps ending between the insert and the look.
_UNIQUE_ATTEMPTS = 3
# Ids read by one query of wait(): far below SQLite's parameter limit.
_READ_CHUNK = 1000
_WAIT_KEYS = frozenset({"jobs", "timeout", "watch", "seq"})


def _wait_request(body: Any) -> tuple[dict[str, str | None], float, str | None, int]:
    """The checked parts of a wait request: (known etags by id, timeout, watch, seq)."""
    if not isinstance(body, dict):
        raise bad_request("a wait request is a JSON object")
    unknown = sorted(set(body) - _WAIT_KEYS)
    if unknown:
        raise bad_request(f"unknown key(s) in the wait request: {', '.join(unknown)}")
    jobs = body.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise bad_request("'jobs' must be a non-empty map of job id to etag (or null)")
    if len(jobs) > waits.MAX_JOBS:
        raise bad_request(f"at most {waits.MAX_JOBS} jobs can be followed by one request")
    for job_id, version in jobs.items():
        if not job_id.startswith("job/") or len(job_id) > 200:
            raise bad_request(f"'{job_id[:100]}' is not a job id")
        if version is not None and not (isinstance(version, str) and len(version) <= 100):
            raise bad_request(f"the etag of {job_id} must be a string or null")
    timeout = body.get("timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise bad_request("'timeout' must be a number of seconds")
    if not 0 <= timeout <= waits.MAX_WAIT:
        raise bad_request(f"'timeout' must be between 0 and {waits.MAX_WAIT:g} seconds")
    watch = body.get("watch")
    if watch is not None and not (isinstance(watch, str) and 0 < len(watch) <= 100):
        raise bad_request("'watch' must be a non-empty string of at most 100 characters")
    seq = body.get("seq", 0)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise bad_request("'seq' must be a non-negative integer")
    return jobs, float(timeout), watch, seq


_SYSTEM = Caller("internal", frozenset({"group/nuvla-admin"}))

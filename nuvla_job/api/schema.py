"""The job resource's attributes: their types, and which of them stores index.

One table of facts shared by validation (validation.py, jobs.py), the query language
(filters.py, query.py, evaluate.py) and every store (sqlite.py), so that they never disagree.
"""

from __future__ import annotations

EXECUTION_MODES = ("push", "pull", "mixed")

# Attribute name -> type tag. Types: str, int, number, bool, date, href (a map {"href": str}),
# hrefs (a list of such maps), strs (a list of strings), map (free-form object), acl.
ATTRIBUTES: dict[str, str] = {
    "id": "str",
    "resource-type": "str",
    "name": "str",
    "description": "str",
    "tags": "strs",
    "parent": "str",
    "created": "date",
    "updated": "date",
    "created-by": "str",
    "updated-by": "str",
    "acl": "acl",
    "operations": "any",
    "state": "str",
    "action": "str",
    "progress": "int",
    "execution-mode": "str",
    "version": "int",
    "target-resource": "href",
    "affected-resources": "hrefs",
    "return-code": "int",
    "status-message": "str",
    "time-of-status-change": "date",
    "parent-job": "str",
    "nested-jobs": "strs",
    "priority": "int",
    "started": "date",
    "duration": "int",
    "expiry": "date",
    "output": "str",
    "payload": "str",
    # This project's own attributes (a Nuvla server has none of them, and the engine sends
    # them only to a job API whose documents carry `attempts`: nuvla_job/attempts.py).
    "attempts": "int",  # attempts started; 0 when added
    "attempt-errors": "strs",  # one line per failed attempt
    "not-before": "date",  # QUEUED and waiting for the scheduler until then
    "retry": "retry",  # the job's own retry policy: {"retries", "backoff", "max-backoff"}
    # At most one unfinished job holds a key: adding another answers that one (store.py).
    "unique-key": "str",
}

# The longest unique-key accepted.
MAX_UNIQUE_KEY = 512

# The keys of a `retry` policy, the most retries and the longest wait it may ask for.
RETRY_KEYS = ("retries", "backoff", "max-backoff")
MAX_RETRIES = 1000
MAX_BACKOFF = 30 * 86400.0

DATE_ATTRIBUTES = frozenset(k for k, v in ATTRIBUTES.items() if v == "date")

ACL_RIGHTS = (
    "owners",
    "view-meta",
    "view-data",
    "view-acl",
    "edit-meta",
    "edit-data",
    "edit-acl",
    "manage",
    "delete",
)

# Filter paths (attribute names joined with "/") whose value is a list: a comparison on them
# holds when it holds for any element, as in Elasticsearch, which backs Nuvla.
LIST_PATHS = frozenset(
    {"tags", "nested-jobs", "affected-resources/href"} | {f"acl/{r}" for r in ACL_RIGHTS}
)

# Filter paths every store keeps in a column of its own, indexed, beside the JSON document
# (which stays the source of truth), with the one type of value the column holds: "str" or
# "int". Any other value there reads as null in filters, sorting and aggregations, in every
# store and in evaluate.py. `id` is the primary key.
INDEXED: dict[str, str] = {
    "id": "str",
    "state": "str",
    "action": "str",
    "created": "str",
    "updated": "str",
    "priority": "int",
    "target-resource/href": "str",
    "parent-job": "str",
    "execution-mode": "str",
    # Only waiting jobs have one (the scheduler's due query; a partial index in SQLite).
    "not-before": "str",
    # The store's constraint: unique among unfinished jobs (store.UniqueKeyTaken).
    "unique-key": "str",
    # The dashboard's per-action table and fleet charts (store.JobStore.updated_counts).
    "duration": "int",
}

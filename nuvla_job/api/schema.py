"""The job resource's attributes: their types, and how the store indexes them.

One table of facts shared by validation (jobs.py), the filter compiler (filters.py)
and the SQLite store (sqlite.py), so that the three never disagree.
"""

from __future__ import annotations

RESOURCE_TYPE = "job"
COLLECTION = "job"

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
}

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

# Filter paths stored in their own indexed SQLite column, beside the JSON document (which
# stays the source of truth). Path -> (column name, SQL type). `id` is the primary key.
INDEXED_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("id", "TEXT"),
    "state": ("state", "TEXT"),
    "action": ("action", "TEXT"),
    "created": ("created", "TEXT"),
    "updated": ("updated", "TEXT"),
    "priority": ("priority", "INTEGER"),
    "target-resource/href": ("target_href", "TEXT"),
    "parent-job": ("parent_job", "TEXT"),
    "execution-mode": ("execution_mode", "TEXT"),
}

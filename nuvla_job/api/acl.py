"""ACL checks on job documents, with Nuvla's meaning of each right."""

from __future__ import annotations

from typing import Any

from .identity import ADMIN_GROUP, Caller

# Each right a caller may need, and the ACL entries that grant it (owners grant everything;
# the stronger edit rights imply the weaker ones and viewing).
GRANTED_BY: dict[str, tuple[str, ...]] = {
    "view": (
        "owners",
        "view-meta",
        "view-data",
        "view-acl",
        "edit-meta",
        "edit-data",
        "edit-acl",
        "manage",
        "delete",
    ),
    "edit": ("owners", "edit-meta", "edit-data", "edit-acl"),
    "edit-acl": ("owners", "edit-acl"),
    "manage": ("owners", "manage", "edit-acl"),
    "delete": ("owners", "delete", "edit-acl"),
}


def can(doc: dict[str, Any], caller: Caller, right: str) -> bool:
    """True when the caller holds ``right`` on the document."""
    if caller.is_admin:
        return True
    acl = doc.get("acl") or {}
    for entry in GRANTED_BY[right]:
        if caller.claims.intersection(acl.get(entry) or ()):
            return True
    return False


def default_acl() -> dict[str, list[str]]:
    return {"owners": [ADMIN_GROUP]}


def normalise(acl: dict[str, list[str]]) -> dict[str, list[str]]:
    """Admins always own every job; entries are de-duplicated and sorted."""
    result = {right: sorted(set(principals)) for right, principals in acl.items() if principals}
    result["owners"] = sorted({ADMIN_GROUP, *result.get("owners", [])})
    return result

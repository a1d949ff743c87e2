"""A bulk job's result as Nuvla shows it: the ``BulkActionResult`` JSON status message.

Nuvla's bulk actions (``bulk_stop_deployment``, ...) write the result of their children into
the parent's ``status-message`` as one JSON object, and the Nuvla UI reads it. The monitor
(nuvla_job/actions/monitor_bulk_job.py) reads and rewrites it; :class:`BulkResult` keeps the
text byte for byte as upstream's writes it: the same keys in the same order, the error
reasons sorted by their count.

The monitor finds the parents to follow by the ``monitor`` tag (:data:`MONITOR_TAG`), set by a
parent just before it leaves its job RUNNING (:class:`~nuvla_job.outcome.LeaveRunning`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The tag a running bulk parent carries while a monitor is to follow it (upstream's).
MONITOR_TAG = "monitor"
# The reasons the monitor gives for children that did not succeed (upstream's texts).
JOB_FAILED_REASON = "Job failed"
JOB_CANCELED_REASON = "Job canceled"


@dataclass
class _Reason:
    """One reason some actions did not succeed: its category and the resources it hit."""

    category: str  # "failed" or "skipped"
    count: int = 0
    # resource id -> {"id", "count"[, "name"][, "message"]}
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class BulkResult:
    """What a bulk job did to each of its resources."""

    total_actions: int = 0
    failed_count: int = 0
    skipped_count: int = 0
    success: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    jobs_count: int = 0
    reasons: dict[str, _Reason] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: object) -> BulkResult | None:
        """The result in a status message; None when it holds none (not a JSON object)."""
        if not isinstance(text, str):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        result = cls(
            total_actions=data.get("total_actions", 0),
            failed_count=data.get("failed_count", 0),
            skipped_count=data.get("skipped_count", 0),
            success=list(data.get("success", [])),
            queued=list(data.get("queued", [])),
            running=list(data.get("running", [])),
            jobs_count=data.get("jobs_count", 0),
        )
        for reason in data.get("error_reasons", []):
            result.reasons[reason["reason"]] = _Reason(
                reason.get("category", "failed"),
                reason.get("count", 0),
                {entry["id"]: dict(entry) for entry in reason.get("data", [])},
            )
        return result

    def add_success(self, resource_id: str) -> None:
        if resource_id not in self.success:
            self.success.append(resource_id)

    def has_failed(self, reason: str, resource_id: str) -> bool:
        found = self.reasons.get(reason)
        return found is not None and resource_id in found.resources

    def fail(self, reason: str, resource_id: str) -> None:
        """Count one failure of ``resource_id`` for ``reason``."""
        self.failed_count += 1
        entry = self.reasons.setdefault(reason, _Reason("failed"))
        entry.count += 1
        resource = entry.resources.setdefault(resource_id, {"id": resource_id, "count": 0})
        resource["count"] += 1

    def to_dict(self) -> dict[str, Any]:
        # Most frequent first; equal counts keep their order (Python's sort is stable).
        reasons = sorted(self.reasons.items(), key=lambda item: item[1].count, reverse=True)
        return {
            "total_actions": self.total_actions,
            "failed_count": self.failed_count,
            "skipped_count": self.skipped_count,
            "success": self.success,
            "success_count": len(self.success),
            "queued_count": len(self.queued),
            "running_count": len(self.running),
            "running": self.running,
            "queued": self.queued,
            "error_reasons": [
                {
                    "reason": name,
                    "count": reason.count,
                    "category": reason.category,
                    "data": sorted(
                        reason.resources.values(), key=lambda r: r["count"], reverse=True
                    ),
                }
                for name, reason in reasons
            ],
            "jobs_count": self.jobs_count,
        }

    def to_json(self) -> str:
        # json.dumps' default separators: the text upstream writes.
        return json.dumps(self.to_dict())

"""Job: the upstream-compatible, read-only view of one job document, with its updates.

Actions see a ``Job`` exactly as upstream actions do: a read-only dict of the document
plus ``api``, ``id``, ``set_progress``, ``update_job``, ``context``, ``payload``, ... Every
update goes through the job API and refreshes the view with the stored document.

An upstream action module's ``from ..job import JOB_SUCCESS, Job`` becomes
``from nuvla_job.job import JOB_SUCCESS, Job``: the state constants are re-exported here
under upstream's names (their one definition is :mod:`nuvla_job.states`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import requests
from nuvla.api import Api, NuvlaError
from nuvla.api.models import CimiResource

from .states import (
    FINAL_STATES,
    JOB_CANCELED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCESS,
    STATES,
)

if TYPE_CHECKING:
    from .zk import ZkSettings

__all__ = [
    "JOB_CANCELED",
    "JOB_FAILED",
    "JOB_QUEUED",
    "JOB_RUNNING",
    "JOB_SUCCESS",
    "STATES",
    "ApiUnavailable",
    "Job",
    "JobConflict",
    "JobError",
    "JobMalformed",
    "JobNotFound",
]

log = logging.getLogger(__name__)

# Where upstream's executor says a NuvlaEdge keeps its shared files when --nuvlaedge-fs is
# not given; its actions read it as job.nuvlaedge_shared_path.
DEFAULT_NUVLAEDGE_FS = "/srv/nuvlaedge/shared/"
# What upstream writes for an empty status message.
EMPTY_STATUS_MESSAGE = "< status message empty >"

# The job document version this engine runs (job-resource.md: default `version` 2).
SUPPORTED_VERSION = 2
NOT_FOUND_RETRY_DELAY = 2.0


class JobError(Exception):
    """Base of the ways fetching or updating a job can fail."""


class JobNotFound(JobError):
    pass


class JobMalformed(JobError):
    pass


class ApiUnavailable(JobError):
    """The job API is unreachable or answered 5xx: the job goes back to the queue."""


class JobConflict(JobError):
    """The job API refused the update (409): the job is final (e.g. cancelled meanwhile)."""


class CredentialsRefused(JobError):
    """The job API refused our credentials (401/403) even after the client logged in again
    (an expired session whose new login failed, e.g. on a full disk)."""


def classify_error(exc: Exception, job_id: str) -> JobError:
    """The JobError a failed call to the job API about `job_id` stands for."""
    if isinstance(exc, NuvlaError) and exc.response is not None:
        status = exc.response.status_code
        if status == 404:
            return JobNotFound(job_id)
        if status == 409:
            return JobConflict(f"{job_id}: {exc.reason}")
        if status in (401, 403):
            return CredentialsRefused(f"job API answered {status}: {exc.reason}")
        if status >= 500:
            return ApiUnavailable(f"job API answered {status}: {exc.reason}")
        return JobError(f"job API answered {status}: {exc.reason}")
    if isinstance(exc, requests.RequestException | OSError):
        return ApiUnavailable(f"job API unreachable: {type(exc).__name__}")
    return JobError(str(exc))


def _check_document(job_id: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("id") != job_id:
        raise JobMalformed(f"{job_id}: the job API returned something else than the job")
    for key in ("action", "state"):
        if not isinstance(data.get(key), str):
            raise JobMalformed(f"{job_id}: the job has no valid '{key}'")
    if not isinstance(data.get("version", SUPPORTED_VERSION), int):
        raise JobMalformed(f"{job_id}: the job's 'version' is not an integer")
    return data


class Job(dict):
    """A job document as a read-only dict, with the update methods actions use."""

    def __init__(
        self,
        api: Api,
        data: dict[str, Any],
        nuvlaedge_fs: str | None = None,
        executor_name: str | None = None,
        zookeeper: ZkSettings | None = None,
    ) -> None:
        super().__init__(data)
        self.api = api
        self.nuvlaedge_fs = nuvlaedge_fs
        self.executor_name = executor_name
        # The executor's ZooKeeper, for actions that need a client of their own.
        self.zookeeper = zookeeper
        self._context: dict[str, Any] | None = None

    @classmethod
    def fetch(cls, api: Api, job_id: str, retry_not_found: bool = True, **kw: Any) -> Job:
        """Get the job; a 404 is retried once after a short wait (the add may be in flight)."""
        for attempt in (1, 2):
            try:
                return cls.from_document(api, job_id, api.get(job_id).data, **kw)
            except (NuvlaError, requests.RequestException, OSError) as exc:
                error = classify_error(exc, job_id)
                if isinstance(error, JobNotFound) and retry_not_found and attempt == 1:
                    time.sleep(NOT_FOUND_RETRY_DELAY)
                    continue
                raise error from exc
        raise JobNotFound(job_id)  # pragma: no cover - the loop always returns or raises

    @classmethod
    def from_document(cls, api: Api, job_id: str, data: Any, **kw: Any) -> Job:
        """The job `job_id` from a document the job API returned for it (JobMalformed when
        it is not one)."""
        return cls(api, _check_document(job_id, data), **kw)

    # -- read-only dict ---------------------------------------------------------------------

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Job is read-only: use job.update_job(...) to change it")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def _refresh(self, data: dict[str, Any]) -> None:
        dict.clear(self)
        dict.update(self, data)

    # -- upstream interface -----------------------------------------------------------------

    @property
    def id(self) -> str:
        return self["id"]

    @property
    def nuvlaedge_shared_path(self) -> str:
        """Upstream's name of ``--nuvlaedge-fs`` (with upstream's default)."""
        return self.nuvlaedge_fs or DEFAULT_NUVLAEDGE_FS

    @property
    def cimi_job(self) -> CimiResource:
        """The job as the ``nuvla-api`` resource upstream's actions pass to ``api.operation``."""
        return CimiResource(dict(self))

    def get_cimi_job(self, job_uri: str) -> CimiResource:
        """Get a job as upstream does: a 404 is asked again once, after a short wait."""
        for attempt in (1, 2):
            try:
                return self.api.get(job_uri)
            except NuvlaError as exc:
                error = classify_error(exc, job_uri)
                if not isinstance(error, JobNotFound) or attempt == 2:
                    raise error from exc
                time.sleep(NOT_FOUND_RETRY_DELAY)
        raise JobNotFound(job_uri)  # pragma: no cover - the loop always returns or raises

    def is_in_final_state(self) -> bool:
        return self.get("state") in FINAL_STATES

    if not TYPE_CHECKING:  # hidden from mypy, which would accept any attribute otherwise

        def __getattr__(self, name: str) -> Any:
            # Upstream's Job reads the document's attributes as Python attributes too.
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    def get_api(self, authn_info: dict[str, Any]) -> Api:
        """A client of the job API acting as the user of ``authn_info``
        (``{"user-id", "active-claim", "claims"}``), through the nuvla-authn-info header."""
        header = " ".join(
            [authn_info["user-id"], authn_info["active-claim"], *authn_info["claims"]]
        )
        return Api(
            endpoint=self.api.endpoint,
            insecure=not self.api.session.verify,
            persist_cookie=False,
            reauthenticate=True,
            authn_header=header,
        )

    def get_user_api(self) -> Api:
        """A client acting as the user who created the job (the payload's ``authn-info``)."""
        return self.get_api(self.payload["authn-info"])

    @property
    def is_in_pull_mode(self) -> bool:
        return self.get("execution-mode") == "pull"

    @property
    def target_resource_href(self) -> str | None:
        target = self.get("target-resource")
        return target.get("href") if isinstance(target, dict) else None

    @property
    def payload(self) -> Any:
        text = self.get("payload")
        if not text:
            return {}
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            log.warning("%s: payload is not JSON; actions see it as {}", self.id)
            return {}

    @property
    def context(self) -> dict[str, Any]:
        if self._context is None:
            try:
                self._context = self.api.operation(self, "get-context").data
            except (NuvlaError, requests.RequestException, OSError) as exc:
                raise classify_error(exc, self.id) from exc
        return self._context

    def _edit(self, data: dict[str, Any], select: str | None = None) -> None:
        try:
            kwargs = {"select": select} if select else {}
            self._refresh(self.api.edit(self.id, data, **kwargs).data)
        except (NuvlaError, requests.RequestException, OSError) as exc:
            raise classify_error(exc, self.id) from exc

    def update_job(
        self,
        state: str | None = None,
        return_code: int | None = None,
        status_message: str | None = None,
        progress: int | None = None,
        execution_mode: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        """Write the given attributes of the job in one edit."""
        data: dict[str, Any] = {}
        if state is not None:
            data["state"] = state
        if return_code is not None:
            data["return-code"] = return_code
        if status_message is not None:
            data["status-message"] = str(status_message)
        if progress is not None:
            data["progress"] = progress
        if execution_mode is not None:
            data["execution-mode"] = execution_mode
        if tags is not None:
            data["tags"] = tags
        if data:
            self._edit(data)

    def write(self, data: dict[str, Any]) -> None:
        """Write these attributes as given, in one edit: the engine's own bookkeeping (a new
        attempt with its count, a retry's ``not-before``), which update_job does not name."""
        if data:
            self._edit(data)

    def set_progress(self, progress: int) -> None:
        if not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValueError(f"progress must be an int from 0 to 100, got {progress!r}")
        self.update_job(progress=progress)

    def set_status_message(self, message: Any) -> None:
        self.update_job(status_message=str(message) if message else EMPTY_STATUS_MESSAGE)

    def set_return_code(self, return_code: int) -> None:
        if not isinstance(return_code, int) or isinstance(return_code, bool):
            raise TypeError(f"return_code must be an int, not {type(return_code).__name__}")
        self.update_job(return_code=return_code)

    def set_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        self.update_job(state=state)

    def add_affected_resources(self, hrefs: list[str]) -> None:
        current = list(self.get("affected-resources", []))
        known = {r.get("href") for r in current}
        new = [{"href": h} for h in hrefs if h not in known]
        if new:
            self._edit({"affected-resources": current + new})

    def add_affected_resource(self, href: str) -> None:
        self.add_affected_resources([href])

    def add_nested_jobs(self, job_ids: list[str]) -> None:
        current = list(self.get("nested-jobs", []))
        new = [j for j in job_ids if j not in current]
        if new:
            self._edit({"nested-jobs": current + new})

    def add_nested_job(self, job_id: str) -> None:
        self.add_nested_jobs([job_id])

"""The public Python client: submit jobs, wait for their results, follow their progress,
cancel them.

    from nuvla_job.client import Client

    client = Client.from_credentials_file("/var/lib/nuvla-job/admin-credentials.json")
    job = client.submit("sleep", payload={"seconds": 2})
    for update in job.progress():        # each change of state, progress or message
        print(update.state, update.progress)
    result = job.wait(timeout=60)         # JobResult(state, return_code, status_message, ...)

A :class:`Client` is built from an endpoint and credentials, from the engine's environment
variables (:meth:`Client.from_environment`, also what ``Client()`` does), or from the admin
credentials file the job API writes (:meth:`Client.from_credentials_file`). It is safe to
share between threads, and cooperative under gevent once ``gevent.monkey.patch_all()`` has
run (its threads and sockets are then greenlets and gevent sockets).

Waiting costs the job API little: every job the client's threads wait for is followed by
one long-poll request at a time (``POST /api/job/wait``, see nuvla_job/api/changes.py),
which the job API answers when one of them changes or after :data:`LONG_POLL` seconds. A
thousand waiting jobs in one process are one open connection and, while nothing changes,
one request every 20 seconds; changes cost at most one answer and the next request each,
fewer as the client lets :data:`GATHER` seconds of changes gather before asking again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import requests.adapters
from nuvla.api import Api

from .states import FINAL_STATES, JOB_SUCCESS
from .timeutil import format_time

__all__ = [
    "Client",
    "JobHandle",
    "JobResult",
    "Progress",
    "ClientError",
    "JobNotFound",
    "JobFailed",
    "WaitTimeout",
    "BatchError",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:8200"
# Seconds the job API holds one wait request while nothing changes (it allows up to 60).
LONG_POLL = 20.0
# Seconds between an answer carrying changes and the next long poll (see _Watcher._run).
GATHER = 0.05
# Seconds a request may take beyond what the job API is asked to hold it.
REQUEST_TIMEOUT = 30.0
# Connections kept open to the job API (threads beyond it open and drop their own).
POOL_SIZE = 32
# Waits between attempts while the job API cannot be reached (doubling, at most the cap).
RETRY_FIRST, RETRY_MAX = 0.5, 10.0

Doc = dict[str, Any]


# -- errors and results ---------------------------------------------------------------------


class ClientError(Exception):
    """The job API refused a request or could not be reached; ``status`` is its HTTP status
    (None when there was no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class JobNotFound(ClientError):
    """No such job, or not one these credentials may see."""


class WaitTimeout(ClientError, TimeoutError):
    """The job did not reach a final state (or change) within the time given."""


class JobFailed(ClientError):
    """``wait(raise_on_failure=True)`` on a job that ended FAILED or CANCELED; ``result``
    says how."""

    def __init__(self, result: JobResult) -> None:
        message = f"{result.id} {result.state}"
        if result.return_code is not None:
            message += f" (return code {result.return_code})"
        if result.status_message:
            message += f": {result.status_message.strip().splitlines()[0][:200]}"
        super().__init__(message)
        self.result = result


class BatchError(ClientError):
    """Some jobs of a :meth:`Client.submit_many` were not created: ``created`` holds the
    handles of the others (in order), ``errors`` (index in the batch, error) the failures."""

    def __init__(self, created: list[JobHandle], errors: list[tuple[int, ClientError]]) -> None:
        first = errors[0]
        super().__init__(
            f"{len(errors)} of {len(created) + len(errors)} job(s) not created "
            f"(first: #{first[0]}: {first[1]})"
        )
        self.created = created
        self.errors = errors


@dataclass(frozen=True)
class JobResult:
    """How a job ended."""

    id: str
    state: str  # SUCCESS, FAILED or CANCELED
    return_code: int | None
    status_message: str | None
    duration: int | None  # seconds from RUNNING to the end, when it ran
    job: Doc = field(repr=False)  # the whole job document

    @property
    def succeeded(self) -> bool:
        return self.state == JOB_SUCCESS

    @classmethod
    def of(cls, doc: Doc) -> JobResult:
        return cls(
            doc["id"],
            doc.get("state", ""),
            doc.get("return-code"),
            doc.get("status-message"),
            doc.get("duration"),
            doc,
        )


@dataclass(frozen=True)
class Progress:
    """One step of a job as :meth:`JobHandle.progress` reports it."""

    state: str
    progress: int
    status_message: str | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def of(cls, doc: Doc) -> Progress:
        return cls(doc.get("state", ""), doc.get("progress", 0), doc.get("status-message"))


# -- one job --------------------------------------------------------------------------------


class JobHandle:
    """A job of the job API, as last seen by this client (``refresh()`` to look again)."""

    def __init__(
        self, client: Client, job_id: str, doc: Doc | None = None, created: bool | None = None
    ) -> None:
        self.client = client
        self.id = job_id
        # False when the submit found an unfinished job holding its unique_key, and this is
        # that job; None for a handle not made by a submit.
        self.created = created
        self._doc = doc
        self._etag: str | None = None

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.state or '?'}>"

    @property
    def doc(self) -> Doc | None:
        """The job document as last seen (None before the first look)."""
        return self._doc

    @property
    def state(self) -> str | None:
        """The state as last seen (None before the first look)."""
        return None if self._doc is None else self._doc.get("state")

    def _seen(self, etag: str, doc: Doc) -> None:
        self._etag, self._doc = etag, doc

    def refresh(self) -> JobHandle:
        """Read the job now (one request); returns the handle."""
        self._seen(*self.client._read(self.id))
        return self

    def _next(self, deadline: float | None, waiting_for: str, timeout: float | None) -> None:
        """Wait for the next version of the job (one the handle has not seen)."""
        try:
            self._seen(*self.client._watcher.next_version(self.id, self._etag, deadline))
        except _TimedOut as exc:
            state = self.state or "not seen yet"
            message = f"{self.id} still {state} after {timeout:g} s (waiting for {waiting_for})"
            if exc.failure is not None:
                message += f"; the job API could not be reached: {exc.failure}"
            raise WaitTimeout(message) from None

    def wait(self, timeout: float | None = None, *, raise_on_failure: bool = False) -> JobResult:
        """Wait until the job is final and return how it ended.

        ``timeout``: seconds (None: no limit); past it :class:`WaitTimeout`.
        ``raise_on_failure``: a FAILED or CANCELED job raises :class:`JobFailed` (with the
        result) instead of being returned.
        """
        deadline = _deadline(timeout)
        while self._doc is None or self._doc.get("state") not in FINAL_STATES:
            self._next(deadline, "a final state", timeout)
        assert self._doc is not None
        result = JobResult.of(self._doc)
        if raise_on_failure and not result.succeeded:
            raise JobFailed(result)
        return result

    def progress(self, timeout: float | None = None) -> Iterator[Progress]:
        """Each change of the job's state, progress or status message, from the current
        one to the final one; :class:`WaitTimeout` when ``timeout`` seconds pass first."""
        deadline = _deadline(timeout)
        last: Progress | None = None
        if self._doc is None:
            self._next(deadline, "its first look", timeout)
        while True:
            assert self._doc is not None
            step = Progress.of(self._doc)
            if step != last:
                yield step
                last = step
            if step.final:
                return
            self._next(deadline, "its next change", timeout)

    def cancel(self) -> None:
        """Cancel the job (QUEUED or RUNNING); a final job is a :class:`ClientError` (409)."""
        self.client._request("POST", f"{self.id}/cancel")


# -- following many jobs with one request ---------------------------------------------------


class _TimedOut(Exception):
    def __init__(self, failure: Exception | None) -> None:
        self.failure = failure


class _Watcher:
    """The client's one long poll: every job its threads wait for, in one request at a time.

    A wait for a job the request in flight does not follow sends a short request of its own
    (the job's current version, and a higher ``seq`` under the same ``watch`` token), which
    makes the job API answer the one in flight; the next one follows every job.

    One lock guards the state; the watcher thread waits on ``_cond`` (more jobs to follow,
    a close), each followed job's waits on a condition of their own, so an answer wakes only
    the waits of the jobs it carries, and a wait that starts wakes only the watcher (with a
    thousand waits, one condition for all made each change wake every wait, and every wait
    that started again wake them all once more).
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # the watcher thread's
        self._job_conds: dict[str, threading.Condition] = {}  # the waits', by job
        self._versions: dict[str, tuple[str, Doc]] = {}  # the newest (etag, doc) seen
        self._missing: set[str] = set()
        self._interest: Counter[str] = Counter()  # waits in progress, by job
        self._in_flight: frozenset[str] | None = None
        self._superseding = False  # a short request is ending the one in flight
        self._seq = 0
        self._token = uuid.uuid4().hex
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None  # the last failed request, for messages
        self._fatal: ClientError | None = None  # a refusal that ends the waits in progress
        self._closed = False
        self.requests = 0  # wait requests sent (long polls and the short ones)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._wake_all()

    def _wake_all(self) -> None:
        """Wake every wait (the lock held): a close, a refusal that ends them all."""
        for cond in self._job_conds.values():
            cond.notify_all()

    def next_version(
        self, job_id: str, etag: str | None, deadline: float | None
    ) -> tuple[str, Doc]:
        """The job's newest version if its etag is not ``etag``, else the next one."""
        with self._cond:
            if self._closed:
                raise ClientError("the client is closed")
            self._fatal = None
            self._interest[job_id] += 1
            job_cond = self._job_conds.get(job_id)
            if job_cond is None:
                job_cond = self._job_conds[job_id] = threading.Condition(self._lock)
            # The request in flight does not follow this job: end it, so that the next one
            # does (unless that is asked already; then the next one follows this job too).
            nudge = (
                self._in_flight is not None
                and job_id not in self._in_flight
                and not self._superseding
            )
            seq, known = 0, None
            if nudge:
                self._seq += 1
                self._superseding = True
                seq, known = self._seq, self._known(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="nuvla-job-client-watch", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        try:
            if nudge:
                try:
                    self._apply(self._post({job_id: known}, 0, seq))
                except (ClientError, requests.RequestException) as exc:
                    log.debug("%s: first look failed (the long poll will tell): %s", job_id, exc)
            with self._cond:
                while True:
                    if self._fatal is not None:
                        raise self._fatal
                    if job_id in self._missing:
                        raise JobNotFound(f"{job_id} not found", 404)
                    version = self._versions.get(job_id)
                    if version is not None and version[0] != etag:
                        return version
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise _TimedOut(self._failure)
                    if self._closed:
                        raise ClientError("the client is closed")
                    job_cond.wait(remaining)
        finally:
            with self._cond:
                self._interest[job_id] -= 1
                if self._interest[job_id] <= 0:
                    del self._interest[job_id]
                    del self._job_conds[job_id]
                    self._versions.pop(job_id, None)
                    self._missing.discard(job_id)

    def _known(self, job_id: str) -> str | None:
        version = self._versions.get(job_id)
        return None if version is None else version[0]

    def _post(self, jobs: dict[str, str | None], timeout: float, seq: int) -> Doc:
        self.requests += 1
        return self._client._request(
            "POST",
            "job/wait",
            {"jobs": jobs, "timeout": timeout, "watch": self._token, "seq": seq},
            timeout=timeout + REQUEST_TIMEOUT,
        )

    def _apply(self, answer: Doc) -> None:
        with self._cond:
            woken: set[str] = set()
            for item in answer.get("jobs", []):
                doc = item["job"]
                doc.pop("operations", None)
                held = self._versions.get(doc["id"])
                # Answers may cross (a superseded one arriving last): keep the newest.
                if held is None or doc.get("updated", "") >= held[1].get("updated", ""):
                    self._versions[doc["id"]] = (item["etag"], doc)
                    woken.add(doc["id"])
            missing = {i for i in answer.get("missing", []) if i in self._interest}
            self._missing.update(missing)
            self._failure = None
            for job_id in woken | missing:
                cond = self._job_conds.get(job_id)
                if cond is not None:
                    cond.notify_all()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._closed and not (set(self._interest) - self._missing):
                    self._cond.wait()
                if self._closed:
                    return
                self._seq += 1
                seq = self._seq
                jobs = {i: self._known(i) for i in self._interest if i not in self._missing}
                self._in_flight = frozenset(jobs)
                self._superseding = False
            try:
                answer = self._post(jobs, LONG_POLL, seq)
            except (ClientError, requests.RequestException) as exc:
                failures += 1
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1))
                with self._cond:
                    self._in_flight = None
                    self._failure = exc
                    if isinstance(exc, ClientError) and not _transient(exc):
                        self._fatal = exc
                        self._wake_all()
                    log.debug("wait request failed (%s): next in %.1f s", exc, delay)
                    self._cond.wait(delay)  # close() ends it
                continue
            with self._cond:
                self._in_flight = None
            failures = 0
            self._apply(answer)
            if answer.get("jobs") or answer.get("missing"):
                # Let the next moment's changes gather on the job API, answered by one
                # request: each request reads every job it follows, so a request per change
                # of a thousand jobs cost the job API more than polling them would.
                until = time.monotonic() + GATHER
                with self._cond:
                    while not self._closed and (left := until - time.monotonic()) > 0:
                        self._cond.wait(left)


def _transient(exc: ClientError) -> bool:
    """Whether asking again later may work (no answer, overload, the job API restarting)."""
    return exc.status is None or exc.status in (408, 429) or exc.status >= 500


def _deadline(timeout: float | None) -> float | None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
    return None if timeout is None else time.monotonic() + timeout


# -- the client -----------------------------------------------------------------------------


class Client:
    """A connection to the job API: submit jobs and follow them.

    Give ``endpoint`` and one kind of credentials: ``key``/``secret`` (an API key),
    ``username``/``password``, or ``authn_header`` (Nuvla's ``nuvla-authn-info`` header, for
    a job API that trusts it); or an already logged-in ``nuvla.api.Api`` as ``api``. Jobs
    can only be added by administrators (the admin key the job API writes is one).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        key: str | None = None,
        secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        authn_header: str | None = None,
        insecure: bool = False,
        api: Api | None = None,
    ) -> None:
        if api is None:
            creds = _credentials(key, secret, username, password)
            api = Api(
                endpoint=endpoint,
                insecure=insecure,
                persist_cookie=False,
                reauthenticate=True,
                login_creds=creds,
                authn_header=authn_header,
            )
            # Enough pooled connections for the threads that submit and wait at once.
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=POOL_SIZE)
            api.session.mount("http://", adapter)
            api.session.mount("https://", adapter)
            if creds:
                _login(api)
        self.api = api
        self.endpoint = api.endpoint.rstrip("/")
        self._watcher = _Watcher(self)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_credentials_file(
        cls, path: str | os.PathLike[str], endpoint: str | None = None, *, insecure: bool = False
    ) -> Client:
        """From a JSON file with ``key`` and ``secret`` (and ``endpoint``, used unless one is
        given), such as the ``admin-credentials.json`` the job API writes."""
        try:
            data = json.loads(Path(path).read_text())
            key, secret = str(data["key"]), str(data["secret"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClientError(
                f"cannot read API credentials from {path}: {type(exc).__name__}"
            ) from None
        written = data.get("endpoint") if isinstance(data.get("endpoint"), str) else None
        return cls(
            endpoint or written or DEFAULT_ENDPOINT, key=key, secret=secret, insecure=insecure
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Client:
        """From the engine's environment variables: ``JOB_API_URL`` and ``JOB_API_KEY`` with
        ``JOB_API_SECRET`` (or ``JOB_API_SECRET_FILE``), or ``JOB_API_USER`` with
        ``JOB_API_PASS`` (or ``JOB_API_PASS_FILE``), or ``JOB_API_AUTHN_HEADER``, or
        ``JOB_API_CREDENTIALS`` (a credentials file); ``JOB_API_INSECURE``. With none of
        them, the admin credentials file in the job API's default data folder, when there
        is one."""
        env = os.environ if environ is None else environ
        endpoint = env.get("JOB_API_URL") or None
        insecure = env.get("JOB_API_INSECURE", "").lower() in ("1", "true", "yes", "on")
        secret = _secret(env, "JOB_API_SECRET")
        password = _secret(env, "JOB_API_PASS")
        if env.get("JOB_API_KEY") or secret or env.get("JOB_API_USER") or password:
            return cls(
                endpoint or DEFAULT_ENDPOINT,
                key=env.get("JOB_API_KEY"),
                secret=secret,
                username=env.get("JOB_API_USER"),
                password=password,
                insecure=insecure,
            )
        if env.get("JOB_API_AUTHN_HEADER"):
            return cls(
                endpoint or DEFAULT_ENDPOINT,
                authn_header=env["JOB_API_AUTHN_HEADER"],
                insecure=insecure,
            )
        path = env.get("JOB_API_CREDENTIALS") or _default_credentials_file()
        if path and Path(path).is_file():
            return cls.from_credentials_file(path, endpoint, insecure=insecure)
        raise ClientError(
            "no job API credentials: set JOB_API_KEY and JOB_API_SECRET (or "
            "JOB_API_CREDENTIALS), or give them to Client(...)"
        )

    def close(self) -> None:
        """Stop following jobs and close the connections."""
        self._watcher.close()
        self.api.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------

    def submit(
        self,
        action: str,
        payload: Any = None,
        *,
        priority: int | None = None,
        target: str | None = None,
        tags: Iterable[str] | None = None,
        mode: str | None = None,
        unique_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> JobHandle:
        """Add a job for ``action`` and return its handle.

        ``payload``: a JSON text, or any JSON-serialisable value (sent as its text).
        ``priority``: 0..999, lower runs first (the job API's default: 999). ``target``:
        the target resource's href. ``tags``: strings. ``mode``: ``push`` (default),
        ``pull`` or ``mixed``. ``unique_key``: while an unfinished job holds this key, the
        submit adds nothing and returns that job (``created`` False). ``delay`` (seconds)
        or ``at`` (a datetime; naive is UTC): the job waits, QUEUED, until then (its
        ``not-before``; the elected scheduler queues it). ``attributes``: any other job
        attributes, as the job API names them (``{"name": ..., "acl": ...}``).
        """
        body: Doc = {**(attributes or {}), "action": action}
        if delay is not None and at is not None:
            raise ValueError("give delay= or at=, not both")
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
                raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")
            body["not-before"] = format_time(datetime.now(UTC) + timedelta(seconds=delay))
        if at is not None:
            body["not-before"] = format_time(at)
        if payload is not None:
            body["payload"] = payload
        if priority is not None:
            body["priority"] = priority
        if target is not None:
            body["target-resource"] = {"href": target}
        if tags is not None:
            body["tags"] = list(tags)
        if mode is not None:
            body["execution-mode"] = mode
        if unique_key is not None:
            body["unique-key"] = unique_key
        return self._add(body)

    def submit_many(self, bodies: Iterable[Mapping[str, Any]]) -> list[JobHandle]:
        """Add one job per body (job attributes as the job API names them; ``payload`` may
        be any JSON-serialisable value), in order, over one connection. Every body is
        tried; if some fail, :class:`BatchError` lists them with the handles of the others.
        """
        created: list[JobHandle] = []
        errors: list[tuple[int, ClientError]] = []
        for index, body in enumerate(bodies):
            try:
                created.append(self._add(dict(body)))
            except ClientError as exc:
                errors.append((index, exc))
        if errors:
            raise BatchError(created, errors)
        return created

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job (``job/<uuid>`` or the bare uuid); nothing is read
        until it is used."""
        job_id = job_id.strip()
        return JobHandle(self, job_id if job_id.startswith("job/") else f"job/{job_id}")

    def _add(self, body: Doc) -> JobHandle:
        if "payload" in body and not isinstance(body["payload"], str):
            body["payload"] = json.dumps(body["payload"])
        answer = self._request("POST", "job", body)
        # 200 instead of 201: an unfinished job holds its unique-key, and this is that one.
        return JobHandle(self, answer["resource-id"], created=answer.get("status") != 200)

    def _read(self, job_id: str) -> tuple[str, Doc]:
        """(etag, document) of a job now."""
        answer = self._request("POST", "job/wait", {"jobs": {job_id: None}, "timeout": 0})
        if job_id in answer.get("missing", []) or not answer.get("jobs"):
            raise JobNotFound(f"{job_id} not found", 404)
        item = answer["jobs"][0]
        item["job"].pop("operations", None)
        return item["etag"], item["job"]

    # -- HTTP ---------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> Doc:
        """One request to ``/api/<path>``: its JSON answer, or ClientError."""
        url = f"{self.endpoint}/api/{path}"
        try:
            response = self.api.session.request(
                method,
                url,
                json=body,
                headers={"Accept": "application/json"},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ClientError(
                f"cannot reach the job API at {self.endpoint}: {type(exc).__name__}"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400:
            message = answer.get("message") if isinstance(answer, dict) else None
            text = f"job API answered {response.status_code}: {message or response.reason}"
            kind = JobNotFound if response.status_code == 404 else ClientError
            raise kind(text, response.status_code)
        if not isinstance(answer, dict):
            raise ClientError(
                f"the job API answered {url} with no JSON object", response.status_code
            )
        return answer


def _credentials(
    key: str | None, secret: str | None, username: str | None, password: str | None
) -> dict[str, str] | None:
    if key or secret:
        if not (key and secret):
            raise ClientError("an API key needs both key= and secret=")
        if username or password:
            raise ClientError("give an API key or a username and password, not both")
        return {"key": key, "secret": secret}
    if username or password:
        if not (username and password):
            raise ClientError("a login needs both username= and password=")
        return {"username": username, "password": password}
    return None


def _login(api: Api) -> None:
    try:
        response = api.login(api.session.login_params)
    except requests.RequestException as exc:
        raise ClientError(
            f"cannot reach the job API at {api.endpoint}: {type(exc).__name__}"
        ) from None
    if response is None or response.status_code != 201:
        status = getattr(response, "status_code", None)
        raise ClientError(f"login to the job API at {api.endpoint} failed ({status})", status)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``NAME`` or the content of the file ``NAME_FILE``."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().rstrip("\r\n") or None
    except OSError as exc:
        raise ClientError(f"cannot read {name}_FILE {path}: {exc.strerror or exc}") from None


def _default_credentials_file() -> str:
    # Imported here: the client needs none of the server's modules otherwise.
    from .api.server import default_data_dir

    return str(default_data_dir() / "admin-credentials.json")

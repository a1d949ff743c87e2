"""The job API's HTTP routes: CIMI `cloud-entry-point`, `session` and `job` (a WSGI app).

Every answer, errors included, is JSON; an error is ``{"status", "message", "resource-id"}``
as the ``nuvla-api`` client expects. Bad input is a 4xx naming the problem, never a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

import falcon
import orjson

from ..timeutil import now_iso
from . import dashboard, metrics_http
from .errors import ApiError, bad_request, forbidden, not_found
from .identity import ANONYMOUS, Caller, Identities
from .jobs import JobService
from .offloop import OffLoop
from .proxies import TrustedProxies
from .query import Query, QueryError, parse_query
from .store import PageTooLarge, QueryTimeout, StoreError, Unstorable
from .throttle import CounterStore, LoginLimits, LoginThrottle, TooManyFailures

log = logging.getLogger(__name__)

T = TypeVar("T")

COOKIE = "com.sixsq.nuvla.cookie"
DEFAULT_MAX_BODY = 4 * 1024 * 1024


# Methods that change something: a browser sends some of them from any page without asking
# the server first (a "simple" POST), with the session cookie when the page is same-site.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
# What browsers say in Sec-Fetch-Site of a request made by a page of another origin.
_OTHER_SITES = frozenset({"cross-site", "same-site"})
_JSON = "application/json"
# Filters up to this many characters are parsed on the event loop (a millisecond or two).
_INLINE_FILTER = 1024


@dataclass
class Settings:
    trust_authn_header: bool = False
    secure_cookie: bool = False
    max_body: int = DEFAULT_MAX_BODY
    login_limits: LoginLimits = field(default_factory=LoginLimits)
    metrics: bool = True  # GET /metrics (unauthenticated, like /api/health) and counting
    # Where clients reach the API (scheme://host[:port][/prefix]): the cloud entry point's
    # base-uri. Never read from the request's Host header, which the client chooses.
    public_url: str = ""
    # Seconds between two samples of the dashboard's fleet charts (fleet.FleetSampler).
    dashboard_interval: float = 5.0
    # Balancers whose X-Forwarded-For names the client (the login back-off's address).
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)


def _send(resp: falcon.Response, status: int, body: Any) -> None:
    _send_encoded(resp, status, orjson.dumps(body))


def _send_encoded(resp: falcon.Response, status: int, data: bytes) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = data


class Context:
    """What every resource needs: the services, the settings, and who is calling."""

    def __init__(
        self,
        jobs: JobService,
        identities: Identities,
        settings: Settings,
        offloop: OffLoop | None = None,
        login_counters: CounterStore | None = None,
    ) -> None:
        self.jobs = jobs
        self.identities = identities
        self.settings = settings
        # Counters replicas share are compared across hosts: on the wall clock.
        clock = time.monotonic if login_counters is None else time.time
        self.login_throttle = LoginThrottle(settings.login_limits, clock, login_counters)
        self.offloop = offloop

    def heavy(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` off the event loop, in the pool's lane for heavy calls (inline when
        the app runs without a pool, as in unit tests)."""
        if self.offloop is None:
            return call(*args)
        return self.offloop.run_heavy(call, *args)

    def caller(self, req: falcon.Request) -> Caller:
        if self.settings.trust_authn_header:
            header = req.get_header("nuvla-authn-info")
            if header:
                parts = header.split()
                if parts:
                    return Caller(parts[0], frozenset(parts) | {"group/nuvla-anon"})
        token = req.cookies.get(COOKIE)
        if token:
            caller = self.identities.session_caller(token)
            if caller is not None:
                return caller
        return ANONYMOUS

    def body(self, req: falcon.Request) -> bytes:
        """The request body, whole: sized by Content-Length or chunked, at most max_body."""
        limit = self.settings.max_body
        too_large = ApiError(413, f"request body larger than {limit} bytes", close=True)
        length = req.content_length
        if length is not None and length > limit:
            raise too_large
        chunked = length is None and _chunked(req)
        if length is None and not chunked:
            return b""
        try:
            # A chunked body says its length only at its end: read it in pieces.
            data = _read(req.stream, limit + 1) if chunked else req.bounded_stream.read(limit)
        except TimeoutError:
            raise ApiError(408, "the request body did not arrive in time", close=True) from None
        except OSError:  # gevent's end of input before the length said, or a bad chunk
            if chunked:
                raise ApiError(400, "malformed chunked request body", close=True) from None
            raise ApiError(
                400, "the request body is shorter than its Content-Length", close=True
            ) from None
        if len(data) > limit:
            raise too_large
        return data

    def json(self, req: falcon.Request) -> Any:
        """The JSON body ({} when there is none); it needs the JSON content type, so that
        no page can send one the way an HTML form does."""
        if _has_body(req) and _media_type(req) != _JSON:
            raise ApiError(415, f"a JSON body needs the header Content-Type: {_JSON}", close=True)
        data = self.body(req)
        if not data.strip():
            return {}
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"malformed JSON body: {exc}") from None

    def params(self, req: falcon.Request) -> dict[str, list[str]]:
        """Query-string parameters plus a form-encoded body (the client's search sends one)."""
        params: dict[str, list[str]] = {}
        for key, value in req.params.items():
            params[key] = value if isinstance(value, list) else [value]
        content_type = req.content_type or ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            try:
                text = self.body(req).decode()
            except UnicodeDecodeError:
                raise bad_request("form body is not UTF-8") from None
            for key, values in parse_qs(text, keep_blank_values=True).items():
                params.setdefault(key, []).extend(values)
        return params

    def query(self, req: falcon.Request) -> Query:
        params = self.params(req)
        # Parsing a long filter is pure Python work (tens of milliseconds for thousands of
        # terms): off the loop. A short one costs less than the trip to a thread.
        if sum(len(text) for text in params.get("filter", ())) <= _INLINE_FILTER:
            return _parse_query(params)
        return self.heavy(_parse_query, params)


def _parse_query(params: dict[str, list[str]]) -> Query:
    try:
        return parse_query(params)
    except (QueryError, ValueError) as exc:
        raise bad_request(str(exc)) from None


def _chunked(req: falcon.Request) -> bool:
    return "chunked" in (req.get_header("Transfer-Encoding") or "").lower()


def _has_body(req: falcon.Request) -> bool:
    return bool(req.content_length) or _chunked(req)


def _media_type(req: falcon.Request) -> str:
    """The content type without its parameters (``; charset=utf-8``), lower case."""
    return (req.content_type or "").split(";", 1)[0].strip().lower()


def _read(stream: Any, most: int) -> bytes:
    """Up to `most` bytes of a stream, read until its end."""
    parts, size = [], 0
    while size < most:
        part = stream.read(min(65536, most - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


class OtherSites:
    """Falcon middleware: refuses changes requested by pages of other sites.

    A browser marks each request with the origin of the page that made it (Sec-Fetch-Site).
    The API's own dashboard is same-origin; engine clients send no such header. Pages of
    other sites, a same-site page on another port included, may not change anything, even
    with a body-less POST, which needs no content type and so passes the JSON check.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method in _UNSAFE_METHODS:
            site = (req.get_header("Sec-Fetch-Site") or "").strip().lower()
            if site in _OTHER_SITES:
                raise ApiError(403, "requests from other sites are refused", close=True)


class CloudEntryPoint:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.created = now_iso()
        self.base_uri = f"{ctx.settings.public_url.rstrip('/')}/api/"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _send(
            resp,
            200,
            {
                "id": "cloud-entry-point",
                "resource-type": "cloud-entry-point",
                "base-uri": self.base_uri,
                "created": self.created,
                "updated": self.created,
                "collections": {"job": {"href": "job"}, "session": {"href": "session"}},
            },
        )


class Health:
    """``GET /api/health``: 200 while ZooKeeper is connected (adds can be queued), else 503.

    Not a CIMI resource: for load balancers, orchestrators and tests.
    """

    def __init__(self, queue_state: Callable[[], str]) -> None:
        self.queue_state = queue_state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = self.queue_state()
        _send(
            resp,
            200 if state == "CONNECTED" else 503,
            {"status": "ok" if state == "CONNECTED" else "degraded", "zookeeper": state},
        )


class Sessions:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _doc(self, session_id: str) -> dict[str, Any] | None:
        row = self.ctx.identities.session(session_id)
        if row is None:
            return None
        return {
            "id": row["id"],
            "resource-type": "session",
            "user": row["identity"],
            "identifier": row["identity"],
            "roles": row["roles"],
            "operations": [{"rel": "delete", "href": row["id"]}],
        }

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.ctx.caller(req)
        docs = []
        if caller.session_id:
            doc = self._doc(caller.session_id)
            if doc is not None:
                docs.append(doc)
        _send(
            resp,
            200,
            {
                "count": len(docs),
                "resources": docs,
                "id": "session",
                "resource-type": "session-collection",
                "operations": [{"rel": "add", "href": "session"}],
            },
        )

    on_get = on_put

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.ctx.json(req)
        template = body.get("template") if isinstance(body, dict) else None
        if not isinstance(template, dict):
            raise bad_request("a session is created from a 'template' map")
        href = template.get("href")
        if href == "session-template/api-key":
            kind, name, secret = "api-key", template.get("key"), template.get("secret")
        elif href == "session-template/password":
            kind, name, secret = "user", template.get("username"), template.get("password")
        else:
            raise bad_request(
                "unknown session template; use session-template/api-key or "
                "session-template/password"
            )
        if not isinstance(name, str) or not isinstance(secret, str):
            raise bad_request("the session template needs string credentials")
        caller = self._check(req, kind, name, secret)
        if caller is None:
            raise ApiError(403, "invalid credentials")
        session_id, token = self.ctx.identities.open_session(caller)
        resp.set_cookie(
            COOKIE,
            token,
            path="/",
            secure=self.ctx.settings.secure_cookie,
            http_only=True,
            same_site="Strict",
        )
        resp.location = f"/api/{session_id}"
        _send(
            resp,
            201,
            {"status": 201, "message": f"created {session_id}", "resource-id": session_id},
        )

    def _check(self, req: falcon.Request, kind: str, name: str, secret: str) -> Caller | None:
        """The credentials' caller, or None; 429 while this name or address is backing off."""
        throttle = self.ctx.login_throttle
        address = self.ctx.settings.trusted_proxies.client_address(
            req.remote_addr or "", req.get_header("X-Forwarded-For")
        )
        try:
            throttle.begin(name, address)
        except TooManyFailures as exc:
            raise falcon.HTTPTooManyRequests(
                description=str(exc), retry_after=exc.retry_after
            ) from None
        outcome: bool | None = None
        try:
            caller = self.ctx.identities.check(kind, name, secret)
            outcome = caller is not None
        finally:
            # The name is not logged: it may be a password typed in the wrong field.
            if throttle.end(name, address, outcome):
                log.warning("repeated failed logins (from %s): backing off", address)
        return caller


class Session:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _owned(self, req: falcon.Request, uuid: str) -> str:
        session_id = f"session/{uuid}"
        caller = self.ctx.caller(req)
        if self.ctx.identities.session(session_id) is None:
            raise not_found(session_id)
        if caller.session_id != session_id and not caller.is_admin:
            raise forbidden(session_id)
        return session_id

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        session_id = self._owned(req, uuid)
        _send(resp, 200, Sessions(self.ctx)._doc(session_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        session_id = self._owned(req, uuid)
        self.ctx.identities.close_session(session_id)
        resp.unset_cookie(COOKIE, path="/")
        _send(
            resp,
            200,
            {"status": 200, "message": f"{session_id} deleted", "resource-id": session_id},
        )


class JobCollection:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        query, caller = self.ctx.query(req), self.ctx.caller(req)
        # A page of thousands of documents: shaped and encoded off the loop too.
        body = self.ctx.heavy(lambda: orjson.dumps(self.ctx.jobs.search(query, caller)))
        _send_encoded(resp, 200, body)

    on_get = on_put

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.ctx.caller(req)
        doc, created = self.ctx.jobs.add_or_find(self.ctx.json(req), caller)
        resp.location = f"/api/{doc['id']}"
        if not created:
            # Its unique-key is held by this unfinished job: the add answers that one.
            message = f"{doc['id']} is {doc['state']} with this unique-key: no job added"
            _send(resp, 200, {"status": 200, "message": message, "resource-id": doc["id"]})
            return
        _send(
            resp, 201, {"status": 201, "message": f"{doc['id']} created", "resource-id": doc["id"]}
        )

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        if (req.get_header("bulk") or "").lower() != "yes":
            raise bad_request("deleting the job collection needs the header 'bulk: yes'")
        query = self.ctx.query(req)
        _send(resp, 200, self.ctx.jobs.delete_bulk(query, self.ctx.caller(req)))


def _select(req: falcon.Request) -> list[str]:
    values = req.get_param_as_list("select") or []
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


class JobItem:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        _send(resp, 200, self.ctx.jobs.get(f"job/{uuid}", self.ctx.caller(req)))

    def on_put(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        content_type = req.content_type or ""
        if "json-patch" in content_type:
            raise ApiError(415, "JSON patch edits are not supported by this server")
        body = self.ctx.json(req)
        _send(
            resp, 200, self.ctx.jobs.edit(f"job/{uuid}", body, _select(req), self.ctx.caller(req))
        )

    def on_delete(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        job_id = f"job/{uuid}"
        self.ctx.jobs.delete(job_id, self.ctx.caller(req))
        _send(resp, 200, {"status": 200, "message": f"{job_id} deleted", "resource-id": job_id})


class DueJobs:
    """``POST /api/job/queue-due`` ``{"limit": N}``: queue the waiting jobs that are due (the
    scheduler's call; administrators only). Not a CIMI operation: a Nuvla server has none."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.ctx.json(req)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        limit = body.get("limit", 1000)
        _send(resp, 200, self.ctx.jobs.queue_due(self.ctx.caller(req), limit))


class JobWait:
    """``POST /api/job/wait``: a long poll for changes of the given jobs (changes.py)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.ctx.caller(req)
        _send(resp, 200, self.ctx.jobs.wait(self.ctx.json(req), caller))


class JobOperation:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, uuid: str, op: str) -> None:
        self.ctx.json(req)  # the body is optional, but must be well-formed when given
        result = self.ctx.jobs.operation(f"job/{uuid}", op, self.ctx.caller(req))
        _send(resp, 200, result)


def _api_error(
    req: falcon.Request, resp: falcon.Response, exc: ApiError, params: dict[str, Any]
) -> None:
    _send(resp, exc.status, exc.body())
    if exc.close:
        resp.set_header("Connection", "close")


def _store_error(
    req: falcon.Request, resp: falcon.Response, exc: StoreError, params: dict[str, Any]
) -> None:
    if isinstance(exc, QueryTimeout):
        # The database is fine: this request asked for more than its budget.
        log.warning("%s %s stopped after %g s", req.method, req.path, exc.seconds)
    else:
        log.error("database error on %s %s: %s (%s)", req.method, req.path, exc, exc.detail)
    _send(resp, 503, {"status": 503, "message": str(exc)})


def _too_large(
    req: falcon.Request,
    resp: falcon.Response,
    exc: PageTooLarge | Unstorable,
    params: dict[str, Any],
) -> None:
    # Also a value the store cannot hold: both are the request's fault, said in our words.
    _send(resp, 400, {"status": 400, "message": str(exc)})


def _http_error(
    req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError, params: dict[str, Any]
) -> None:
    status = exc.status_code
    message = exc.description or exc.title or "error"
    if status == 404:
        message = f"no such resource: {req.path}"
    elif status == 405:
        message = f"method {req.method} not allowed on {req.path}"
    _send(resp, status, {"status": status, "message": message})
    if exc.headers:
        resp.set_headers(exc.headers)


def _unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]
) -> None:
    log.exception("unexpected error on %s %s", req.method, req.path)
    _send(resp, 500, {"status": 500, "message": "internal server error"})


def create_app(
    jobs: JobService,
    identities: Identities,
    settings: Settings | None = None,
    queue_state: Callable[[], str] = lambda: "CONNECTED",
    offloop: OffLoop | None = None,
    login_counters: CounterStore | None = None,
) -> falcon.App:
    """The WSGI application serving the job API under ``/api``; with `offloop`, searches
    are parsed, run and encoded in its threads (the store's calls run there anyway); with
    `login_counters`, the failed-login back-off is kept there (shared by replicas)."""
    ctx = Context(jobs, identities, settings or Settings(), offloop, login_counters)
    app = falcon.App(cors_enable=False, middleware=[OtherSites()])
    app.req_options.auto_parse_form_urlencoded = False
    app.req_options.strip_url_path_trailing_slash = True
    app.add_route("/api/cloud-entry-point", CloudEntryPoint(ctx))
    app.add_route("/api/health", Health(queue_state))
    app.add_route("/api/session", Sessions(ctx))
    app.add_route("/api/session/{uuid}", Session(ctx))
    app.add_route("/api/job", JobCollection(ctx))
    app.add_route("/api/job/queue-due", DueJobs(ctx))
    app.add_route("/api/job/wait", JobWait(ctx))
    app.add_route("/api/job/{uuid}", JobItem(ctx))
    app.add_route("/api/job/{uuid}/{op}", JobOperation(ctx))
    dashboard.register(app, ctx)  # /dashboard and /api/dashboard/*
    if ctx.settings.metrics:
        metrics_http.register(app, lambda: queue_state() == "CONNECTED")
    # Falcon tries the most specific handler first, so the order of these does not matter.
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(StoreError, _store_error)
    app.add_error_handler(PageTooLarge, _too_large)
    app.add_error_handler(Unstorable, _too_large)
    app.add_error_handler(ApiError, _api_error)
    return app

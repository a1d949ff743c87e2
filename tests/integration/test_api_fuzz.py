"""Bad input campaign: property-based fuzzing of a real `job-api` process.

Hypothesis generates requests — job bodies, edits, operations, searches (filter, orderby,
select, aggregation, paging), bulk deletes, logins, odd content types, bytes that are not
JSON or not UTF-8, huge, deeply nested and unicode values, wrong types — and sends them with
plain `requests` to a job API started for these tests (its own database; login throttling
off, since logins are fuzzed too). Every answer must be JSON, never a 5xx, and errors must
be ``{"status", "message"}``; the process must stay up with ``/api/health`` answering 200.
After each run the database must be consistent (see `check_consistency`).

More examples: ``FUZZ_EXAMPLES=200 .venv/bin/python -m pytest tests/integration/test_api_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from kazoo.client import KazooClient

from nuvla_job import queue
from nuvla_job.api import schema
from nuvla_job.api.filters import OPERATORS
from nuvla_job.api.jobs import REQUIRED
from nuvla_job.api.validation import check_attributes
from nuvla_job.states import FINAL_STATES, STATES
from nuvla_job.zk import make_client
from tests.support.jobapi import JobApiProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
USER, USER_PASSWORD = "fuzz-user", "fuzz-Pass-1"
# The strategies below are big: Hypothesis warns that their text form is long.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
TIMEOUT = 30


# -- the server under test ----------------------------------------------------------------------


@dataclass
class Stack:
    """The job API under test, its callers, and what the checks need to see."""

    server: JobApiProcess
    zk: KazooClient
    sessions: dict[str, requests.Session] = field(default_factory=dict)
    user_id: str = ""
    sent: int = 0  # requests sent, to prove a run did fuzz
    # Every job the API said it created, with its execution mode; queue entries there before.
    added: dict[str, str] = field(default_factory=dict)
    entries_before: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"{self.server.endpoint}/api/{path}"

    def send(self, who: str, method: str, path: str, **kw: Any) -> requests.Response:
        response = self.sessions[who].request(method, self.url(path), timeout=TIMEOUT, **kw)
        self.sent += 1
        check_answer(response)
        self._record(method, path, response)
        return response

    def _record(self, method: str, path: str, response: requests.Response) -> None:
        """Remember the jobs created, to check their queue entries afterwards."""
        created: list[dict] = []
        admin = self.sessions["admin"]
        path = path.partition("?")[0].rstrip("/")  # the server ignores a trailing slash
        if method == "POST" and path == "job" and response.status_code == 201:
            job_id = response.json()["resource-id"]
            created.append(admin.get(self.url(job_id), timeout=TIMEOUT).json())
        elif method == "POST" and path.endswith("/cancel") and response.status_code == 200:
            # cancelling a bulk job adds a child job
            query = {
                "filter": f"target-resource/href='{path[:-7]}' and action='cancel_children_jobs'"
            }
            created += admin.put(self.url("job"), data=query, timeout=TIMEOUT).json()["resources"]
        for doc in created:
            # A job added with a future `not-before` waits with no entry (the scheduler's).
            mode = "waiting" if "not-before" in doc else doc["execution-mode"]
            self.added.setdefault(doc["id"], mode)

    def check_alive(self) -> None:
        assert self.server.pid is not None, f"job API exited:\n{self.server.log_tail()}"
        health = requests.get(self.url("health"), timeout=TIMEOUT)
        assert health.status_code == 200, health.text


def _login(server: JobApiProcess, template: dict[str, str]) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{server.endpoint}/api/session", json={"template": template}, timeout=TIMEOUT
    )
    assert response.status_code == 201, response.text
    return session


@pytest.fixture(scope="module")
def fuzz_stack(zookeeper, api_store) -> Iterator[Stack]:
    """One job API for the module (starting one takes seconds on a busy machine), on each
    store in turn (tests/conftest.py)."""
    zk = make_client(zookeeper.hosts, use_gevent=False)
    with JobApiProcess(
        zookeeper.hosts,
        "--login-max-failures",
        "0",
        "--login-max-failures-per-address",
        "0",
        "--max-body",
        str(256 * 1024),
        db=api_store.db(),
    ) as server:
        zk.start(timeout=15)
        try:
            created = server.cli("add-user", USER, "--password", USER_PASSWORD)
            assert created.returncode == 0, created.stderr
            creds = server.credentials()
            stack = Stack(
                server, zk, user_id=created.stdout.strip(), entries_before=set(_entry_names(zk))
            )
            stack.sessions = {
                "admin": _login(
                    server,
                    {
                        "href": "session-template/api-key",
                        "key": creds["key"],
                        "secret": creds["secret"],
                    },
                ),
                "user": _login(
                    server,
                    {
                        "href": "session-template/password",
                        "username": USER,
                        "password": USER_PASSWORD,
                    },
                ),
                "anon": requests.Session(),
            }
            yield stack
        finally:
            zk.stop()
            zk.close()


@pytest.fixture
def stack(fuzz_stack: Stack) -> Iterator[Stack]:
    """The module's job API; after each test: alive, consistent, no traceback logged."""
    fuzz_stack.server.wait_queue_connected()  # an earlier test may have restarted ZooKeeper
    yield fuzz_stack
    fuzz_stack.check_alive()
    check_consistency(fuzz_stack)
    log = fuzz_stack.server.log_path.read_text("utf-8", "replace")
    assert "Traceback" not in log, fuzz_stack.server.log_tail()


# -- what every answer and the database must satisfy ---------------------------------------------


def check_answer(response: requests.Response) -> None:
    """JSON, never a 5xx; an error is {"status": <the HTTP status>, "message": "..."}."""
    where = f"{response.request.method} {response.request.url[:300]}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:500]}"
    if response.request.method == "OPTIONS" and response.status_code < 400:
        return  # falcon's default OPTIONS answer: an Allow header, no body
    assert response.headers.get("content-type", "").startswith("application/json"), where
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict), where
        assert body.get("status") == response.status_code, (where, body)
        assert isinstance(body.get("message"), str) and body["message"], (where, body)


def _stored(stack: Stack) -> tuple[list[tuple[str, dict, int]], int]:
    """Every row of the database (id, document, enqueue_pending) and the stored total."""
    if isinstance(stack.server.db, str):  # a PostgreSQL URL
        with psycopg.connect(stack.server.db) as conn:
            found = conn.execute(b"SELECT id, doc::text, enqueue_pending::int FROM job")
            pg_rows = [(i, json.loads(d), p) for i, d, p in found]
            row = conn.execute(b"SELECT sum(n) FROM job_total").fetchone()
        return pg_rows, int(row[0]) if row else 0
    db = sqlite3.connect(f"file:{stack.server.db}?mode=ro", uri=True)
    try:
        rows = [
            (i, json.loads(d), p)
            for i, d, p in db.execute("SELECT id, doc, enqueue_pending FROM job")
        ]
        total = db.execute("SELECT n FROM job_total").fetchone()[0]
    finally:
        db.close()
    return rows, total


def _entry_names(zk: KazooClient) -> list[str]:
    return zk.get_children(queue.ENTRIES) if zk.exists(queue.ENTRIES) else []


def check_consistency(stack: Stack) -> None:
    """Every stored job is valid and was added; the counts agree; each push or mixed job
    added has exactly one queue entry, and there is no other entry."""
    rows, total = _stored(stack)
    assert total == len(rows), f"job_total says {total}, the table holds {len(rows)}"
    admin = stack.sessions["admin"]
    counted = admin.put(stack.url("job"), data={"last": "0"}, timeout=TIMEOUT).json()["count"]
    filtered = admin.put(
        stack.url("job"), data={"filter": "id^='job/'", "last": "0"}, timeout=TIMEOUT
    ).json()["count"]
    assert counted == filtered == len(rows)
    entries: dict[str, list[str]] = {}
    for name in set(_entry_names(stack.zk)) - stack.entries_before:
        data, _ = stack.zk.get(f"{queue.ENTRIES}/{name}")
        entries.setdefault(data.decode("utf-8", "replace"), []).append(f"{queue.ENTRIES}/{name}")
    # No executor runs here, so entries stay: exactly one per push or mixed job ever added
    # (deleted ones included), none for anything else (a refused add, a pull job, a job
    # added to wait for its `not-before`: no scheduler runs here).
    queued = {job_id for job_id, mode in stack.added.items() if mode not in ("pull", "waiting")}
    assert set(entries) == queued, (sorted(set(entries) - queued), sorted(queued - set(entries)))
    assert all(len(paths) == 1 for paths in entries.values()), "a job is queued twice"
    for job_id, doc, pending in rows:
        assert doc["id"] == job_id and job_id.startswith("job/")
        uuid.UUID(job_id[4:])
        assert not pending, f"{job_id} still owes its queue entry"
        assert REQUIRED <= doc.keys(), f"{job_id} lacks {sorted(REQUIRED - doc.keys())}"
        check_attributes(doc, ignored=frozenset())  # raises on an unknown key or a bad type
        assert doc["state"] in STATES and doc["execution-mode"] in schema.EXECUTION_MODES
        assert 0 <= doc["progress"] <= 100
        if doc["state"] in FINAL_STATES and doc["state"] != "CANCELED":
            assert doc["progress"] == 100
        assert "group/nuvla-admin" in doc["acl"]["owners"]
        assert job_id in stack.added, f"{job_id} is stored but its add was not answered 201"


# -- strategies ---------------------------------------------------------------------------------

# Text that exercises unicode: any code point (surrogates included: they become invalid
# UTF-8 or escaped lone surrogates), quotes, backslashes and NUL.
texts = (
    st.text(st.characters(codec=None), max_size=40)
    | st.sampled_from(["", " ", "'", '"', "\\", "\x00", "job/", "null", "🚀" * 10, "\u202e"])
    | st.builds(lambda: "a" * 5000)
)
huge_ints = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -1])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
principals = (
    st.sampled_from(["group/nuvla-admin", "group/nuvla-user", "user/nobody", "group/nuvla-anon"])
    | texts
)
acls = st.dictionaries(
    st.sampled_from(schema.ACL_RIGHTS) | texts,
    st.lists(principals, max_size=3) | json_values,
    max_size=4,
)
dates = (
    st.datetimes().map(lambda d: d.isoformat() + "Z")
    | st.sampled_from(
        [
            "2026-11-28T04:28:53.123Z",
            "now-7d",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2026-02-30T00:00:00Z",
        ]
    )
    | texts
)
hrefs = st.fixed_dictionaries({"href": texts}) | json_values
VALID_BY_KIND = {
    "str": texts,
    "int": st.integers(-5, 1100) | huge_ints,
    "date": dates,
    "strs": st.lists(texts, max_size=3),
    "href": hrefs,
    "hrefs": st.lists(hrefs, max_size=3),
    "acl": acls,
    "any": json_values,
    "retry": st.fixed_dictionaries(
        {},
        optional={
            "retries": st.integers(-2, 1002) | json_values,
            "backoff": st.floats(allow_nan=True) | json_values,
            "max-backoff": st.floats(allow_nan=True) | json_values,
        },
    ),
}
KNOWN = {
    "state": st.sampled_from([*STATES, "queued", "DONE"]),
    "execution-mode": st.sampled_from([*schema.EXECUTION_MODES, "PUSH", "other"]),
    "action": st.sampled_from(["test_ok", "bulk_thing", "cleanup_jobs"]) | texts,
    "payload": st.sampled_from(['{"a": 1}', "not json", ""]) | texts,
}
attributes = {
    name: KNOWN.get(name, VALID_BY_KIND[kind]) | json_values
    for name, kind in schema.ATTRIBUTES.items()
}
job_bodies = st.fixed_dictionaries(
    {}, optional={"action": KNOWN["action"], **attributes}
) | st.fixed_dictionaries(
    {"action": KNOWN["action"]},
    optional={
        "priority": st.integers(0, 999),
        "execution-mode": KNOWN["execution-mode"],
        "acl": acls,
        "payload": KNOWN["payload"],
        "target-resource": hrefs,
    },
)


def _with_extra_keys(body: dict) -> st.SearchStrategy[dict]:
    return st.dictionaries(texts, json_values, max_size=2).map(lambda extra: {**body, **extra})


bodies = job_bodies | job_bodies.flatmap(_with_extra_keys) | json_values

# Filters from the grammar's pieces, well-formed or not.
paths = (
    st.sampled_from(
        [
            *schema.ATTRIBUTES,
            "target-resource/href",
            "acl/owners",
            "affected-resources/href",
            "a/b",
            "state/x",
            "x",
        ]
    )
    | texts
)
operators = st.sampled_from([*OPERATORS, "==", "=~", "<>", ""])
literals = (
    st.integers().map(str)
    | huge_ints.map(str)
    | texts.map(lambda t: "'" + t.replace("'", "\\'") + "'")
    | texts
    | st.sampled_from(
        [
            "true",
            "false",
            "null",
            "'now-7d'",
            "'now-999999999y'",
            "'now+1M/d'",
            "'2026-11-28T00:00:00Z'",
            "['QUEUED','RUNNING']",
            "[]",
            "[1,'a',null]",
            "'now/q'",
        ]
    )
)
comparisons = st.builds(lambda p, o, v: f"{p}{o}{v}", paths, operators, literals)


def _nested(depth: int, leaf: str, other: str) -> str:
    """Groups nested on the right, `depth` deep, alternating and/or."""
    text = leaf
    for level in range(depth - 1):
        text = f"{other} {'and' if level % 2 else 'or'} ({text})"
    return text


def _run(count: int, joiner: str, comparison: str) -> str:
    """`count` comparisons in one run (each a little different, so that none fold)."""
    return joiner.join(f"({comparison} or priority<{i})" for i in range(count // 2))


def _one_path_run(count: int, op: str) -> str:
    joiner = " or " if op == "=" else " and "
    return joiner.join(f"name{op}'{i}'" for i in range(count))


filters = (
    st.recursive(
        comparisons,
        lambda inner: (
            st.builds(lambda a, b: f"{a} and {b}", inner, inner)
            | st.builds(lambda a, b: f"{a} or {b}", inner, inner)
            | inner.map(lambda a: f"({a})")
        ),
        max_leaves=6,
    )
    | texts
    | st.integers(1, 3000).map(lambda n: "(" * n + "state='QUEUED'" + ")" * n)
    # Shapes the database itself cannot take (issue 13): the language's limits refuse them
    # with its own 400, or `fold` makes one comparison of them.
    | st.builds(_nested, st.integers(15, 60), comparisons, comparisons)
    | st.builds(_run, st.integers(400, 2_000), st.sampled_from([" or ", " and "]), comparisons)
    | st.builds(_one_path_run, st.integers(900, 11_000), st.sampled_from(["=", "!="]))
)
orderbys = (
    st.lists(
        st.builds(lambda p, d: p + d, paths, st.sampled_from(["", ":asc", ":desc", ":up", ":"])),
        max_size=3,
    ).map(",".join)
    | texts
)
selects = st.lists(paths, max_size=3).map(",".join) | texts
aggregations = (
    st.lists(
        st.builds(
            lambda o, p: f"{o}:{p}",
            st.sampled_from(["terms", "value_count", "max", "min", "sum", "avg", "median", ""]),
            paths,
        ),
        max_size=3,
    ).map(",".join)
    | texts
    | st.integers(15, 500).map(lambda n: ",".join(f"terms:name/{i}" for i in range(n)))
)
indexes = st.integers().map(str) | huge_ints.map(str) | texts
search_params = st.fixed_dictionaries(
    {},
    optional={
        "filter": filters | st.lists(filters, max_size=3),
        "orderby": orderbys | st.integers(15, 3_000).map(lambda n: ",".join(["name"] * n)),
        "select": selects,
        "aggregation": aggregations,
        "first": indexes,
        "last": indexes,
        "unknown": texts,
    },
)
callers = st.sampled_from(["admin", "admin", "user", "anon"])
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/xml",
        "*/*",
        "garbage",
    ]
) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
    str.strip
)  # requests refuses to send a header value with leading whitespace


def _encode(value: Any) -> bytes:
    # ensure_ascii=False writes lone surrogates raw: "surrogatepass" makes invalid UTF-8.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


raw_bodies = (
    st.builds(_encode, bodies)
    | st.builds(lambda v: json.dumps(v).encode(), bodies)  # \ud800 escapes, NaN, Infinity
    | st.binary(max_size=200)
    | st.sampled_from(
        [
            b"",
            b"{",
            b"\xff\xfe\x00{}",
            b"null",
            b"true",
            b"123",
            b'"text"',
            b'{"action": "test_ok", "action": "x"}',
            b"filter=state%3D'QUEUED'",
            b"filter=%ff%fe",
        ]
    )
    # Built on demand, so that Hypothesis does not print them in its reports.
    | st.builds(lambda: b"[" * 5000 + b"]" * 5000)
    | st.builds(lambda: b'{"a":' * 2000 + b"1" + b"}" * 2000)
    | st.builds(lambda: b'{"action": "' + b"x" * 300_000 + b'"}')  # over --max-body
    | st.builds(lambda: b'{"action": "' + b"x" * 200_000 + b'"}')
)
deep_json = st.integers(100, 3000).map(
    lambda n: (
        json.dumps({"action": "test_ok", "payload": "x"})[:-1].encode()
        + b', "description": '
        + b"[" * n
        + b"]" * n
        + b"}"
    )
)
raw_bodies = raw_bodies | deep_json


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _form(params: dict[str, Any]) -> str:
    """Form/query encoding that lets any text through, lone surrogates included."""
    return urlencode(params, doseq=True, encoding="utf-8", errors="surrogatepass")


def _quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


job_ids = (
    st.uuids().map(str)
    | texts.map(_quoted)
    | st.sampled_from(["..", "%2e%2e", "%00", "x" * 3000, "%ff", "a/b/c/d"])
)
operations = st.sampled_from(
    ["cancel", "timeout", "get-context", "CANCEL", "edit", "delete", ""]
) | texts.map(_quoted)


# -- 1: a stateful run over the job lifecycle ----------------------------------------------------


class JobApiMachine(RuleBasedStateMachine):
    """Adds, edits, operations, deletes, searches and bulk deletes, in random orders."""

    stack: Stack  # set by the test
    jobs = Bundle("jobs")

    @rule(target=jobs, who=callers, body=bodies)
    def add(self, who: str, body: Any) -> str:
        response = self.stack.send(who, "POST", "job", data=_encode(body), headers=JSON)
        if response.status_code == 201:
            assert who == "admin"
            return response.json()["resource-id"]
        return f"job/{uuid.uuid4()}"  # a job that does not exist is a fine target too

    @rule(target=jobs)
    def add_valid(self) -> str:
        response = self.stack.send(
            "admin",
            "POST",
            "job",
            json={"action": "bulk_fuzz", "priority": 5, "acl": {"owners": [self.stack.user_id]}},
        )
        assert response.status_code == 201
        return response.json()["resource-id"]

    @rule(job=jobs, who=callers, body=bodies, select=st.none() | selects)
    def edit(self, job: str, who: str, body: Any, select: str | None) -> None:
        query = "" if select is None else "?" + _form({"select": select})
        self.stack.send(who, "PUT", job + query, data=_encode(body), headers=JSON)

    @rule(job=jobs, who=callers, raw=raw_bodies, content_type=content_types)
    def edit_raw(self, job: str, who: str, raw: bytes, content_type: str | None) -> None:
        headers = {} if content_type is None else {"content-type": content_type}
        self.stack.send(who, "PUT", job, data=raw, headers=headers)

    @rule(job=jobs, who=callers, op=operations, raw=st.none() | raw_bodies)
    def operation(self, job: str, who: str, op: str, raw: bytes | None) -> None:
        self.stack.send(who, "POST", f"{job}/{op}", data=raw)

    @rule(job=jobs, who=callers)
    def get(self, job: str, who: str) -> None:
        self.stack.send(who, "GET", job)

    @rule(job=consumes(jobs), who=callers)
    def delete(self, job: str, who: str) -> None:
        self.stack.send(who, "DELETE", job)

    @rule(who=callers, params=search_params, form=st.booleans())
    def search(self, who: str, params: dict, form: bool) -> None:
        if form:  # how nuvla.api searches: PUT with a form body
            self.stack.send(who, "PUT", "job", data=_form(params), headers=FORM)
        else:
            self.stack.send(who, "GET", f"job?{_form(params)}")

    @rule(who=callers, filter=filters, bulk=st.sampled_from(["yes", "YES", "no", ""]))
    def bulk_delete(self, who: str, filter: str, bulk: str) -> None:
        # Mostly filters that match little, so that the other rules keep jobs to work on.
        response = self.stack.send(
            who,
            "DELETE",
            "job",
            headers={"bulk": bulk, **FORM},
            data=_form({"filter": f"({filter}) and priority=7"}),
        )
        if response.status_code == 200:
            body = response.json()
            assert isinstance(body["deleted"], int) and body["timed_out"] is False

    @invariant()
    def alive(self) -> None:
        self.stack.check_alive()


def test_job_lifecycle_fuzz(stack: Stack) -> None:
    JobApiMachine.stack = stack
    before = stack.sent
    runs = max(EXAMPLES // 4, 5)
    run_state_machine_as_test(
        JobApiMachine, settings=settings(FUZZ, max_examples=runs, stateful_step_count=30)
    )
    assert stack.sent - before >= runs * 5, "the state machine hardly ran"


# -- 2: any method, path, content type and body --------------------------------------------------


@FUZZ
@given(
    who=callers,
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]),
    path=st.sampled_from(["job", "session", "cloud-entry-point", "health", "nothing"])
    | st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["job", "session"]), job_ids)
    | st.builds(lambda a, b: f"job/{a}/{b}", job_ids, operations),
    raw=st.none() | raw_bodies,
    content_type=content_types,
    extra=st.dictionaries(
        st.sampled_from(["bulk", "nuvla-authn-info", "accept", "content-length", "cookie"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
        max_size=2,
    ),
)
def test_any_request_fuzz(
    stack: Stack,
    who: str,
    method: str,
    path: str,
    raw: bytes | None,
    content_type: str | None,
    extra: dict[str, str],
) -> None:
    headers = dict(extra)
    if content_type is not None:
        headers["content-type"] = content_type
    if "content-length" in headers:  # a lie about the length cannot be sent by requests
        headers.pop("content-length")
    stack.send(who, method, path, data=raw, headers=headers)
    stack.check_alive()


# -- 3: logins ------------------------------------------------------------------------------------

templates = st.fixed_dictionaries(
    {},
    optional={
        "href": st.sampled_from(["session-template/api-key", "session-template/password"]) | texts,
        "key": texts | json_values,
        "secret": texts | json_values,
        "username": st.sampled_from([USER]) | texts | json_values,
        "password": texts | json_values,
    },
)


@FUZZ
@given(
    body=st.fixed_dictionaries({"template": templates}) | json_values,
    raw=raw_bodies,
    use_raw=st.booleans(),
)
def test_login_fuzz(stack: Stack, body: Any, raw: bytes, use_raw: bool) -> None:
    fresh = requests.Session()
    if use_raw:
        response = fresh.post(stack.url("session"), data=raw, timeout=TIMEOUT)
    else:
        response = fresh.post(
            stack.url("session"), data=_encode(body), headers=JSON, timeout=TIMEOUT
        )
    check_answer(response)
    assert response.status_code != 201, "a fuzzed login was accepted"
    check_answer(fresh.put(stack.url("session"), timeout=TIMEOUT))
    stack.check_alive()


# -- 4: requests HTTP clients never send ---------------------------------------------------------

RAW_REQUESTS = {
    "request line too long": b"GET /api/job?filter=" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n",
    "not HTTP": b"GARBAGE\r\n\r\n",
    "TLS hello on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
    "header line without colon": b"GET /api/job HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "header line too long": b"GET /api/job HTTP/1.1\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n",
    "too many headers": b"GET /api/job HTTP/1.1\r\n" + b"X-A: 1\r\n" * 150 + b"\r\n",
    "negative content-length": b"POST /api/job HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "non-numeric content-length": b"POST /api/job HTTP/1.1\r\nContent-Length: ab\r\n\r\n",
    "bad chunk size": b"POST /api/job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunk longer than said": b"PUT /api/job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    b"2\r\nlast=0\r\n0\r\n\r\n",
    "non-UTF-8 path": b"GET /api/job/\xff\xfe HTTP/1.1\r\n\r\n",
    "NUL in path": b"GET /api/job/a\x00b HTTP/1.1\r\n\r\n",
}


def _raw_exchange(stack: Stack, request: bytes) -> tuple[int, bytes, bytes]:
    """Send bytes on a new connection; (status, headers, body) of the answer."""
    with socket.create_connection((stack.server.host, stack.server.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


@pytest.mark.parametrize("request_bytes", RAW_REQUESTS.values(), ids=RAW_REQUESTS.keys())
def test_malformed_http_answers_json_4xx(stack: Stack, request_bytes: bytes) -> None:
    status, head, body = _raw_exchange(stack, request_bytes)
    assert 400 <= status < 500, (status, head, body[:300])
    assert b"application/json" in head.lower(), head
    error = json.loads(body)
    assert error["status"] == status and error["message"]
    stack.check_alive()


# -- what the fuzzing found (kept as plain regression tests) --------------------------------------


def test_edit_refuses_an_unknown_execution_mode(stack: Stack) -> None:
    job_id = stack.send("admin", "POST", "job", json={"action": "test_ok"}).json()["resource-id"]
    response = stack.send("admin", "PUT", job_id, json={"execution-mode": "PUSH"})
    assert response.status_code == 400
    assert "execution-mode" in response.json()["message"]
    assert stack.send("admin", "GET", job_id).json()["execution-mode"] == "push"


def test_long_search_url_is_a_json_414(stack: Stack) -> None:
    response = stack.send(
        "admin", "GET", "job?filter=" + "(" * 5000 + "state='QUEUED'" + ")" * 5000
    )
    assert response.status_code == 414
    assert "PUT" in response.json()["message"]

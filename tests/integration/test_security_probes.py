"""The security probes of issue 13, each against real processes: a `job-api serve` of this
module (started under umask 000, with tight connection limits and a short query budget), and
for the queue probes the suite's ZooKeeper, job API and a real executor.

Each probe of the catalogue (tests/support/probes.py) has its test `test_<key>`, which
asserts the expected outcome and records what it saw; the table is written at the end of the
module (build/probes/table.md; docs/reliability.md with PROBES_PUBLISH=1).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from nuvla_job.api.sqlite import SqliteStore
from tests.integration.test_api_connections import _answer, _closed_after
from tests.integration.test_api_requests import _exchange, _request
from tests.integration.test_api_security import _from, _key_login
from tests.integration.test_executor import add, queue_empty, wait_state
from tests.support.jobapi import JobApiProcess
from tests.support.probes import PROBES, write_table
from tests.support.processes import EngineProcess
from tests.support.zookeeper import ZooKeeperServer

PUBLIC_URL = "https://jobs.example.org"
BUDGET = 1.0  # --query-timeout, seconds
IDLE, HEADERS, MAX_CONNECTIONS = 1.5, 1.0, 10
RESPONSIVE = 0.1  # seconds: what /api/health and a get must keep to under the heaviest search
HEAVY_JOBS, TAGS = 400, 1_000
HEAVIEST = " or ".join(f"tags^='x{i}'" for i in range(500))  # the most comparisons allowed
DB_WORDS = ("database", "sqlite", "SQLite", "Expression tree", "parser stack", "ORDER BY")

_results: dict[str, str] = {}


def record(key: str, result: str) -> None:
    assert key in {p.key for p in PROBES}, key
    _results[key] = result


@pytest.fixture(scope="module", autouse=True)
def _probe_table() -> Iterator[None]:
    _results.clear()
    yield
    written = write_table(_results, publish=os.environ.get("PROBES_PUBLISH") == "1")
    print(f"\nsecurity probes: {len(_results)} of {len(PROBES)} passed; table in", *written)


@pytest.fixture(scope="module")
def server(zookeeper: ZooKeeperServer) -> Iterator[JobApiProcess]:
    process = JobApiProcess(
        zookeeper.hosts,
        *("--query-timeout", str(BUDGET), "--public-url", PUBLIC_URL),
        *("--idle-timeout", str(IDLE), "--header-timeout", str(HEADERS)),
        *("--max-connections", str(MAX_CONNECTIONS), "--login-backoff", "60"),
    )
    previous = os.umask(0)  # what the server creates must be owner-only all the same
    try:
        process.start()
    finally:
        os.umask(previous)
    try:
        # Jobs with the longest lists, for the heaviest searches (SUCCESS: never queued).
        store = SqliteStore(process.db)
        store.jobs.insert_many(_heavy_doc(i) for i in range(HEAVY_JOBS))
        store.close()
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def cookie(server: JobApiProcess) -> str:
    from nuvla_job.api.app import COOKIE

    creds = server.credentials()
    return server.api().login_apikey(creds["key"], creds["secret"]).cookies[COOKIE]


def _heavy_doc(i: int) -> dict:
    return {
        "id": f"job/{i:08d}-0000-4000-8000-00000000beef",
        "resource-type": "job",
        "state": "SUCCESS",
        "action": "heavy",
        "progress": 100,
        "execution-mode": "pull",
        "version": 2,
        "created": "2026-01-01T00:00:00.000Z",
        "updated": "2026-01-01T00:00:00.000Z",
        "tags": [f"tag-{j}" for j in range(TAGS)],
        "acl": {"owners": ["group/nuvla-admin"], "view-data": ["group/nuvla-user"]},
    }


def _jobs(server: JobApiProcess, action: str) -> int:
    return server.admin_api().search("job", filter=f"action='{action}'", last=0).count


def _log_from(server: JobApiProcess, start: int) -> str:
    return server.log_path.read_text("utf-8", "replace")[start:]


def test_every_probe_of_the_catalogue_has_its_test() -> None:
    tests = {name[5:] for name in dir(sys.modules[__name__]) if name.startswith("test_")}
    tests.discard("every_probe_of_the_catalogue_has_its_test")
    assert tests == {p.key for p in PROBES}


# -- finding 1: one request froze the API ---------------------------------------------------------


def test_heavy_search_vs_health(server: JobApiProcess) -> None:
    user = server.user_api("probe-heavy", "probe-Pass-1")
    admin = server.admin_api()
    own = admin.add("job", {"action": "probe-get"}).data["resource-id"]
    urls = {"health": f"{server.endpoint}/api/health", "get": f"{server.endpoint}/api/{own}"}
    timings: dict[str, list[float]] = {"health": [], "get": []}

    def timed(name: str) -> None:
        start = time.perf_counter()
        assert admin.session.get(urls[name], timeout=10).status_code == 200
        timings[name].append(time.perf_counter() - start)

    for name in urls:  # warm: the connection open, the session known
        timed(name)
    timings = {"health": [], "get": []}
    start_log = server.log_path.stat().st_size

    def heaviest(_: int) -> tuple[requests.Response, float]:
        began = time.monotonic()
        form = {"filter": HEAVIEST, "aggregation": "terms:tags", "last": "10000"}
        answer = user.session.put(f"{server.endpoint}/api/job", data=form, timeout=60)
        return answer, time.monotonic() - began

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(heaviest, n) for n in range(2)]
        while not all(f.done() for f in running):
            for name in urls:
                timed(name)
            time.sleep(0.02)
        answers = [f.result() for f in running]
    assert len(timings["get"]) >= 5, "the searches ended too soon to show anything"
    worst = {name: max(values) for name, values in timings.items()}
    assert worst["health"] < RESPONSIVE and worst["get"] < RESPONSIVE, worst
    for answer, _ in answers:
        assert answer.status_code == 503, answer.text[:300]
        assert answer.json()["message"].startswith(
            f"the query ran longer than its {BUDGET:g} s budget and was stopped"
        )
    log = _log_from(server, start_log)
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]
    took = max(t for _, t in answers)
    record(
        "heavy_search_vs_health",
        f"health at most {worst['health'] * 1000:.0f} ms, get {worst['get'] * 1000:.0f} ms "
        f"({len(timings['get'])} of each); both searches 503 after at most {took:.1f} s "
        f"(budget {BUDGET:g} s)",
    )


# -- finding 2: idle connections were never closed ------------------------------------------------


def _connect(server: JobApiProcess) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=30)


def test_idle_and_slow_connections(server: JobApiProcess) -> None:
    with _connect(server) as silent:
        idle_for = _closed_after(silent)
    assert IDLE - 0.2 < idle_for < IDLE + 2, idle_for
    with _connect(server) as slow:
        start = time.monotonic()
        slow.sendall(b"GET /api/health HTTP/1.1\r\n")
        try:
            for _ in range(int(HEADERS * 10)):  # a byte well within every read timeout
                slow.sendall(b"X")
                time.sleep(0.3)
        except OSError:
            pass  # closed by the server while we still sent
        status, body = _answer(slow)
        cut_after = time.monotonic() - start
    assert status == 408 and body["message"] == "the request's headers did not arrive in time"
    assert cut_after < HEADERS + 2, cut_after
    record(
        "idle_and_slow_connections",
        f"silent one closed after {idle_for:.1f} s (--idle-timeout {IDLE:g}); "
        f"trickling one 408 after {cut_after:.1f} s (--header-timeout {HEADERS:g})",
    )


def test_beyond_max_connections(server: JobApiProcess) -> None:
    idle = [_connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # all accepted
        start = time.monotonic()
        refused = requests.get(f"{server.endpoint}/api/health", timeout=5)
        took = time.monotonic() - start
        assert refused.status_code == 503 and took < 1.0, (refused.status_code, took)
        assert "no room for another connection" in refused.json()["message"]
        for sock in idle:
            _closed_after(sock)
        assert requests.get(f"{server.endpoint}/api/health", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()
    record(
        "beyond_max_connections",
        f"503 in {took * 1000:.0f} ms with {MAX_CONNECTIONS} idle connections open; 200 "
        "once they were closed",
    )


# -- finding 3: bad filters were 5xx ------------------------------------------------------------


def test_malformed_filters(server: JobApiProcess, cookie: str) -> None:
    from nuvla_job.api.app import COOKIE

    deep = "state='a'"
    for level in range(30):
        deep = f"name!='x' {'and' if level % 2 else 'or'} ({deep})"
    refused = {
        "nested 30 deep": {"filter": deep},
        "1,000 comparisons": {
            "filter": " or ".join(f"priority<{i}" if i % 2 else f"name^='{i}'" for i in range(1000))
        },
        "12,000 values": {
            "filter": ["state=[" + ",".join(f"'{i}'" for i in range(6000)) + "]"] * 2
        },
        "orderby of 3,000": {"orderby": ",".join(["name"] * 3_000)},
    }
    start = server.log_path.stat().st_size
    statuses = []
    for name, params in refused.items():
        answer = requests.put(
            f"{server.endpoint}/api/job",
            data={**params, "last": 0},
            cookies={COOKIE: cookie},
            timeout=30,
        )
        message = answer.json()["message"]
        assert answer.status_code == 400, (name, answer.text[:300])
        assert not any(word in message for word in DB_WORDS), (name, message)
        statuses.append(answer.status_code)
    names = " or ".join(f"action='{i}'" for i in range(10_000))
    assert server.admin_api().search("job", filter=names, last=0).count == 0
    log = _log_from(server, start)
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]
    record(
        "malformed_filters",
        f"{'/'.join(map(str, statuses))} with our messages; the 10,000 `or` answered 200; "
        "no ERROR, no traceback",
    )


# -- finding 4: anyone could lock out any user --------------------------------------------------


def test_login_throttling(server: JobApiProcess) -> None:
    attacker, clean = _from("127.0.0.2"), _from("127.0.0.3")
    statuses = [_key_login(attacker, server, "guess") for _ in range(8)]
    assert statuses == [403] * 5 + [429] * 3, statuses
    right = server.credentials()["secret"]
    from_attacker = _key_login(attacker, server, right)
    from_clean = _key_login(clean, server, right)
    assert (from_attacker, from_clean) == (429, 201)
    record(
        "login_throttling",
        "guesses 403 ×5 then 429 ×3; right secret 429 from 127.0.0.2, 201 from 127.0.0.3",
    )


# -- finding 5: the database was world-readable -------------------------------------------------


def test_file_modes_under_umask_0(server: JobApiProcess) -> None:
    add(server.admin_api(), "probe-modes")  # a write: the WAL and its index exist
    files = [server.db, Path(f"{server.db}-wal"), Path(f"{server.db}-shm")]
    files.append(server.credentials_path)
    modes = {f.name: f.stat().st_mode & 0o777 for f in files}
    assert set(modes.values()) == {0o600}, modes
    record(
        "file_modes_under_umask_0",
        ", ".join(f"{name.replace('jobs.sqlite', 'db')} {mode:o}" for name, mode in modes.items()),
    )


# -- finding 6: request bodies --------------------------------------------------------------------


def test_short_and_chunked_bodies(server: JobApiProcess, cookie: str) -> None:
    body = b'{"action": "probe-short"}'
    json_type = "Content-Type: application/json"
    short = _request(
        "POST", "/api/job", cookie, body, json_type, f"Content-Length: {len(body) + 40}"
    )
    status, answer = _exchange(server, short)
    assert (status, answer["message"]) == (
        400,
        "the request body is shorter than its Content-Length",
    )
    assert _jobs(server, "probe-short") == 0
    body = b'{"action": "probe-chunked"}'
    chunked = _request(
        "POST",
        "/api/job",
        cookie,
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
        json_type,
        "Transfer-Encoding: chunked",
    )
    chunked_status, answer = _exchange(server, chunked)
    assert chunked_status == 201, answer
    assert server.admin_api().get(answer["resource-id"]).data["action"] == "probe-chunked"
    record(
        "short_and_chunked_bodies",
        f"short: {status}, nothing added; chunked: {chunked_status}, the job stored",
    )


# -- finding 7: cross-site requests and the Host header -------------------------------------------


def test_wrong_content_type(server: JobApiProcess, cookie: str) -> None:
    body = b'{"action": "probe-type"}'
    seen = []
    for content_type in ("text/plain", None):
        headers = [f"Content-Length: {len(body)}"]
        if content_type:
            headers.append(f"Content-Type: {content_type}")
        status, answer = _exchange(server, _request("POST", "/api/job", cookie, body, *headers))
        assert status == 415, answer
        seen.append(f"{content_type or 'none'}: {status}")
    assert _jobs(server, "probe-type") == 0
    record("wrong_content_type", f"{', '.join(seen)}; nothing added")


def test_cross_site_request(server: JobApiProcess, cookie: str) -> None:
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "probe-cross-site"}).data["resource-id"]
    request = _request(
        "POST",
        f"/api/{job_id}/cancel",
        cookie,
        b"",
        "Content-Length: 0",
        "Sec-Fetch-Site: cross-site",
    )
    status, answer = _exchange(server, request)
    assert (status, answer["message"]) == (403, "requests from other sites are refused")
    state = admin.get(job_id).data["state"]
    assert state == "QUEUED"
    record("cross_site_request", f"{status}, the job {state}")


def test_host_header_vs_base_uri(server: JobApiProcess) -> None:
    answer = requests.get(
        f"{server.endpoint}/api/cloud-entry-point",
        headers={"Host": "attacker.example.com"},
        timeout=10,
    )
    base_uri = answer.json()["base-uri"]
    assert base_uri == f"{PUBLIC_URL}/api/"
    record("host_header_vs_base_uri", f"base-uri {base_uri}")


# -- finding 8: the queue as a trust boundary -----------------------------------------------------


def test_pull_job_in_queue(
    admin_api: Api, zk: KazooClient, start_executor: Callable[..., EngineProcess]
) -> None:
    job_id = add(admin_api, "test_ok", **{"execution-mode": "pull"})
    zk.create(queue.entry_prefix(0), job_id.encode(), sequence=True, makepath=True)
    executor = start_executor()
    after = add(admin_api, "test_ok")  # behind it: once it ran, the pull entry was handled
    assert wait_state(admin_api, after)["state"] == "SUCCESS"
    queue_empty(zk)
    job = admin_api.get(job_id).data
    assert (job["state"], job.get("started")) == ("QUEUED", None)
    assert f"{job_id}: a pull-mode job in queue entry" in executor.log()
    record("pull_job_in_queue", "entry consumed, the job QUEUED and never started, logged")


def test_non_admin_version_edit(server: JobApiProcess) -> None:
    admin = server.admin_api()
    user = server.user_api("probe-editor", "probe-Pass-2")
    acl = {"owners": ["group/nuvla-admin"], "edit-data": [user.user_id]}
    job_id = admin.add("job", {"action": "probe-version", "acl": acl}).data["resource-id"]
    answer = user.session.put(f"{server.endpoint}/api/{job_id}", json={"version": 99}, timeout=10)
    assert answer.status_code == 403, answer.text[:300]
    version = admin.get(job_id).data["version"]
    assert version == 2
    record("non_admin_version_edit", f"{answer.status_code}, version still {version}")


def test_newer_version_job(
    admin_api: Api, zk: KazooClient, start_executor: Callable[..., EngineProcess]
) -> None:
    job_id = add(admin_api, "test_ok", version=99)
    start_executor(env={"JOB_NEWER_VERSION_MAX_RELEASES": "1"})
    job = wait_state(admin_api, job_id, timeout=60)
    assert job["state"] == "FAILED"
    assert job["status-message"].startswith("no engine took this job: its version 99")
    queue_empty(zk)
    record("newer_version_job", "FAILED after 1 release: no engine took this job; queue empty")


def test_entry_with_children(
    admin_api: Api, zk: KazooClient, start_executor: Callable[..., EngineProcess]
) -> None:
    path = zk.create(queue.entry_prefix(0), b"not a job", sequence=True, makepath=True)
    zk.create(f"{path}/child", b"", makepath=True)
    start_executor()
    job_id = add(admin_api, "test_ok")
    assert wait_state(admin_api, job_id)["state"] == "SUCCESS"
    queue_empty(zk)
    assert zk.exists(path) is None
    record("entry_with_children", "entry and taken node gone; the job behind it SUCCESS")

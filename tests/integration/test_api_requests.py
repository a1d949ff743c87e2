"""How the job API reads requests, against a real `job-api serve` process: bodies shorter than
their Content-Length, chunked bodies, the content type of JSON bodies, cross-site requests
and the base URI it announces."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import requests
from nuvla.api import Api

from nuvla_job.api.app import COOKIE
from tests.support.jobapi import JobApiProcess
from tests.support.zookeeper import ZooKeeperServer

PUBLIC_URL = "https://jobs.example.org:8443"


@pytest.fixture(scope="module")
def server(zookeeper: ZooKeeperServer) -> Iterator[JobApiProcess]:
    with JobApiProcess(zookeeper.hosts, "--public-url", PUBLIC_URL) as process:
        yield process


@pytest.fixture(scope="module")
def cookie(server: JobApiProcess) -> str:
    """The admin's session cookie, as a browser would hold it."""
    creds = server.credentials()
    response = server.api().login_apikey(creds["key"], creds["secret"])
    return response.cookies[COOKIE]


def _exchange(server: JobApiProcess, request: bytes, half_close: bool = True) -> tuple[int, dict]:
    """Send raw bytes on a new connection; (status, JSON body) of the answer."""
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _request(method: str, path: str, cookie: str, body: bytes, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Cookie: {COOKIE}={cookie}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _jobs(server: JobApiProcess, action: str) -> int:
    return server.admin_api().search("job", filter=f"action='{action}'", last=0).count


# -- bodies -------------------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_a_400(
    server: JobApiProcess, cookie: str
) -> None:
    body = b'{"action": "short-body"}'
    status, answer = _exchange(
        server,
        _request(
            "POST",
            "/api/job",
            cookie,
            body,
            "Content-Type: application/json",
            f"Content-Length: {len(body) + 40}",
        ),
    )
    assert (status, answer["status"]) == (400, 400)
    assert answer["message"] == "the request body is shorter than its Content-Length"
    assert _jobs(server, "short-body") == 0
    assert "Traceback" not in server.log_tail(200)


def test_a_chunked_body_is_read(server: JobApiProcess, cookie: str) -> None:
    body = b'{"action": "chunked-body"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status, answer = _exchange(
        server,
        _request(
            "POST",
            "/api/job",
            cookie,
            chunked,
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
        ),
    )
    assert status == 201, answer
    assert server.admin_api().get(answer["resource-id"]).data["action"] == "chunked-body"


def test_a_chunked_body_over_the_limit_is_a_413(server: JobApiProcess, cookie: str) -> None:
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(80)) + b"0\r\n\r\n"
    status, answer = _exchange(
        server,
        _request(
            "POST",
            "/api/job",
            cookie,
            chunks,
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
        ),
    )
    assert (status, answer["message"]) == (413, f"request body larger than {4 * 1024 * 1024} bytes")


def test_a_chunked_search_form_is_read(server: JobApiProcess, cookie: str) -> None:
    server.admin_api().add("job", {"action": "not-chunked-form"})
    form = b"filter=action%3D%27chunked-form%27&last=0"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(form), form)
    status, answer = _exchange(
        server,
        _request(
            "PUT",
            "/api/job",
            cookie,
            chunked,
            "Content-Type: application/x-www-form-urlencoded",
            "Transfer-Encoding: chunked",
        ),
    )
    # Read, not ignored: without the filter the count would be every job's.
    assert (status, answer["count"], answer["resources"]) == (200, 0, [])


# -- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_bodies_need_the_json_content_type(
    server: JobApiProcess, cookie: str, content_type: str | None
) -> None:
    # What a page of another site (or a same-site page on another port) can make a browser
    # send without asking the server first: it carries the SameSite=Strict cookie when the
    # page is same-site.
    body = b'{"action": "cross-site"}'
    headers = [f"Content-Length: {len(body)}"]
    if content_type:
        headers.append(f"Content-Type: {content_type}")
    status, answer = _exchange(server, _request("POST", "/api/job", cookie, body, *headers))
    assert (status, answer["status"]) == (415, 415)
    assert answer["message"] == "a JSON body needs the header Content-Type: application/json"
    assert _jobs(server, "cross-site") == 0


def test_every_json_route_checks_the_content_type(server: JobApiProcess, cookie: str) -> None:
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "content-types"}).data["resource-id"]
    for method, path in (
        ("POST", "/api/session"),
        ("PUT", f"/api/{job_id}"),
        ("POST", f"/api/{job_id}/cancel"),
    ):
        status, _ = _exchange(
            server,
            _request(method, path, cookie, b"{}", "Content-Type: text/plain", "Content-Length: 2"),
        )
        assert status == 415, (method, path)
    assert admin.get(job_id).data["state"] == "QUEUED"
    # With the right type (a charset is fine) the same requests work.
    response = requests.put(
        f"{server.endpoint}/api/{job_id}",
        data=b'{"progress": 5}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        cookies={COOKIE: cookie},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["progress"] == 5


def test_the_engine_client_still_works(server: JobApiProcess) -> None:
    # nuvla.api sends JSON with its type, searches as forms, operations without any body.
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "client-calls"}).data["resource-id"]
    admin.edit(job_id, {"progress": 3})
    admin.edit(job_id, {})
    assert admin.search("job", filter=f"id='{job_id}'").count == 1
    admin.operation(admin.get(job_id), "cancel")
    assert admin.get(job_id).data["state"] == "CANCELED"
    admin.delete(job_id)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_requests_a_browser_marks_as_from_another_site_change_nothing(
    server: JobApiProcess, cookie: str, site: str
) -> None:
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "fetch-metadata"}).data["resource-id"]
    # A body-less POST is a "simple" request a page may send anywhere: the browser says
    # where it comes from, and only the API's own pages (same-origin) may change things.
    status, answer = _exchange(
        server,
        _request(
            "POST",
            f"/api/{job_id}/cancel",
            cookie,
            b"",
            "Content-Length: 0",
            f"Sec-Fetch-Site: {site}",
        ),
    )
    assert (status, answer["message"]) == (403, "requests from other sites are refused")
    assert admin.get(job_id).data["state"] == "QUEUED"
    status, _ = _exchange(
        server,
        _request(
            "POST",
            f"/api/{job_id}/cancel",
            cookie,
            b"",
            "Content-Length: 0",
            "Sec-Fetch-Site: same-origin",
        ),
    )
    assert status == 200
    assert admin.get(job_id).data["state"] == "CANCELED"


# -- the base URI -------------------------------------------------------------------------------


def test_base_uri_comes_from_the_public_url_not_the_host_header(server: JobApiProcess) -> None:
    response = requests.get(
        f"{server.endpoint}/api/cloud-entry-point",
        headers={"Host": "attacker.example.com"},
        timeout=10,
    )
    assert response.json()["base-uri"] == f"{PUBLIC_URL}/api/"
    cep = Api(endpoint=server.endpoint, persist_cookie=False).cloud_entry_point
    assert cep.base_uri == f"{PUBLIC_URL}/api/"


def test_base_uri_defaults_to_the_listening_address(job_api: JobApiProcess) -> None:
    response = requests.get(
        f"{job_api.endpoint}/api/cloud-entry-point", headers={"Host": "evil:1"}, timeout=10
    )
    assert response.json()["base-uri"] == f"{job_api.endpoint}/api/"


def test_a_bad_public_url_is_a_usage_error(tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    for value in ("jobs.example.org", "ftp://x", "https://x/path?q=1"):
        result = subprocess.run(
            [sys.executable, "-m", "nuvla_job.cli.api", "serve", "--public-url", value]
            + ["--db", str(tmp_path / "jobs.sqlite")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (value, result.stderr)
        assert "--public-url" in result.stderr and "Traceback" not in result.stderr

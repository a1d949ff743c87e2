"""Connections to the job API, against real `job-api serve` processes: idle connections are
closed, slow headers are cut off with a 408, and a connection beyond the maximum is answered
503 at once instead of waiting behind the others."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.jobapi import JobApiProcess
from tests.support.zookeeper import ZooKeeperServer

IDLE, HEADERS, MAX = 1.5, 1.0, 10


@pytest.fixture(scope="module")
def server(zookeeper: ZooKeeperServer) -> Iterator[JobApiProcess]:
    with JobApiProcess(
        zookeeper.hosts,
        "--idle-timeout",
        str(IDLE),
        "--header-timeout",
        str(HEADERS),
        "--max-connections",
        str(MAX),
    ) as process:
        yield process


def _connect(server: JobApiProcess) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=30)


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (reading and dropping what it sends)."""
    start = time.monotonic()
    while sock.recv(65536):
        pass
    return time.monotonic() - start


def _answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_idle_connections_are_closed(server: JobApiProcess) -> None:
    with _connect(server) as silent:
        assert IDLE - 0.2 < _closed_after(silent) < IDLE + 2
    # A kept-alive connection after its answer, too.
    with _connect(server) as kept:
        kept.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = kept.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        assert _closed_after(kept) < IDLE + 2


def test_headers_that_trickle_in_are_cut_off_with_a_408(server: JobApiProcess) -> None:
    with _connect(server) as slow:
        start = time.monotonic()
        slow.sendall(b"GET /api/health HTTP/1.1\r\n")
        try:
            # One header byte well within every read timeout, forever.
            for _ in range(int(HEADERS * 10)):
                slow.sendall(b"X")
                time.sleep(0.3)
        except OSError:
            pass  # closed by the server while we still sent
        status, body = _answer(slow)
        assert time.monotonic() - start < HEADERS + 2
    assert (status, body) == (
        408,
        {"status": 408, "message": "the request's headers did not arrive in time"},
    )
    assert "Traceback" not in server.log_tail(200)


def test_beyond_the_maximum_a_connection_is_refused_at_once(server: JobApiProcess) -> None:
    # The finding: ten idle connections on a server of ten made /api/health time out.
    idle = [_connect(server) for _ in range(MAX)]
    try:
        time.sleep(0.3)  # all accepted
        start = time.monotonic()
        response = requests.get(f"{server.endpoint}/api/health", timeout=5)
        assert time.monotonic() - start < 1.0
        assert response.status_code == 503
        assert response.json() == {
            "status": 503,
            "message": "the job API has no room for another connection; retry later",
        }
        # The idle ones are closed after the idle timeout, and there is room again.
        for sock in idle:
            assert _closed_after(sock) < IDLE + 2
        assert requests.get(f"{server.endpoint}/api/health", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_request_in_progress_is_not_cut_by_the_header_timeout(server: JobApiProcess) -> None:
    # Slow to answer is not slow headers: only the time to read them is limited.
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "connections"}).data["resource-id"]
    for _ in range(3):
        assert admin.get(job_id).data["id"] == job_id
        time.sleep(HEADERS * 0.6)  # within the idle timeout: the connection is reused

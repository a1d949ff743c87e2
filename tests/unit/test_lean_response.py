"""LeanResponse (nuvla_job/transport.py) reads what http.client's own response reads: the
same status, fields, body framing and errors, from raw bytes (the real job API's answers go
through it in tests/integration/test_transport.py)."""

from __future__ import annotations

import http.client
import io

import pytest

from nuvla_job.transport import LeanConnection, LeanResponse


class Wire:
    """What HTTPResponse asks of a socket: a file of the bytes received."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def read(cls: type[http.client.HTTPResponse], data: bytes, method: str = "GET") -> tuple:
    response = cls(Wire(data), method=method)  # type: ignore[arg-type]
    response.begin()
    return (
        response.status,
        response.reason,
        response.version,
        response.getheaders(),
        response.getheader("set-cookie"),
        response.info().get_all("Set-Cookie", []),
        response.will_close,
        response.read(),
    )


ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1; Path=/\r\nset-cookie: b=2\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
]


@pytest.mark.parametrize("data", ANSWERS)
def test_it_reads_what_http_client_reads(data: bytes) -> None:
    lean, stdlib = read(LeanResponse, data), read(http.client.HTTPResponse, data)
    # http.client keeps a folded line's break; the fields are otherwise the same.
    assert lean[:3] == stdlib[:3] and lean[4:] == stdlib[4:]
    assert [(k, " ".join(v.split())) for k, v in lean[3]] == [
        (k, " ".join(v.split())) for k, v in stdlib[3]
    ]


def test_a_head_answer_has_no_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert read(LeanResponse, data, "HEAD")[-1] == b""


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
        (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n", http.client.HTTPException),
        (b"", http.client.RemoteDisconnected),
        (b"SPDY/3 200 OK\r\n\r\n", http.client.BadStatusLine),
    ],
)
def test_bad_answers_raise_http_client_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        LeanResponse(Wire(data), method="GET").begin()  # type: ignore[arg-type]


class Recorder:
    """A connected socket that records what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


@pytest.mark.parametrize("body", [b'{"progress": 40}', None])
def test_a_request_goes_out_in_one_send_with_the_same_bytes(body: bytes | None) -> None:
    lean, stdlib = LeanConnection("127.0.0.1", 9), http.client.HTTPConnection("127.0.0.1", 9)
    for conn in (lean, stdlib):
        conn.sock = Recorder()  # type: ignore[assignment]
        conn.request("PUT", "/api/job/1", body=body, headers={"Content-Type": "application/json"})
    assert len(lean.sock.sent) == 1  # type: ignore[union-attr]
    assert lean.sock.sent == [b"".join(stdlib.sock.sent)]  # type: ignore[union-attr]

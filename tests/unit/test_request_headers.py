"""The job API's request header reader (nuvla_job/api/request_headers.py)."""

from __future__ import annotations

import io

from nuvla_job.api.request_headers import MAX_HEADERS, MAX_LINE, RequestHeaders


def read(text: bytes) -> RequestHeaders:
    return RequestHeaders.read(io.BytesIO(text))


def test_reads_headers_up_to_the_blank_line() -> None:
    headers = read(b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    assert headers.status == ""
    assert headers.get("content-type") == "application/json"
    assert headers.getheader("CONTENT-LENGTH") == "2"
    assert headers.typeheader == "application/json"
    assert headers.get("missing", "d") == "d"
    assert list(headers.headers) == [
        "Host: x\r\n",
        "Content-Type: application/json\r\n",
        "Content-Length: 2\r\n",
    ]


def test_first_value_wins_and_delete_removes_all() -> None:
    headers = read(b"A: 1\r\na: 2\r\nB: 3\r\n\r\n")
    assert headers.get("A") == "1"
    del headers["a"]
    assert "a" not in headers and list(headers.headers) == ["B: 3\r\n"]


def test_folded_lines_continue_the_header() -> None:
    assert read(b"X: one\r\n  two\r\n\r\n").get("x") == "one two"


def test_malformed_input_sets_a_status() -> None:
    assert read(b"no colon here\r\n\r\n").status
    assert read(b" X: leading space\r\n\r\n").status
    assert read(b"X: " + b"a" * MAX_LINE + b"\r\n\r\n").status == "Line too long"
    many = b"".join(b"H%d: v\r\n" % n for n in range(MAX_HEADERS + 1)) + b"\r\n"
    assert read(many).status == "Too many headers"


def test_end_of_stream_ends_the_headers() -> None:
    assert read(b"A: 1\r\n").get("a") == "1"

"""Exceptions reach Sentry through the real sentry-sdk, sent to a small local receiver."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nuvla.api import Api

from tests.integration.test_executor import add, wait_state


class SentryReceiver:
    """Collects the events of Sentry envelopes POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.raw: list[bytes] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver.raw.append(body)
                for line in body.split(b"\n"):
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(item, dict) and "exception" in item:
                        receiver.events.append(item)
                        receiver.arrived.set()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"


@pytest.fixture
def sentry() -> Iterator[SentryReceiver]:
    receiver = SentryReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_action_exception_reaches_sentry_tagged_and_scrubbed(
    sentry: SentryReceiver, job_api, admin_api: Api, start_executor
) -> None:
    start_executor("--name", "exec-sentry", "--sentry-dsn", sentry.dsn)
    job_id = add(admin_api, "test_leaks_secret")
    wait_state(admin_api, job_id)
    assert sentry.arrived.wait(30), "no event reached the receiver"
    [event] = sentry.events
    tags = event["tags"]
    assert tags["job_id"] == job_id
    assert tags["action"] == "test_leaks_secret"
    assert tags["executor"] == "exec-sentry"
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    secret = job_api.credentials()["secret"]
    assert all(secret.encode() not in raw for raw in sentry.raw)
    assert "********" in event["exception"]["values"][-1]["value"]
    assert secret not in admin_api.get(job_id).data["status-message"]

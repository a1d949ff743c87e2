"""A small CIMI server for the Nuvla-domain tests: it serves the few Nuvla resources the
package's actions and distributions read, and hands every other request to the real job API.

Engines point their `--api-url` at it. It holds `deployment` documents and answers, as a Nuvla
server does, what the tests need of them: searching the collection (the filter is recorded,
not evaluated: the test gives the deployments it means to be found), getting one, the `stop`
operation (it creates the `stop_deployment` child job with `parent-job` set, through the job
API, and answers 202) and, for a job targeting a deployment, `get-context` (the deployment's
credential and infrastructure service). Nothing else of Nuvla is imitated.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from nuvla.api import Api

# Hop-by-hop headers and those the proxy recomputes.
_SKIPPED = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}


class CimiFixture:
    def __init__(self, job_api_url: str, admin: Api) -> None:
        self.job_api_url = job_api_url.rstrip("/")
        self.admin = admin  # adds the child jobs of operations
        self.resources: dict[str, dict[str, Any]] = {}  # id -> document
        self.contexts: dict[str, dict[str, Any]] = {}  # deployment id -> get-context map
        self.searches: list[tuple[str, str | None]] = []  # (collection, filter)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> CimiFixture:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what it answers itself -------------------------------------------------------------

    def _own(self, method: str, path: str, body: bytes) -> tuple[int, Any] | None:
        parts = path.split("/")  # "deployment", "deployment/<uuid>", ".../<uuid>/<op>"
        if parts[0] == "deployment":
            if len(parts) == 1 and method == "PUT":
                form = urllib.parse.parse_qs(body.decode())
                self.searches.append(("deployment", (form.get("filter") or [None])[0]))
                docs = [d for i, d in self.resources.items() if i.startswith("deployment/")]
                return 200, {"count": len(docs), "resources": docs, "id": "deployment"}
            resource_id = "/".join(parts[:2])
            doc = self.resources.get(resource_id)
            if doc is None:
                return 404, {"status": 404, "message": f"{resource_id} not found"}
            if len(parts) == 2 and method == "GET":
                return 200, doc
            if len(parts) == 3 and parts[2] == "stop" and method == "POST":
                data = json.loads(body or b"{}")
                child = {
                    "action": "stop_deployment",
                    "target-resource": {"href": resource_id},
                    "execution-mode": "pull",  # run by nobody here: the test settles it
                    "priority": 50 if data.get("low-priority") else 10,
                }
                if data.get("parent-job"):
                    child["parent-job"] = data["parent-job"]
                job_id = self.admin.add("job", child).data["resource-id"]
                return 202, {
                    "status": 202,
                    "message": "stopping",
                    "resource-id": resource_id,
                    "location": job_id,
                }
        if parts[0] == "job" and len(parts) == 3 and parts[2] == "get-context":
            job = self.admin.get("/".join(parts[:2])).data
            target = (job.get("target-resource") or {}).get("href")
            if target in self.contexts:
                return 200, self.contexts[target]
        return None

    # -- the server -------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                relative = path.removeprefix("/api/").strip("/")
                own = fixture._own(self.command, relative, body)
                if own is not None:
                    status, doc = own
                    payload = json.dumps(doc).encode()
                    self._answer(status, [("Content-Type", "application/json")], payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIPPED}
                answer = requests.request(
                    self.command,
                    fixture.job_api_url + self.path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=30,
                )
                kept = [(k, v) for k, v in answer.raw.headers.items() if k.lower() not in _SKIPPED]
                self._answer(answer.status_code, kept, answer.content)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _any

        return Handler

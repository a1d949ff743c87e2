"""`http_request`: call the URL of the job's payload and record the answer in the job.

Payload::

    {"url": "https://...",              required, http or https
     "method": "POST",                  default GET
     "headers": {"name": "value"},      default none
     "body": "text" or any JSON value,  JSON values are sent as application/json
     "timeout": 30,                     seconds, default 30
     "expected-status": 200 or [200, 201],  default: any 2xx
     "max-response": 10000}             characters of the body kept, default 10,000

The job gets `output` = JSON `{"status", "reason", "content-type", "body", "truncated"}` and a
status message `METHOD URL -> STATUS REASON`; it succeeds when the status is expected.
Secrets stay out of logs and of the job: header values whose name or form says credential,
the password of the URL and its credential-like query parameters are masked.
"""

import json
import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from nuvla_job.job import Job
from nuvla_job.monitoring import MASK
from nuvla_job.registry import action

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 3600.0
DEFAULT_MAX_RESPONSE = 10_000
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SECRET_NAME = re.compile(
    r"auth|token|secret|password|passwd|pwd|key|cookie|session|"
    r"signature|credential",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"^\s*(bearer|basic|digest|token)\s", re.IGNORECASE)


class BadPayload(ValueError):
    pass


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers as they may be logged: credential-like values masked."""
    return {
        name: MASK if SECRET_NAME.search(name) or SECRET_VALUE.match(value) else value
        for name, value in headers.items()
    }


def safe_url(url: str) -> str:
    """The URL as it may be logged: no password, credential-like query values masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = urlencode(
        [
            (name, MASK if SECRET_NAME.search(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _number(payload: dict, name: str, default: float, low: float, high: float) -> float:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise BadPayload(f"'{name}' must be a number in ]{low}, {high}], not {value!r}")
    return float(value)


def _expected(payload: dict) -> set[int] | None:
    value = payload.get("expected-status")
    if value is None:
        return None  # any 2xx
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and 100 <= v <= 599 for v in values):
        raise BadPayload(f"'expected-status' must be a status or a list of them, not {value!r}")
    return set(values)


def parse_request(payload: object) -> dict:
    """The request to send, from the job's payload; BadPayload says what is wrong."""
    if not isinstance(payload, dict):
        raise BadPayload("the payload must be a JSON object with at least 'url'")
    url = payload.get("url")
    if (
        not isinstance(url, str)
        or urlsplit(url).scheme not in ("http", "https")
        or not urlsplit(url).netloc
    ):
        raise BadPayload("'url' must be an http or https URL")
    method = str(payload.get("method", "GET")).upper()
    if method not in METHODS:
        raise BadPayload(f"'method' must be one of {', '.join(METHODS)}")
    headers = payload.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise BadPayload("'headers' must be an object of strings")
    request = {
        "method": method,
        "url": url,
        "headers": headers,
        "timeout": _number(payload, "timeout", DEFAULT_TIMEOUT, 0, MAX_TIMEOUT),
    }
    if "body" in payload:
        body = payload["body"]
        request["data" if isinstance(body, str) else "json"] = body
    max_response = payload.get("max-response", DEFAULT_MAX_RESPONSE)
    if isinstance(max_response, bool) or not isinstance(max_response, int) or max_response < 0:
        raise BadPayload(f"'max-response' must be an integer >= 0, not {max_response!r}")
    return {"request": request, "expected": _expected(payload), "max_response": max_response}


def _read_text(response: requests.Response, limit: int) -> tuple[str, bool]:
    """At most `limit` characters of the body, and whether there was more.

    Reads a bounded number of bytes, so a huge answer is never held in memory.
    """
    raw = response.raw.read(4 * limit + 4, decode_content=True) if limit else b""
    more = bool(response.raw.read(1, decode_content=True)) if limit else True
    text = raw.decode(response.encoding or "utf-8", "replace")
    return text[:limit], more or len(text) > limit


@action("http_request", pull_mode_support=True)
class HttpRequest:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        try:
            spec = parse_request(self.job.payload)
        except BadPayload as exc:
            self.job.set_status_message(f"bad payload: {exc}")
            return 1
        request = spec["request"]
        shown = f"{request['method']} {safe_url(request['url'])}"
        log.info("%s: %s headers=%s", self.job.id, shown, masked_headers(request["headers"]))
        try:
            with requests.request(**request, stream=True, allow_redirects=False) as response:
                body, truncated = _read_text(response, spec["max_response"])
        except requests.Timeout:
            self.job.set_status_message(f"{shown}: no answer within {request['timeout']:g} s")
            return 1
        except requests.RequestException as exc:
            # The exception's text may hold the full URL (and its credentials): not shown.
            self.job.set_status_message(f"{shown}: request failed ({type(exc).__name__})")
            return 1
        output = {
            "status": response.status_code,
            "reason": response.reason,
            "content-type": response.headers.get("content-type"),
            "body": body,
            "truncated": truncated,
        }
        self.api.edit(self.job.id, {"output": json.dumps(output)})
        expected = spec["expected"]
        ok = (
            (200 <= response.status_code < 300)
            if expected is None
            else response.status_code in expected
        )
        message = f"{shown} -> {response.status_code} {response.reason}"
        if not ok:
            wanted = "a 2xx status" if expected is None else " or ".join(map(str, sorted(expected)))
            message += f" (expected {wanted})"
        self.job.set_status_message(message)
        return 0 if ok else 1

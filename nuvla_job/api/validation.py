"""Checking job documents sent by callers against the job resource's attribute types."""

from __future__ import annotations

from typing import Any

import orjson

from ..timeutil import format_time, parse_time
from .errors import ApiError, bad_request
from .schema import ACL_RIGHTS, ATTRIBUTES, MAX_BACKOFF, MAX_RETRIES, RETRY_KEYS

MAX_STATUS_MESSAGE = 100_000
# Bounds on what one job may hold, so that what a search or an aggregation scans per job is
# bounded too (a terms aggregation reads every element of a list).
MAX_LIST_LENGTH = 10_000
MAX_DOCUMENT_BYTES = 1024 * 1024  # the stored JSON of one job


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_href(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != {"href"} or not isinstance(value["href"], str):
        raise bad_request(f"'{name}' must be a map with one string attribute 'href'")
    return {"href": value["href"]}


def _check_value(name: str, kind: str, value: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise bad_request(f"'{name}' must be a string")
    elif kind == "int":
        if not _is_int(value):
            raise bad_request(f"'{name}' must be an integer")
    elif kind == "date":
        if not isinstance(value, str):
            raise bad_request(f"'{name}' must be an ISO-8601 timestamp")
        try:
            value = format_time(parse_time(value))
        except ValueError:
            raise bad_request(f"'{name}' must be an ISO-8601 timestamp") from None
    elif kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad_request(f"'{name}' must be a list of strings")
        _check_length(name, value)
    elif kind == "href":
        value = _check_href(name, value)
    elif kind == "hrefs":
        if not isinstance(value, list):
            raise bad_request(f"'{name}' must be a list of maps with an 'href'")
        _check_length(name, value)
        value = [_check_href(name, v) for v in value]
    elif kind == "acl":
        value = check_acl(value)
    elif kind == "retry":
        value = _check_retry(name, value)
    return value


def _is_seconds(value: Any) -> bool:
    """A wait of a retry policy: more than 0 s, at most MAX_BACKOFF (so never infinite)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_BACKOFF
    )


def _check_retry(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be a map of {', '.join(RETRY_KEYS)}")
    unknown = sorted(k for k in value if k not in RETRY_KEYS)
    if unknown:
        raise bad_request(f"'{name}' has unknown key(s) {', '.join(unknown)}")
    retries = value.get("retries", 0)
    if not _is_int(retries) or not 0 <= retries <= MAX_RETRIES:
        raise bad_request(f"'{name}/retries' must be an integer from 0 to {MAX_RETRIES}")
    for key in ("backoff", "max-backoff"):
        if key in value and not _is_seconds(value[key]):
            raise bad_request(
                f"'{name}/{key}' must be a number of seconds > 0 and at most {MAX_BACKOFF:.0f}"
            )
    if value.get("max-backoff", float("inf")) < value.get("backoff", 0):
        raise bad_request(f"'{name}/max-backoff' must not be shorter than '{name}/backoff'")
    return value


def _check_length(name: str, value: list[Any]) -> None:
    if len(value) > MAX_LIST_LENGTH:
        raise bad_request(f"'{name}' holds more than {MAX_LIST_LENGTH} elements")


def check_document_size(doc: dict[str, Any]) -> None:
    """A 413 when the stored form of a job would be larger than MAX_DOCUMENT_BYTES."""
    size = len(orjson.dumps(doc))
    if size > MAX_DOCUMENT_BYTES:
        raise ApiError(
            413, f"the job would be {size} bytes: more than the {MAX_DOCUMENT_BYTES} a job may hold"
        )


def check_acl(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise bad_request("'acl' must be a map of rights to lists of principals")
    for right, principals in value.items():
        if right not in ACL_RIGHTS:
            raise bad_request(f"'acl' has an unknown right '{right}'")
        if not isinstance(principals, list) or not all(isinstance(p, str) for p in principals):
            raise bad_request(f"'acl/{right}' must be a list of strings")
        _check_length(f"acl/{right}", principals)
    return value


def check_attributes(body: Any, ignored: frozenset[str]) -> dict[str, Any]:
    """Validate the attributes of a request body; drop those in ``ignored``.

    Unknown attributes and values of the wrong type are a 400 naming the attribute.
    """
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    unknown = sorted(k for k in body if k not in ATTRIBUTES)
    if unknown:
        raise bad_request(f"unknown attribute(s): {', '.join(unknown)}")
    result: dict[str, Any] = {}
    for name, value in body.items():
        if name in ignored:
            continue
        if value is None:
            raise bad_request(f"'{name}' must not be null")
        result[name] = _check_value(name, ATTRIBUTES[name], value)
    if "priority" in result and not 0 <= result["priority"] <= 999:
        raise bad_request("'priority' must be between 0 and 999")
    if "progress" in result and not 0 <= result["progress"] <= 100:
        raise bad_request("'progress' must be between 0 and 100")
    if "return-code" in result and result["return-code"] < 0:
        raise bad_request("'return-code' must be 0 or more")
    if "duration" in result and result["duration"] < 0:
        raise bad_request("'duration' must be 0 or more")
    if "attempts" in result and result["attempts"] < 0:
        raise bad_request("'attempts' must be 0 or more")
    if "status-message" in result:
        result["status-message"] = result["status-message"][:MAX_STATUS_MESSAGE]
    return result

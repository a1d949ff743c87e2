"""The lean HTTP transport under nuvla.api's session, against the real job API."""

from __future__ import annotations

import pytest
import requests
import requests.adapters
from nuvla.api import Api
from nuvla.api.api import NuvlaError

from nuvla_job.transport import LeanTransport
from tests.support.jobapi import JobApiProcess


class RefusingAdapter(requests.adapters.BaseAdapter):
    """Mounted to prove that calls no longer go through requests' adapters."""

    def send(self, *args: object, **kwargs: object) -> requests.Response:
        raise AssertionError("sent through requests instead of the lean transport")

    def close(self) -> None:
        pass


def lean(api: Api) -> Api:
    LeanTransport.install(api.session)
    api.session.mount("http://", RefusingAdapter())
    return api


def test_calls_go_through_the_lean_transport(job_api: JobApiProcess) -> None:
    api = lean(job_api.admin_api())
    job_id = api.add("job", {"action": "sleep", "payload": "{}", "tags": ["lean"]}).data[
        "resource-id"
    ]
    assert api.get(job_id).data["state"] == "QUEUED"
    assert api.edit(job_id, {"progress": 40}).data["progress"] == 40
    found = api.search("job", filter=f"id='{job_id}'", select="id,progress")
    assert [r.data["progress"] for r in found.resources] == [40]
    with pytest.raises(NuvlaError) as error:
        api.get("job/00000000-0000-0000-0000-000000000000")
    assert error.value.response.status_code == 404
    api.delete(job_id)


def test_a_connection_closed_by_the_server_is_replaced(fresh_api: JobApiProcess) -> None:
    api = lean(fresh_api.admin_api())
    job_id = api.add("job", {"action": "sleep", "payload": "{}"}).data["resource-id"]
    assert api.get(job_id).data["id"] == job_id  # leaves a kept-alive connection in the pool
    fresh_api.stop()
    fresh_api.start()
    # The pooled connection is dead; the call goes out on a new one (re-logging in if the
    # session did not survive the restart) instead of failing.
    assert api.get(job_id).data["id"] == job_id


def test_unusual_requests_still_go_through_requests(job_api: JobApiProcess) -> None:
    api = job_api.admin_api()
    LeanTransport.install(api.session)
    # A proxy is requests' business: the call must take requests' path, which fails here
    # because nothing listens on the proxy's port.
    api.session.proxies = {"http": "http://127.0.0.1:9"}
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get("job/00000000-0000-0000-0000-000000000000")


def test_unreachable_server_is_requests_connection_error() -> None:
    api = Api(endpoint="http://127.0.0.1:9", persist_cookie=False)
    lean(api)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get("job/00000000-0000-0000-0000-000000000000")

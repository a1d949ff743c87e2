"""Job API replicas for the suite: two ``job-api serve`` processes on one PostgreSQL database
behind HAProxy, which sends each request to the next replica in turn
(tests/support/haproxy-alternate.cfg). Tests reach them as they reach one process: the
balancer is ``endpoint``; ``served()`` tells which replica answered how many requests.

Usage::

    with JobApiReplicas(zk_hosts, db=postgres_url) as replicas:
        api = replicas.admin_api()    # through the balancer
        replicas.served()             # {replica's endpoint: requests it answered}
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from nuvla_job.localstack.jobapi import JobApiClients, JobApiProcess
from nuvla_job.localstack.lifecycle import Service
from tests.support import waiting
from tests.support.haproxy import Balancer, require_haproxy

ALTERNATE = Path(__file__).with_name("haproxy-alternate.cfg")
REQUESTS = "nuvla_job_http_requests_total"
# What the fixtures and the balancer ask, not the test: left out of served().
NOT_SERVED = frozenset({"/api/health", "/metrics"})


def _healthy(endpoint: str) -> bool:
    try:
        return requests.get(f"{endpoint}/api/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


class JobApiReplicas(JobApiClients, Service):
    """``count`` job API processes on the PostgreSQL database ``db``, behind one balancer.

    The first replica makes the tables and the admin key; the others use its key file, as
    the compose stack's replicas share theirs.
    """

    def __init__(self, zk_hosts: str, *extra_args: str, db: str, count: int = 2) -> None:
        require_haproxy()
        self.replicas = [JobApiProcess(zk_hosts, *extra_args, db=db) for _ in range(count)]
        first = self.replicas[0]
        for replica in self.replicas[1:]:
            replica.credentials_path = first.credentials_path
        self.credentials_path = first.credentials_path
        self.program, self.this_copy, self.db = first.program, first.this_copy, db
        self.workdir = Path(tempfile.mkdtemp(prefix="job-api-replicas-"))
        self.balancer = Balancer(
            {str(i): r.port for i, r in enumerate(self.replicas)}, self.workdir, ALTERNATE
        )

    @property
    def endpoint(self) -> str:
        return self.balancer.endpoint

    @property
    def tls(self) -> bool:
        return False

    @property
    def log_paths(self) -> list[Path]:
        return [path for replica in self.replicas for path in replica.log_paths]

    def start(self) -> JobApiReplicas:
        for replica in self.replicas:  # in turn: the first writes the key the others read
            replica.start(wait_queue=False)
        self.balancer.start()
        self.wait_queue_connected()
        return self

    def wait_queue_connected(self, timeout: float = 30.0) -> None:
        """Every replica connected to ZooKeeper, and the balancer passing requests on."""
        for replica in self.replicas:
            replica.wait_queue_connected(timeout)
        waiting.wait_for(lambda: _healthy(self.endpoint), "the balancer", timeout)

    def served(self) -> dict[str, float]:
        """The requests each replica has answered (by its own endpoint), but for health
        checks and scrapes."""
        counts = {}
        for replica in self.replicas:
            text = requests.get(f"{replica.endpoint}/metrics", timeout=5).text
            counts[replica.endpoint] = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == REQUESTS and sample.labels["route"] not in NOT_SERVED
            )
        return counts

    def close(self) -> None:
        self.balancer.stop()
        for replica in self.replicas:
            replica.close()
        shutil.rmtree(self.workdir, ignore_errors=True)  # the balancer's config and log

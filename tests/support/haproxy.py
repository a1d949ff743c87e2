"""The compose file's load balancer (compose/haproxy.cfg) run by Debian's HAProxy in front
of local job API replicas: its addresses rewritten, everything else as shipped."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from nuvla_job.localstack.ports import free_port
from nuvla_job.localstack.processes import REPO, stop_process
from tests.support.needs import require

HAPROXY = "/usr/sbin/haproxy"
CONFIG = REPO / "compose" / "haproxy.cfg"


def require_haproxy() -> None:
    require(Path(HAPROXY).exists(), f"{HAPROXY} (Debian's haproxy) runs the balancer")


class Balancer:
    """HAProxy with ``config``: its frontend on a free loopback port, its backend servers,
    in order, sent to the ``ports`` of the replicas, in order; stopped by pid."""

    def __init__(self, ports: Mapping[str, int], workdir: Path, config: Path = CONFIG) -> None:
        self.port = free_port()
        text = re.sub(
            r"^(\s*)bind\s+:\d+",
            rf"\g<1>bind 127.0.0.1:{self.port}",
            config.read_text(),
            flags=re.M,
        )
        servers = re.findall(r"^\s*server\s+(\S+)\s", text, flags=re.M)
        if len(servers) < len(ports):
            raise ValueError(f"{config} has {len(servers)} servers for {len(ports)} replicas")
        for server, port in zip(servers, ports.values(), strict=False):
            text = re.sub(
                rf"^(\s*server\s+{re.escape(server)}\s+)\S+",
                rf"\g<1>127.0.0.1:{port}",
                text,
                flags=re.M,
            )
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(text)
        self.log_path = workdir / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> int | None:
        return None if self.process is None else stop_process(self.process, 10.0)

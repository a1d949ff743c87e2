"""Free loopback ports for test services."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now.

    The kernel picks the port (bind to 0), so it is outside the well-known range and not
    reused immediately. There is an unavoidable race between closing this socket and the
    service binding it; callers that start a server should retry with a new port if the
    bind fails (ZooKeeperServer.start, JobApiProcess.start and
    processes.serving_on_free_port do).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])

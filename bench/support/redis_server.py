"""A Redis server on a free loopback port (Debian's `redis-server`), stopped by pid."""

from __future__ import annotations

import shutil

from nuvla_job.localstack.lifecycle import Service
from nuvla_job.localstack.processes import EngineProcess, serving_on_free_port


class RedisServerNotFound(RuntimeError):
    pass


class RedisServer(Service):
    """``redis-server`` without persistence (as the benchmarks' ZooKeeper runs with
    ``forceSync=no``), bound to 127.0.0.1; its log is its process log."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.process: EngineProcess | None = None

    def start(self) -> RedisServer:
        if self.binary is None:
            raise RedisServerNotFound(
                "redis-server is not installed (Debian: apt-get install redis-server; "
                "`make bench` installs it)"
            )
        binary = self.binary

        def start_on(port: int) -> EngineProcess:
            args = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--dir", "."]
            process = EngineProcess("redis-server", args, program=[binary])
            process.start()
            return process

        self.process = serving_on_free_port(start_on, "Ready to accept connections")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        assert self.process is not None and self.process.port is not None
        return f"redis://127.0.0.1:{self.process.port}/0"

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None

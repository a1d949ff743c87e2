"""A real ZooKeeper ensemble on loopback: N JVMs (three by default), one data dir each.

Usage::

    ensemble = ZooKeeperEnsemble(3)
    ensemble.start()                  # all members at once: none serves before a quorum
    client = KazooClient(hosts=ensemble.hosts)   # "127.0.0.1:A,127.0.0.1:B,127.0.0.1:C"
    leader = ensemble.wait_for_leader()          # the member whose `srvr` says Mode: leader
    leader.kill()                     # the others elect a new leader; clients fail over
    leader.start()                    # rejoins as a follower (same ports, same data dir)
    ensemble.close()

Each member is a :class:`ZooKeeperServer` running ``QuorumPeerMain`` with ``server.N`` lines
(quorum and election ports) in its config and its ``myid`` file in its data directory.
"""

from __future__ import annotations

import re
import threading
import time

from .lifecycle import Service
from .ports import free_port
from .zookeeper import ZooKeeperServer, ZooKeeperStartError

QUORUM_MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
_MODE = re.compile(r"^Mode: (\w+)", re.MULTILINE)


class EnsembleMember(ZooKeeperServer):
    """One server of an ensemble: `myid` identifies it among the `server.N` lines."""

    main_class = QUORUM_MAIN_CLASS

    def __init__(self, myid: int, port: int, quorum_config: dict[str, str], **kw: object) -> None:
        super().__init__(port, extra_config=quorum_config, **kw)  # type: ignore[arg-type]
        self.myid = myid
        (self.data_dir / "myid").write_text(f"{myid}\n", "ascii")

    def mode(self) -> str | None:
        """ "leader", "follower", or None while not serving (down, electing, syncing)."""
        match = _MODE.search(self.four_letter_word("srvr", 1.0))
        return match.group(1) if match else None


class ZooKeeperEnsemble(Service):
    """`size` members on 127.0.0.1, each with its own client, quorum and election ports."""

    host = "127.0.0.1"

    def __init__(
        self,
        size: int = 3,
        *,
        tick_time_ms: int = 500,
        init_limit: int = 20,
        sync_limit: int = 5,
        start_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("an ensemble needs at least one member")
        ids = range(1, size + 1)
        client_ports = {i: free_port(self.host) for i in ids}
        servers = {
            f"server.{i}": f"{self.host}:{free_port(self.host)}:{free_port(self.host)}" for i in ids
        }
        quorum_config = {
            # Ticks a follower may take to connect and sync to a leader, and to lag behind.
            "initLimit": str(init_limit),
            "syncLimit": str(sync_limit),
            **servers,
        }
        self.members = [
            EnsembleMember(
                i,
                client_ports[i],
                quorum_config,
                tick_time_ms=tick_time_ms,
                start_timeout=start_timeout,
            )
            for i in ids
        ]
        self.start_timeout = start_timeout

    @property
    def hosts(self) -> str:
        """The connection string listing every member."""
        return ",".join(member.hosts for member in self.members)

    def start(self) -> None:
        """Start every stopped member at once and wait until each one serves requests.

        A member answers only once a quorum has formed, so they cannot start one by one.
        """
        errors: list[BaseException] = []

        def start(member: EnsembleMember) -> None:
            try:
                member.start()
            except BaseException as exc:  # reported below, after every thread has ended
                errors.append(exc)

        threads = [
            threading.Thread(target=start, args=(m,), daemon=True)
            for m in self.members
            if not m.running
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.stop()
            raise errors[0]

    def leader(self) -> EnsembleMember | None:
        """The member that reports itself leader now, if any."""
        for member in self.members:
            if member.running and member.mode() == "leader":
                return member
        return None

    def wait_for_leader(self, timeout: float | None = None) -> EnsembleMember:
        """Wait until a running member is leader and every running member serves."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            modes = [m.mode() for m in self.members if m.running]
            leader = self.leader()
            if leader is not None and None not in modes:
                return leader
            time.sleep(0.05)
        raise ZooKeeperStartError(f"no leader elected within {timeout or self.start_timeout} s")

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def close(self) -> None:
        """Stop every member and delete their directories."""
        for member in self.members:
            member.close()

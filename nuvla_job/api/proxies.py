"""The client's address behind load balancers: ``X-Forwarded-For`` from trusted proxies only.

Behind a balancer every request comes from the balancer's address, and the login back-off,
which counts failures per name *and address*, would count every client as one: an
attacker's guesses would lock the name out for everybody. With ``--trusted-proxy`` the job
API takes the address the trusted proxies say they received the request from. It reads
``X-Forwarded-For`` from the right, skipping trusted hops, and stops at the first address it
does not trust: what a client writes in the header itself is further left and is never
believed. Without trusted proxies the header is ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# How long a proxy given by name keeps the addresses it resolved to (a balancer restarted by
# its orchestrator may come back on another address).
RESOLVE_EVERY = 30.0


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed: addresses, networks (CIDR) or host
    names (resolved at most every 30 s)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.networks: list[Network] = []
        self.names: list[str] = []
        for value in values:
            value = value.strip()
            if not value:
                continue
            try:
                self.networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                if not _is_host_name(value):
                    message = f"'{value}' is not an address, a network or a host name"
                    raise ValueError(message) from None
                self.names.append(value)
        self._resolved: list[Network] = []
        self._resolved_at = -RESOLVE_EVERY

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in [*self.networks, *self._by_name()])

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The address a request came from: ``peer`` unless it is a trusted proxy, then the
        rightmost address of ``forwarded_for`` that is not one (or the leftmost when every
        hop is trusted)."""
        if not self or not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop if _is_address(hop) else peer
        return hops[0] if hops and _is_address(hops[0]) else peer

    def _by_name(self) -> list[Network]:
        if not self.names:
            return []
        now = time.monotonic()
        if now - self._resolved_at >= RESOLVE_EVERY:
            self._resolved_at = now
            found: list[Network] = []
            for name in self.names:
                try:
                    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
                except OSError as exc:
                    log.warning("trusted proxy %s: cannot resolve it (%s)", name, exc)
                    continue
                found += [ipaddress.ip_network(info[4][0]) for info in infos]
            self._resolved = found
        return self._resolved


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_host_name(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and all(
        0 < len(label) <= 63
        and label.replace("-", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
        for label in labels
    )

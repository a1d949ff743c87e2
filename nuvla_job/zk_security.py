"""ZooKeeper security: digest authentication with ACLs on the engine's nodes, and TLS.

With an auth ``user:password`` every client adds that digest identity to its session and
creates every node (queue entries, taken nodes, election and lock nodes, and the parents
created on the way) with an ACL that gives ALL to that identity only. ACLs are per node and
fixed at creation: nodes created before auth was turned on stay open until
:func:`secure_tree` sets the ACL on them (the engine does it at start for the parents, the
``job zk-secure`` command for a whole tree).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.security import ACL, make_digest_acl

if TYPE_CHECKING:
    from kazoo.client import KazooClient

# The trees the engine owns: the queue, the distributors' elections, the restore lock,
# the executors' registry (if any), and the concurrency limits.
ENGINE_ROOTS = ("/job", "/election", "/locks", "/executors", "/limits")


class ZkAccessDenied(RuntimeError):
    """ZooKeeper refused access to an engine node: it is protected by other credentials."""


def parse_auth(value: str) -> str:
    """Check a ``user:password`` digest credential; the error never repeats the value."""
    value = value.strip()
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("ZooKeeper auth must be 'user:password' (both non-empty)")
    return value


def read_auth_file(path: str | os.PathLike[str]) -> str:
    """The ``user:password`` in the first line of `path`."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"cannot read the ZooKeeper auth file {path}: {type(exc).__name__}"
        ) from None
    return parse_auth(first)


@dataclass(frozen=True)
class ZkSecurity:
    """How to authenticate to ZooKeeper and protect nodes; the empty value means neither."""

    auth: str | None = None  # "user:password"
    tls: bool = False
    tls_ca: str | None = None  # CA bundle the server's certificate must chain to
    tls_cert: str | None = None  # client certificate, for servers asking for one
    tls_key: str | None = None
    tls_check_hostname: bool = True

    def __repr__(self) -> str:  # never the password
        user = self.auth.partition(":")[0] if self.auth else None
        return f"ZkSecurity(user={user!r}, tls={self.tls})"

    @property
    def acl(self) -> list[ACL] | None:
        """ALL for our digest identity only; None without auth (kazoo's open default)."""
        if not self.auth:
            return None
        user, _, password = self.auth.partition(":")
        return [make_digest_acl(user, password, all=True)]

    def client_kwargs(self) -> dict[str, Any]:
        """KazooClient keyword arguments for this configuration."""
        kw: dict[str, Any] = {}
        if self.auth:
            kw["auth_data"] = [("digest", self.auth)]
            kw["default_acl"] = self.acl
        if self.tls:
            kw.update(
                use_ssl=True,
                ca=self.tls_ca,
                certfile=self.tls_cert,
                keyfile=self.tls_key,
                verify_certs=True,
                check_hostname=self.tls_check_hostname,
            )
        return kw


def _acl_key(acls: Iterable[ACL]) -> set[tuple[int, str, str]]:
    return {(acl.perms, acl.id.scheme, acl.id.id) for acl in acls}


def _denied(what: str, node: str) -> ZkAccessDenied:
    return ZkAccessDenied(
        f"ZooKeeper refuses to {what} {node}: it is protected by other "
        f"credentials (check --zk-auth)"
    )


def _pipelined(
    nodes: list[str], call: Callable[[str], Any]
) -> Iterator[tuple[str, Any, BaseException | None]]:
    """`call(node)` for every node, pipelined: (node, value, error) for missing or denied ones."""
    from .zk import pipelined  # zk imports this module

    return pipelined(nodes, call, expected=(NoNodeError, NoAuthError))


def _levels(client: KazooClient, roots: Iterable[str], depth: int | None) -> Iterator[list[str]]:
    """The nodes under `roots` level by level, `depth` levels below them (all with None).

    Listed levels hold existing nodes only; the last level is not listed (an entries node
    may have a million children), so it may name nodes that are gone by now.
    """
    level = list(roots)
    current = 0
    while level:
        if depth is not None and current >= depth:
            yield level
            return
        present: list[str] = []
        below: list[str] = []
        for node, children, error in _pipelined(level, client.get_children_async):
            if isinstance(error, NoAuthError):
                raise _denied("list", node)
            if error is None:
                present.append(node)
                below.extend(f"{node.rstrip('/')}/{child}" for child in children)
        yield present
        current += 1
        level = below


def secure_tree(
    client: KazooClient,
    security: ZkSecurity,
    roots: Iterable[str] = ENGINE_ROOTS,
    depth: int | None = 1,
) -> list[str]:
    """Give the existing nodes under `roots` (down to `depth` levels below them, all with
    None) the ACL of `security`; return the paths changed.

    Without auth there is nothing to set. A node whose ACL we may not read or change means
    another identity owns the tree: :class:`ZkAccessDenied`.
    """
    wanted = security.acl
    if not wanted:
        return []
    changed: list[str] = []
    for level in _levels(client, roots, depth):
        stale: list[str] = []
        for node, value, error in _pipelined(level, client.get_acls_async):
            if isinstance(error, NoAuthError):
                raise _denied("read the ACL of", node)
            if error is None and _acl_key(value[0]) != _acl_key(wanted):
                stale.append(node)
        for node, _, error in _pipelined(stale, lambda n: client.set_acls_async(n, wanted)):
            if isinstance(error, NoAuthError):
                raise _denied("set the ACL of", node)
            if error is None:
                changed.append(node)
    return changed

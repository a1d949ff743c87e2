"""Who is calling: users, API keys and sessions, kept in the job API's store.

Secrets (passwords, API-key secrets) are stored only as argon2 hashes. Session tokens are
random and stored as SHA-256 digests, so a copy of the database does not let anyone in.
The rules live here; the records go to any store.IdentityStore.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import gevent
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .store import DuplicateId, IdentityStore, Principal, SessionRecord

ADMIN_GROUP = "group/nuvla-admin"
USER_GROUP = "group/nuvla-user"
ANON_GROUP = "group/nuvla-anon"

SESSION_TTL = 7 * 24 * 3600.0

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as for a known one,
# so response times do not tell which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous) caller: its user id and every claim it holds."""

    identity: str
    claims: frozenset[str]
    session_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.claims

    @property
    def is_anonymous(self) -> bool:
        return self.identity == ANON_GROUP


ANONYMOUS = Caller(ANON_GROUP, frozenset({ANON_GROUP}))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _verify(secret_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


class Identities:
    """Users, API keys and sessions, on a store.IdentityStore."""

    def __init__(self, store: IdentityStore, cache_sessions: bool = True) -> None:
        """``cache_sessions``: keep sessions read in this process. Off when other processes
        share the database (replicas): a logout through any of them must hold at once on
        every one, so each request reads its session from the database."""
        self.store = store
        self.cache_sessions = cache_sessions
        # token digest -> Caller, expiry: saves a database read on every request.
        self._sessions: dict[str, tuple[Caller, float]] = {}

    # -- principals -----------------------------------------------------------------------

    def _add_principal(
        self, kind: str, name: str, secret: str, identity: str, groups: list[str]
    ) -> str:
        principal_id = name if kind == "api-key" else identity
        claims = tuple(sorted({identity, USER_GROUP, ANON_GROUP, *groups}))
        self.store.add_principal(
            Principal(principal_id, kind, name, _hasher.hash(secret), identity, claims, time.time())
        )
        return principal_id

    def add_user(self, username: str, password: str, groups: list[str] | None = None) -> str:
        """Create a user; returns its id (``user/<uuid>``). ValueError when the name is taken."""
        try:
            return self._add_principal(
                "user", username, password, f"user/{uuid.uuid4()}", list(groups or [])
            )
        except DuplicateId:
            raise ValueError(f"user {username!r} already exists") from None

    def add_api_key(self, identity: str, groups: list[str] | None = None) -> tuple[str, str]:
        """Create an API key acting as ``identity``; returns (key id, secret)."""
        key = f"credential/{uuid.uuid4()}"
        secret = secrets.token_urlsafe(32)
        self._add_principal("api-key", key, secret, identity, list(groups or []))
        return key, secret

    def has_admin_key(self) -> bool:
        return self.store.has_api_key_with(ADMIN_GROUP)

    def check(self, kind: str, name: str, secret: str) -> Caller | None:
        """The caller these credentials identify, or None. Constant work either way."""
        principal = self.store.principal(kind, name)
        # An unknown name still costs one verification, against a hash of the same cost.
        secret_hash = principal.secret_hash if principal else _DUMMY_HASH
        # argon2 is CPU-heavy and releases the GIL: verify in the hub's thread pool so other
        # requests keep being served meanwhile.
        ok = gevent.get_hub().threadpool.apply(_verify, (secret_hash, secret))
        if not ok or principal is None:
            return None
        return Caller(principal.identity, frozenset(principal.claims))

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, caller: Caller, ttl: float = SESSION_TTL) -> tuple[str, str]:
        """Start a session; returns (session id, token for the cookie)."""
        session_id = f"session/{uuid.uuid4()}"
        token = secrets.token_urlsafe(32)
        now = time.time()
        claims = tuple(sorted(caller.claims))
        self.store.add_session(
            SessionRecord(session_id, _digest(token), caller.identity, claims, now, now + ttl)
        )
        return session_id, token

    def session_caller(self, token: str) -> Caller | None:
        # Looked up by digest: the caller's token is never compared byte by byte with a
        # stored secret, so lookup time says nothing about how close a guess is.
        digest = _digest(token)
        cached = self._sessions.get(digest)
        now = time.time()
        if cached is not None:
            caller, expiry = cached
            if expiry > now:
                return caller
            self._sessions.pop(digest, None)
            return None
        record = self.store.session_by_token(digest)
        if record is None or record.expiry <= now:
            return None
        caller = Caller(record.identity, frozenset(record.claims), record.id)
        if self.cache_sessions:
            self._sessions[digest] = (caller, record.expiry)
        return caller

    def session(self, session_id: str) -> dict[str, Any] | None:
        record = self.store.session(session_id)
        if record is None:
            return None
        return {
            "id": record.id,
            "identity": record.identity,
            "roles": " ".join(record.claims),
            "created": record.created,
            "expiry": record.expiry,
        }

    def close_session(self, session_id: str) -> bool:
        deleted = self.store.delete_session(session_id)
        self._sessions = {k: v for k, v in self._sessions.items() if v[0].session_id != session_id}
        return deleted

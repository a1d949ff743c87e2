"""Who is calling: users, API keys and sessions, stored in the job API's database.

Secrets (passwords, API-key secrets) are stored only as argon2 hashes. Session tokens are
random and stored as SHA-256 digests, so a copy of the database does not let anyone in.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import gevent
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .sqlite import Database

ADMIN_GROUP = "group/nuvla-admin"
USER_GROUP = "group/nuvla-user"
ANON_GROUP = "group/nuvla-anon"

SESSION_TTL = 7 * 24 * 3600.0

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as for a known one,
# so response times do not tell which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS principal (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,              -- 'user' or 'api-key'
  name TEXT NOT NULL UNIQUE,       -- username, or the key id itself for an API key
  secret_hash TEXT NOT NULL,
  identity TEXT NOT NULL,          -- the user id a key acts as
  claims TEXT NOT NULL,            -- JSON list of groups beyond the identity
  created REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS session (
  id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  identity TEXT NOT NULL,
  claims TEXT NOT NULL,
  created REAL NOT NULL,
  expiry REAL NOT NULL
)""",
]


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


class IdentityStore:
    """Users, API keys and sessions in the job API's SQLite database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
        # token digest -> Caller, expiry: saves a database read on every request.
        self._sessions: dict[str, tuple[Caller, float]] = {}

    # -- principals -----------------------------------------------------------------------

    def _add_principal(
        self, kind: str, name: str, secret: str, identity: str, groups: list[str]
    ) -> str:
        principal_id = name if kind == "api-key" else identity
        claims = sorted({identity, USER_GROUP, ANON_GROUP, *groups})
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO principal(id, kind, name, secret_hash, identity, claims, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    principal_id,
                    kind,
                    name,
                    _hasher.hash(secret),
                    identity,
                    orjson.dumps(claims).decode(),
                    time.time(),
                ),
            )
        return principal_id

    def add_user(self, username: str, password: str, groups: list[str] | None = None) -> str:
        """Create a user; returns its id (``user/<uuid>``)."""
        if self.db.read("SELECT 1 FROM principal WHERE name = ?", (username,)):
            raise ValueError(f"user {username!r} already exists")
        return self._add_principal(
            "user", username, password, f"user/{uuid.uuid4()}", list(groups or [])
        )

    def add_api_key(self, identity: str, groups: list[str] | None = None) -> tuple[str, str]:
        """Create an API key acting as ``identity``; returns (key id, secret)."""
        key = f"credential/{uuid.uuid4()}"
        secret = secrets.token_urlsafe(32)
        self._add_principal("api-key", key, secret, identity, list(groups or []))
        return key, secret

    def has_admin_key(self) -> bool:
        return bool(
            self.db.read(
                "SELECT 1 FROM principal WHERE kind = 'api-key' AND claims LIKE ?",
                (f'%"{ADMIN_GROUP}"%',),
            )
        )

    def check(self, kind: str, name: str, secret: str) -> Caller | None:
        """The caller these credentials identify, or None. Constant work either way."""
        rows = self.db.read(
            "SELECT secret_hash, identity, claims FROM principal WHERE kind = ? AND name = ?",
            (kind, name),
        )
        # An unknown name still costs one verification, against a hash of the same cost.
        secret_hash = rows[0][0] if rows else _DUMMY_HASH
        # argon2 is CPU-heavy and releases the GIL: verify in the hub's thread pool so other
        # requests keep being served meanwhile.
        ok = gevent.get_hub().threadpool.apply(_verify, (secret_hash, secret))
        if not ok or not rows:
            return None
        return Caller(rows[0][1], frozenset(orjson.loads(rows[0][2])))

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, caller: Caller, ttl: float = SESSION_TTL) -> tuple[str, str]:
        """Start a session; returns (session id, token for the cookie)."""
        session_id = f"session/{uuid.uuid4()}"
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO session(id, token_hash, identity, claims, created, expiry)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    _digest(token),
                    caller.identity,
                    orjson.dumps(sorted(caller.claims)).decode(),
                    now,
                    now + ttl,
                ),
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
        rows = self.db.read(
            "SELECT id, identity, claims, expiry FROM session WHERE token_hash = ?", (digest,)
        )
        if not rows or rows[0][3] <= now:
            return None
        session_id, identity, claims, expiry = rows[0]
        caller = Caller(identity, frozenset(orjson.loads(claims)), session_id)
        self._sessions[digest] = (caller, expiry)
        return caller

    def session(self, session_id: str) -> dict | None:
        rows = self.db.read(
            "SELECT id, identity, claims, created, expiry FROM session WHERE id = ?",
            (session_id,),
        )
        if not rows:
            return None
        sid, identity, claims, created, expiry = rows[0]
        return {
            "id": sid,
            "identity": identity,
            "roles": " ".join(orjson.loads(claims)),
            "created": created,
            "expiry": expiry,
        }

    def close_session(self, session_id: str) -> bool:
        with self.db.write() as conn:
            deleted = conn.execute("DELETE FROM session WHERE id = ?", (session_id,)).rowcount
        self._sessions = {k: v for k, v in self._sessions.items() if v[0].session_id != session_id}
        return deleted > 0

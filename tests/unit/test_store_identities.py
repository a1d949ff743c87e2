"""The identity rules (identity.Identities) work on any store.IdentityStore: here a small
in-memory one, beside the SQLite store the other tests use."""

from __future__ import annotations

import dataclasses

import pytest

from nuvla_job.api.identity import ADMIN_GROUP, USER_GROUP, Identities
from nuvla_job.api.store import DuplicateId, IdentityStore, Principal, SessionRecord


class MemoryIdentities:
    """store.IdentityStore in two dicts."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}
        self.sessions: dict[str, SessionRecord] = {}

    def add_principal(self, principal: Principal) -> None:
        taken = {p.name for p in self.principals.values()}
        if principal.id in self.principals or principal.name in taken:
            raise DuplicateId(principal.id)
        self.principals[principal.id] = principal

    def principal(self, kind: str, name: str) -> Principal | None:
        found = [p for p in self.principals.values() if (p.kind, p.name) == (kind, name)]
        return found[0] if found else None

    def has_api_key_with(self, claim: str) -> bool:
        return any(p.kind == "api-key" and claim in p.claims for p in self.principals.values())

    def add_session(self, session: SessionRecord) -> None:
        self.sessions[session.id] = session

    def session_by_token(self, token_hash: str) -> SessionRecord | None:
        found = [s for s in self.sessions.values() if s.token_hash == token_hash]
        return found[0] if found else None

    def session(self, session_id: str) -> SessionRecord | None:
        return self.sessions.get(session_id)

    def delete_session(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None


@pytest.fixture
def records() -> MemoryIdentities:
    return MemoryIdentities()


def test_users_keys_and_the_admin_key(records: MemoryIdentities) -> None:
    store: IdentityStore = records  # the double satisfies the protocol (mypy checks it)
    identities = Identities(store)
    user_id = identities.add_user("alice", "pw-1", ["group/ops"])
    with pytest.raises(ValueError, match="user 'alice' already exists"):
        identities.add_user("alice", "pw-2")
    stored = records.principals[user_id]
    assert "pw-1" not in stored.secret_hash  # only the argon2 hash is kept
    assert stored.claims == tuple(sorted(stored.claims))
    caller = identities.check("user", "alice", "pw-1")
    assert caller is not None and caller.identity == user_id
    assert {user_id, USER_GROUP, "group/ops"} <= caller.claims
    assert identities.check("user", "alice", "pw-2") is None
    assert not identities.has_admin_key()
    key, secret = identities.add_api_key("user/admin", [ADMIN_GROUP])
    assert identities.has_admin_key()
    admin = identities.check("api-key", key, secret)
    assert admin is not None and admin.is_admin


def test_sessions_are_stored_by_digest_and_closed(records: MemoryIdentities) -> None:
    identities = Identities(records)
    caller = identities.check("api-key", *identities.add_api_key("user/x"))
    assert caller is not None
    session_id, token = identities.open_session(caller)
    (record,) = records.sessions.values()
    assert record.id == session_id and token not in dataclasses.astuple(record)
    assert identities.session_caller(token) == dataclasses.replace(caller, session_id=session_id)
    assert identities.session(session_id)["identity"] == "user/x"
    assert identities.close_session(session_id)
    assert identities.session_caller(token) is None  # the cache is dropped with it
    assert identities.session(session_id) is None


def test_an_expired_session_lets_nobody_in(records: MemoryIdentities) -> None:
    identities = Identities(records)
    caller = identities.check("api-key", *identities.add_api_key("user/x"))
    assert caller is not None
    _, token = identities.open_session(caller, ttl=-1)
    assert identities.session_caller(token) is None

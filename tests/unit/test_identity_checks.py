"""Credential checks take one path whatever is wrong: every login costs exactly one argon2
verification with the same parameters, so response times do not tell which names or keys
exist. (The behaviour is asserted, not the timing.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nuvla_job.api import identity
from nuvla_job.api.identity import Identities
from nuvla_job.api.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Identities]:
    sqlite = SqliteStore(tmp_path / "jobs.sqlite")
    yield Identities(sqlite.identities)
    sqlite.close()


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes every verification was run against, in order."""
    seen: list[str] = []
    real = identity._verify

    def spy(secret_hash: str, secret: str) -> bool:
        seen.append(secret_hash)
        return real(secret_hash, secret)

    monkeypatch.setattr(identity, "_verify", spy)
    return seen


def _parameters(argon2_hash: str) -> str:
    """`$argon2id$v=19$m=...,t=...,p=...`: what decides how long a verification takes."""
    return "$".join(argon2_hash.split("$")[:4])


def test_every_kind_of_failure_costs_one_verification(
    store: Identities, verified: list[str]
) -> None:
    store.add_user("alice", "right-password")
    key, secret = store.add_api_key("user/x")
    attempts = [
        ("user", "alice", "wrong-password"),  # known user, wrong secret
        ("user", "nobody", "whatever"),  # unknown user
        ("api-key", key, "wrong-secret"),  # known key, wrong secret
        ("api-key", "credential/none", secret),  # unknown key
        ("api-key", "alice", "right-password"),  # a user name used as a key id
        ("user", key, secret),  # a key id used as a user name
    ]
    for kind, name, attempt in attempts:
        before = len(verified)
        assert store.check(kind, name, attempt) is None, (kind, name)
        assert len(verified) == before + 1, (kind, name)
    real_hashes = [h for h in verified if h != identity._DUMMY_HASH]
    dummy_uses = verified.count(identity._DUMMY_HASH)
    assert len(real_hashes) == 2 and dummy_uses == 4
    # The stand-in hash costs what a real one costs.
    assert {_parameters(h) for h in verified} == {_parameters(real_hashes[0])}


def test_right_credentials_cost_the_same_one_verification(
    store: Identities, verified: list[str]
) -> None:
    user_id = store.add_user("bob", "pw-Secret-1")
    caller = store.check("user", "bob", "pw-Secret-1")
    assert caller is not None and caller.identity == user_id
    assert len(verified) == 1 and verified[0] != identity._DUMMY_HASH


def test_the_dummy_hash_never_lets_anyone_in(store: Identities) -> None:
    # Even the exact text the stand-in hash was made from would not be accepted for a name
    # that does not exist: an unknown name fails whatever the verification says.
    assert store.check("user", "ghost", "") is None

"""The ``timeout=`` keyword of ``@action``: stored per action, validated at decoration."""

from __future__ import annotations

import pytest

from nuvla_job import registry as registry_module
from nuvla_job.registry import ActionRegistry, action


@pytest.fixture
def forget_test_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decorator feeds the process's default registry: give it an empty one meanwhile."""
    monkeypatch.setattr(registry_module, "registry", ActionRegistry(lite=False))


def test_timeout_is_kept_per_action(forget_test_actions) -> None:
    @action("unit_timeout_kept", timeout=2)
    class WithLimit:
        pass

    @action("unit_timeout_none")
    class WithoutLimit:
        pass

    registry = registry_module.registry
    assert registry.timeout("unit_timeout_kept") == 2.0
    assert registry.timeout("unit_timeout_none") is None
    assert registry.timeout("no_such_action") is None


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan"), [1]])
def test_bad_timeout_is_refused_naming_the_action(bad: object) -> None:
    with pytest.raises(ValueError, match="action unit_bad: timeout must be"):
        action("unit_bad", timeout=bad)


def test_duplicate_keeps_the_first_timeout() -> None:
    own = ActionRegistry(lite=False)
    own.register("dup", type("A", (), {}), timeout=1.0)
    own.register("dup", type("B", (), {}), timeout=9.0)
    assert own.timeout("dup") == 1.0

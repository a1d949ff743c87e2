"""tests/support/needs.py: a missing need skips the test, except under CI where it fails."""

from __future__ import annotations

import pytest

from tests.support.needs import require


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_need_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    # Caught as BaseException: a skip escaping here would pass for a skipped test.
    with pytest.raises(BaseException) as outcome:
        require(None, "openssl is needed")
    assert outcome.type is pytest.fail.Exception
    assert "openssl is needed (CI installs it" in str(outcome.value)


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_missing_need_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(BaseException) as outcome:
        require("", "openssl is needed")
    assert outcome.type is pytest.skip.Exception
    assert str(outcome.value) == "openssl is needed"


def test_a_need_that_is_met_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require("/usr/bin/openssl", "openssl is needed")

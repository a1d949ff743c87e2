"""The guard on kazoo's internals (nuvla_job/queue/zkext.py): only tested kazoo releases."""

from __future__ import annotations

import pytest

from nuvla_job.queue import zkext


def test_the_installed_kazoo_is_a_tested_one() -> None:
    zkext.check_kazoo()  # the pin in pyproject.toml and TESTED_KAZOO agree


@pytest.mark.parametrize("version", ["2.11.0", "2.11.7", "2.11.0rc1"])
def test_patch_releases_of_a_tested_one_pass(version: str) -> None:
    zkext.check_kazoo(version)


@pytest.mark.parametrize("version", ["2.10.0", "2.12.0", "3.0.0", "2.1.1"])
def test_other_releases_fail_clearly(version: str) -> None:
    with pytest.raises(zkext.UnsupportedKazoo, match=f"kazoo {version} is installed.*2.11"):
        zkext.check_kazoo(version)

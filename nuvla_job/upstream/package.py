"""The installed ``nuvla-job-engine``: whether it is there, and its registries.

Importing the package's ``actions`` and ``distributions`` sub-packages imports every module
in them (that is how upstream registers them), once per process.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

log = logging.getLogger(__name__)

DISTRIBUTION = "nuvla-job-engine"
# The releases this adapter was tested with (pyproject.toml's `nuvla` extra pins them).
TESTED = ("5.1.4",)
ACTIONS_MODULE = "nuvla.job_engine.job.actions"
DISTRIBUTIONS_MODULE = "nuvla.job_engine.job.distributions"


class PackageMissing(RuntimeError):
    """``--nuvla-package`` was asked for and the package is not installed."""


def installed_version() -> str | None:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


def require() -> str:
    """The installed version; :class:`PackageMissing` when there is none."""
    found = installed_version()
    if found is None:
        raise PackageMissing(
            f"{DISTRIBUTION} is not installed: install the extra, pip install 'nuvla-job[nuvla]'"
        )
    if found not in TESTED:
        log.warning(
            "%s %s is installed; this engine was tested with %s only",
            DISTRIBUTION,
            found,
            ", ".join(TESTED),
        )
    return found


def action_classes() -> dict[str, type]:
    """The package's registered actions by name (under ``IMAGE_NAME=job-lite``, upstream's
    own decorator has registered only those that support pull mode)."""
    module: Any = importlib.import_module(ACTIONS_MODULE)
    return dict(module.Actions.actions)


def distribution_classes() -> dict[str, type]:
    """The package's registered distributions (``DistributionBase`` subclasses) by name."""
    module: Any = importlib.import_module(DISTRIBUTIONS_MODULE)
    return dict(module.Distributions.distributions)

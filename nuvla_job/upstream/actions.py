"""The package's actions, as specs of this engine's registry.

They come after every other source (built-ins, actions folders, entry points): of two actions
of one name the first wins, so an action of ours or of yours replaces the package's; the
names so replaced are logged in one line at start. Each runs unchanged, built with this
engine's :class:`~nuvla_job.job.Job`.
"""

from __future__ import annotations

import logging

from ..registry import ActionRegistry, ActionSpec
from . import package

log = logging.getLogger(__name__)


def add_package_actions(into: ActionRegistry) -> int:
    """Add the package's actions to ``into``; returns how many were added."""
    version = package.require()
    added = 0
    replaced: list[str] = []
    for name, cls in sorted(package.action_classes().items()):
        kept = into.spec(name)
        if kept is not None:
            if kept.cls is not cls:
                replaced.append(f"{name} (by {kept.where})")
            continue
        # Upstream's decorator keeps no flag; under IMAGE_NAME=job-lite it has registered
        # only pull-capable actions, which is what the flag tells a lite registry.
        if into.add(ActionSpec(name, cls, pull_mode_support=into.lite), quiet=True):
            added += 1
    log.info("%d action(s) of %s %s added", added, package.DISTRIBUTION, version)
    if replaced:
        log.info(
            "%d action(s) of %s replaced by an earlier source of the same name: %s",
            len(replaced),
            package.DISTRIBUTION,
            ", ".join(replaced),
        )
    return added

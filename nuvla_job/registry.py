"""Actions: the ``@action`` decorator, and loading action modules at start-up.

An action is a class registered under a name, built with the :class:`~nuvla_job.job.Job`
and run with ``do_work()``. Modules come from the actions directories (every ``*.py`` file
and package in them) and from installed packages advertising the ``nuvla_job.actions``
entry-point group. A module that fails to import is logged and skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nuvla_job.actions"
# Upstream's lite image registers only actions that can run in pull mode.
LITE_IMAGE = "job-lite"
# The project's own actions folder, beside the package in a checkout or an image.
BUILTIN_ACTIONS = Path(__file__).resolve().parent.parent / "actions"


@dataclass
class ActionRegistry:
    """Action classes by name. The first registration of a name wins."""

    actions: dict[str, type] = field(default_factory=dict)
    pull_mode: dict[str, bool] = field(default_factory=dict)
    # Per-action time limits in seconds (the decorator's ``timeout=``); absent: no own limit.
    timeouts: dict[str, float] = field(default_factory=dict)
    lite: bool = field(default_factory=lambda: os.environ.get("IMAGE_NAME") == LITE_IMAGE)

    def register(
        self, name: str, cls: type, pull_mode_support: bool = False, timeout: float | None = None
    ) -> None:
        if self.lite and not pull_mode_support:
            log.debug("action %s skipped: the lite image runs only pull-mode actions", name)
            return
        if name in self.actions:
            log.error(
                "action %s is defined twice (%s and %s); keeping the first",
                name,
                _where(self.actions[name]),
                _where(cls),
            )
            return
        self.actions[name] = cls
        self.pull_mode[name] = pull_mode_support
        if timeout is not None:
            self.timeouts[name] = timeout

    def get(self, name: str) -> type | None:
        return self.actions.get(name)

    def timeout(self, name: str) -> float | None:
        """The action's own time limit in seconds, None when it has none."""
        return self.timeouts.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.actions

    def __len__(self) -> int:
        return len(self.actions)


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The registry decorators write to; ``load_actions`` returns it.
registry = ActionRegistry()


def action(
    name: str, pull_mode_support: bool = False, timeout: float | None = None, **_upstream: Any
) -> Callable[[type], type]:
    """Register the decorated class as the action ``name`` (upstream-compatible).

    ``timeout``: the longest ``do_work`` may run, in seconds; it overrides the executor's
    ``--action-timeout`` for this action. A job over its limit is FAILED.
    """
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise ValueError(f"action {name}: timeout must be a number of seconds > 0, not {timeout!r}")

    def register(cls: type) -> type:
        registry.register(name, cls, pull_mode_support, None if timeout is None else float(timeout))
        return cls

    return register


def _module_name(path: Path) -> str:
    # A private namespace per file, so that two directories may hold modules of one name.
    digest = abs(hash(str(path.resolve()))) % 10**8
    return f"nuvla_job_plugins.{path.stem}_{digest}"


def _import_file(path: Path) -> None:
    target = path / "__init__.py" if path.is_dir() else path
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(
        name, target, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {target}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _candidates(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            found.append(path)
    return found


def load_actions(
    paths: Iterable[str | Path] = (), builtin: bool = True, use_entry_points: bool = True
) -> ActionRegistry:
    """Import every action module; returns the registry with what they registered."""
    directories = [BUILTIN_ACTIONS] if builtin else []
    directories += [Path(p) for p in paths]
    seen: set[Path] = set()
    for directory in directories:
        # The same folder twice (e.g. JOB_ACTIONS_PATH pointing at the built-in one) would
        # register every action twice, each reported as a duplicate.
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        if not directory.is_dir():
            if directory != BUILTIN_ACTIONS:
                log.error("actions path %s is not a directory; skipped", directory)
            continue
        for path in _candidates(directory):
            try:
                _import_file(path)
            except Exception as exc:  # a broken plugin must not stop the engine
                log.error(
                    "action module %s failed to import and is skipped: %s: %s",
                    path,
                    type(exc).__name__,
                    exc,
                )
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
            except Exception as exc:
                log.error(
                    "action entry point %s failed to load and is skipped: %s: %s",
                    point.name,
                    type(exc).__name__,
                    exc,
                )
    log.info("%d action(s) loaded: %s", len(registry), ", ".join(sorted(registry.actions)))
    return registry


# -- distributions ----------------------------------------------------------------------------

JobBody = dict[str, Any]
Generator = Callable[[Any], Iterable[JobBody]]


@dataclass(frozen=True)
class Distribution:
    """A named generator of job bodies, run by the elected distributor every ``interval``."""

    name: str
    interval: float
    generate: Generator


@dataclass
class DistributionRegistry:
    """Distributions by name. The first registration of a name wins."""

    distributions: dict[str, Distribution] = field(default_factory=dict)

    def register(self, distribution: Distribution) -> None:
        if distribution.interval <= 0:
            raise ValueError(f"distribution {distribution.name}: interval must be > 0")
        if distribution.name in self.distributions:
            log.error("distribution %s is defined twice; keeping the first", distribution.name)
            return
        self.distributions[distribution.name] = distribution

    def __contains__(self, name: object) -> bool:
        return name in self.distributions

    def __len__(self) -> int:
        return len(self.distributions)


distributions = DistributionRegistry()


def distribution(name: str, interval: float) -> Callable[[Generator], Generator]:
    """Register ``generate(api) -> iterable of job bodies`` as the distribution ``name``."""

    def register(generate: Generator) -> Generator:
        distributions.register(Distribution(name, float(interval), generate))
        return generate

    return register


def distribute(action_name: str, interval: float, **attributes: Any) -> None:
    """The simple case in one line: one job for ``action_name`` every ``interval`` seconds.

    ``attributes`` are further job attributes, e.g. ``priority=100``.
    """
    body = {"action": action_name, **attributes}
    distributions.register(Distribution(action_name, float(interval), lambda api: [dict(body)]))

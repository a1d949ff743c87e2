"""Actions and distributions: the decorators, their registries, and loading modules at start-up.

An action is a class declared with ``@action("name", ...)``, built with the
:class:`~nuvla_job.job.Job` and run with ``do_work()``. The decorator checks its options,
leaves an :class:`ActionSpec` on the class and adds it to the default :data:`registry`.
A registry of one's own (each executor has one; tests make theirs) is filled by
:func:`load_actions`, which imports the modules and collects the specs of the classes they
define: the built-in actions (the ``nuvla_job.actions`` sub-package), a source checkout's
``actions/`` folder, the folders given (every ``*.py`` file and package in them), and the
installed packages advertising the ``nuvla_job.actions`` entry-point group, and, when asked
(``nuvla_package=True``), the installed upstream package ``nuvla-job-engine`` (its actions
and distributions, through nuvla_job/upstream/), in that order. A module that fails to
import is logged and skipped; of two actions of one name the first wins and the second is
logged (for the upstream package, which comes last, in one line listing the names).

A distribution is a generator of job bodies run by the elected distributor every
``interval``, declared with ``@distribution`` or, for one job, ``distribute(...)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nuvla_job.actions"
# Upstream's lite image registers only actions that can run in pull mode.
LITE_IMAGE = "job-lite"
# The built-in actions ship inside the package, so that an installed engine has them.
BUILTIN_PACKAGE = "nuvla_job.actions"
BUILTIN_ACTIONS = Path(__file__).resolve().parent / "actions"
# A source checkout's own actions/ folder, where users drop their modules; absent when the
# package is installed (no pyproject.toml beside it).
_ROOT = Path(__file__).resolve().parent.parent
CHECKOUT_ACTIONS = _ROOT / "actions" if (_ROOT / "pyproject.toml").is_file() else None
# An action's retry back-off by default: 10 s before the second attempt, doubled per
# attempt up to 10 minutes.
DEFAULT_BACKOFF = 10.0
DEFAULT_MAX_BACKOFF = 600.0
# Where @action leaves its specs on a class (in the class's own __dict__, so that a
# subclass does not inherit its parent's name).
SPECS_ATTRIBUTE = "__nuvla_job_actions__"


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """What the engine knows of one action. New per-action settings become new fields here
    (with a default, so that existing declarations stay valid) and options of ``@action``."""

    name: str
    cls: type
    pull_mode_support: bool = False
    # The longest ``do_work`` may run, in seconds; None: the executor's --action-timeout.
    timeout: float | None = None
    # The retry policy (middleware/retries.py): how many times a failed job runs again, the
    # first wait and its cap in seconds (doubled per attempt, jittered), and which exceptions
    # count as failures worth another attempt. A job's own `retry` attribute may override
    # the numbers.
    retries: int = 0
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    # At most this many jobs of the action run at once across every executor sharing the
    # ZooKeeper ensemble (limits.py); None: no fleet-wide limit.
    max_concurrent: int | None = None

    @property
    def where(self) -> str:
        """The class's dotted name, for log lines."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


class ActionRegistry:
    """Action specs by name. The first spec of a name wins; a later, different one is logged."""

    def __init__(self, specs: Iterable[ActionSpec] = (), *, lite: bool | None = None) -> None:
        self.lite = os.environ.get("IMAGE_NAME") == LITE_IMAGE if lite is None else lite
        self._specs: dict[str, ActionSpec] = {}
        # Refused duplicates already logged (a module collected again logs nothing new).
        self._reported: set[ActionSpec] = set()
        for spec in specs:
            self.add(spec)

    def add(self, spec: ActionSpec, *, quiet: bool = False) -> bool:
        """Add ``spec``; False when it is not added (lite image, or its name is taken)."""
        if self.lite and not spec.pull_mode_support:
            log.debug("action %s skipped: the lite image runs only pull-mode actions", spec.name)
            return False
        kept = self._specs.get(spec.name)
        if kept is None:
            self._specs[spec.name] = spec
            return True
        if kept != spec and spec not in self._reported and not quiet:
            self._reported.add(spec)
            log.error(
                "action %s is defined twice (%s and %s); keeping the first",
                spec.name,
                kept.where,
                spec.where,
            )
        return False

    def register(
        self, name: str, cls: type, pull_mode_support: bool = False, timeout: float | None = None
    ) -> None:
        """Add an action without the decorator."""
        self.add(ActionSpec(name, cls, pull_mode_support, timeout))

    def add_class(self, cls: type) -> None:
        """Add the specs ``@action`` left on ``cls`` (none: nothing)."""
        for spec in cls.__dict__.get(SPECS_ATTRIBUTE, ()):
            self.add(spec)

    def collect(self, module: ModuleType) -> None:
        """Add the actions of the classes defined in ``module`` and its imported submodules."""
        prefix = f"{module.__name__}."
        modules = [module] + [
            m for name, m in list(sys.modules.items()) if name.startswith(prefix) and m is not None
        ]
        for each in modules:
            for value in list(vars(each).values()):
                # A class imported from elsewhere belongs to the module that defines it.
                if isinstance(value, type) and value.__module__ == each.__name__:
                    self.add_class(value)

    def spec(self, name: str) -> ActionSpec | None:
        return self._specs.get(name)

    def get(self, name: str) -> type | None:
        spec = self._specs.get(name)
        return None if spec is None else spec.cls

    def timeout(self, name: str) -> float | None:
        """The action's own time limit in seconds, None when it has none."""
        spec = self._specs.get(name)
        return None if spec is None else spec.timeout

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(list(self._specs.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


# The default registry: every action declared in this process. Its duplicates are logged when
# a loader collects them (load_actions), not at declaration, so that a process whose
# executor loads into a registry of its own logs each duplicate once.
registry = ActionRegistry()


def _seconds(value: object) -> bool:
    """A back-off: a number of seconds > 0 and finite (an infinite one would never end)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < math.inf


def is_positive_int(value: object) -> bool:
    """An int >= 1 (not a bool): a count of jobs."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _exception_types(value: object) -> tuple[type[BaseException], ...] | None:
    """``retry_on`` as a tuple of exception classes, None when it is not one."""
    types = value if isinstance(value, tuple) else (value,)
    if types and all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        return types
    return None


def action(
    name: str | None = None,
    pull_mode_support: bool = False,
    *,
    timeout: float | None = None,
    retries: int = 0,
    backoff: float = DEFAULT_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    max_concurrent: int | None = None,
    action_name: str | None = None,
) -> Callable[[type], type]:
    """Declare the decorated class as the action ``name`` (upstream-compatible).

    As upstream's: ``name`` (or ``action_name=``) defaults to the class's name, and
    ``pull_mode_support`` says whether the action may run in pull mode (the lite image runs
    only those). ``timeout``: the longest ``do_work`` may run, in seconds; it overrides the
    executor's ``--action-timeout`` for this action, and a job over it is FAILED.
    ``retries``: how many more attempts a job gets when ``do_work`` raises one of
    ``retry_on`` (an exception class or a tuple of them; the time limit counts as an
    ``Exception``), each after a wait of ``backoff`` seconds doubled per attempt, at most
    ``max_backoff``, jittered. ``max_concurrent``: at most this many jobs of the action run
    at once across every executor of the fleet (a job over it waits, QUEUED, without taking
    an executor slot). Any other option is a TypeError naming it.
    """
    if name is not None and action_name is not None:
        raise TypeError(
            f"@action: give the name once, not {name!r} and action_name={action_name!r}"
        )
    given = name if name is not None else action_name
    shown = given or "?"
    if given is not None and (not isinstance(given, str) or not given):
        raise TypeError(f"@action: the name must be a non-empty string, not {given!r}")
    # Upstream tests the flag for truth: 0 and 1 are accepted as well.
    if pull_mode_support not in (True, False):
        raise TypeError(
            f"action {shown}: pull_mode_support must be True or False, not {pull_mode_support!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise ValueError(
            f"action {shown}: timeout must be a number of seconds > 0, not {timeout!r}"
        )
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"action {shown}: retries must be an int >= 0, not {retries!r}")
    for option, value in (("backoff", backoff), ("max_backoff", max_backoff)):
        if not _seconds(value):
            raise ValueError(
                f"action {shown}: {option} must be a number of seconds > 0, not {value!r}"
            )
    if max_backoff < backoff:
        raise ValueError(
            f"action {shown}: max_backoff ({max_backoff!r}) is shorter than backoff ({backoff!r})"
        )
    if max_concurrent is not None and not is_positive_int(max_concurrent):
        raise ValueError(
            f"action {shown}: max_concurrent must be an int >= 1, not {max_concurrent!r}"
        )
    retry_types = _exception_types(retry_on)
    if retry_types is None:
        raise TypeError(
            f"action {shown}: retry_on must be an exception class or a tuple of them, "
            f"not {retry_on!r}"
        )

    def declare(cls: type) -> type:
        spec = ActionSpec(
            given or cls.__name__,
            cls,
            bool(pull_mode_support),
            None if timeout is None else float(timeout),
            retries=retries,
            backoff=float(backoff),
            max_backoff=float(max_backoff),
            retry_on=retry_types,
            max_concurrent=max_concurrent,
        )
        setattr(cls, SPECS_ATTRIBUTE, (*cls.__dict__.get(SPECS_ATTRIBUTE, ()), spec))
        registry.add(spec, quiet=True)
        return cls

    return declare


# -- loading ----------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    # A private namespace per file, so that two directories may hold modules of one name.
    digest = abs(hash(str(path.resolve()))) % 10**8
    return f"nuvla_job_plugins.{path.stem}_{digest}"


def _import_file(path: Path) -> ModuleType:
    """Import a module file or package folder, once per process."""
    target = path / "__init__.py" if path.is_dir() else path
    name = _module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
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
    return module


def _candidates(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            found.append(path)
    return found


def _builtin_modules() -> list[str]:
    package = importlib.import_module(BUILTIN_PACKAGE)
    return [
        f"{BUILTIN_PACKAGE}.{info.name}"
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    ]


def _skipped(what: str, exc: Exception) -> None:
    # A broken plugin must not stop the engine.
    log.error("%s and is skipped: %s: %s", what, type(exc).__name__, exc)


def load_actions(
    paths: Iterable[str | Path] = (),
    builtin: bool = True,
    use_entry_points: bool = True,
    into: ActionRegistry | None = None,
    nuvla_package: bool = False,
) -> ActionRegistry:
    """Import the action modules and collect their actions into ``into`` (default: the
    default registry), which is returned. Distributions go to :data:`distributions`.

    ``nuvla_package``: also the installed ``nuvla-job-engine``'s actions and distributions
    (:class:`~nuvla_job.upstream.package.PackageMissing` when it is not installed)."""
    target = registry if into is None else into
    if builtin:
        for name in _builtin_modules():
            try:
                target.collect(importlib.import_module(name))
            except Exception as exc:
                _skipped(f"built-in action module {name} failed to import", exc)
    directories = [CHECKOUT_ACTIONS] if CHECKOUT_ACTIONS is not None else []
    directories += [Path(p) for p in paths]
    # The built-in folder given as a path (an old configuration) would load every built-in
    # again under another name; the same folder twice, every action twice.
    seen = {BUILTIN_ACTIONS} if builtin else set()
    for directory in directories:
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        if not directory.is_dir():
            if directory != CHECKOUT_ACTIONS:
                log.error("actions path %s is not a directory; skipped", directory)
            continue
        for path in _candidates(directory):
            try:
                target.collect(_import_file(path))
            except Exception as exc:
                _skipped(f"action module {path} failed to import", exc)
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
                target.collect(sys.modules[point.module])
            except Exception as exc:
                _skipped(f"action entry point {point.name} failed to load", exc)
    if nuvla_package:
        from .upstream.actions import add_package_actions
        from .upstream.distributions import add_package_distributions

        add_package_actions(target)
        add_package_distributions(distributions)
    log.info("%d action(s) loaded: %s", len(target), ", ".join(target.names()))
    return target


# -- distributions ----------------------------------------------------------------------------

JobBody = dict[str, Any]
Generator = Callable[[Any], Iterable[JobBody]]
# A distribution's unique key: one for all its jobs, or one computed from each body (None:
# that job has none). The job API adds no job while an unfinished one holds its key.
UniqueKey = str | Callable[[JobBody], str | None]


def action_and_target(body: JobBody) -> str:
    """The unique key ``action:target-href`` (just the action without a target): what an
    upstream distribution's ``job_exists()`` checks, kept by the job API without a race."""
    target = body.get("target-resource")
    href = target.get("href") if isinstance(target, dict) else None
    return f"{body.get('action')}:{href}" if href else str(body.get("action"))


@dataclass(frozen=True)
class Distribution:
    """A named generator of job bodies, run by the elected distributor every ``interval``."""

    name: str
    interval: float
    generate: Generator
    # The name of its election, /election/<election_name>, when it is not ``name`` (as for
    # some of upstream's distributions, whose elections a mixed fleet must share).
    election: str | None = None
    # The unique-key given to its jobs (a body's own "unique-key" wins); None: none.
    unique_key: UniqueKey | None = None

    @property
    def election_name(self) -> str:
        return self.election or self.name

    def key_of(self, body: JobBody) -> str | None:
        """The unique-key of one of its jobs."""
        own = body.get("unique-key")
        if isinstance(own, str):
            return own
        if callable(self.unique_key):
            return self.unique_key(body)
        return self.unique_key

    @property
    def names(self) -> tuple[str, ...]:
        """The names the distribution options match: its own, and its election's."""
        if self.election is None or self.election == self.name:
            return (self.name,)
        return (self.name, self.election)


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


# Distributions are declared by module-level calls (``distribute`` returns nothing a loader
# could find again), so each process has this one registry of them.
distributions = DistributionRegistry()


def distribution(
    name: str,
    interval: float,
    *,
    election: str | None = None,
    unique_key: UniqueKey | None = None,
) -> Callable[[Generator], Generator]:
    """Register ``generate(api) -> iterable of job bodies`` as the distribution ``name``
    (elected at ``/election/<election>`` when given, else at ``/election/<name>``).

    ``unique_key``: a string (every job of the distribution shares it) or a function of a
    job body (e.g. :func:`action_and_target`): a job is not added again while an unfinished
    one holds its key, whatever the number of leaders or ticks racing for it."""

    def register(generate: Generator) -> Generator:
        distributions.register(
            Distribution(name, float(interval), generate, election=election, unique_key=unique_key)
        )
        return generate

    return register


def distribute(
    action_name: str, interval: float, *, unique_key: UniqueKey | None = None, **attributes: Any
) -> None:
    """The simple case in one line: one job for ``action_name`` every ``interval`` seconds.

    ``attributes`` are further job attributes, e.g. ``priority=100``; ``unique_key`` as for
    :func:`distribution` (e.g. the action's name: no second job while one is unfinished).
    """
    body = {"action": action_name, **attributes}
    distributions.register(
        Distribution(action_name, float(interval), lambda api: [dict(body)], unique_key=unique_key)
    )

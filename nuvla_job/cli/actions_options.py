"""``--actions-path`` / ``--builtin-actions`` / ``--nuvla-package``: where the engine's commands
find their actions (and, through their modules, their distributions)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from ..registry import ActionRegistry, load_actions


class Directories(click.Path):
    """A folder, given once per flag; its environment variable holds several.

    The variable's folders are separated by whitespace (the documented form, as upstream's
    image sets it) or by ``os.pathsep`` (click's own splitting for paths, kept so that
    ``/a:/b`` works too). A folder whose name holds either is given with the flag.
    """

    name = "directory"

    def __init__(self) -> None:
        super().__init__(file_okay=False)

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [part for word in rv.split() for part in word.split(os.pathsep) if part]


class NoActionLoaded(click.ClickException):
    """An executor without actions would fail every job it takes: it refuses to start."""

    exit_code = 2  # a configuration mistake, as a usage error


@dataclass(frozen=True)
class ActionSources:
    """Where this process's actions come from (the options' values)."""

    paths: tuple[str, ...]
    builtin: bool = True
    nuvla_package: bool = False

    def load(self) -> ActionRegistry:
        """Import them into a registry of this process's own."""
        from ..upstream.package import PackageMissing

        try:
            return load_actions(
                self.paths,
                builtin=self.builtin,
                into=ActionRegistry(),
                nuvla_package=self.nuvla_package,
            )
        except PackageMissing as exc:
            raise click.UsageError(f"--nuvla-package: {exc}") from None

    def require(self, actions: ActionRegistry) -> ActionRegistry:
        """``actions``, or a one-line error when it holds none."""
        if not actions:
            raise NoActionLoaded(
                f"no action is loaded (built-in actions {'on' if self.builtin else 'off'}, "
                f"actions paths: {' '.join(self.paths) or 'none'}); every job would fail, "
                "so the executor does not start"
            )
        return actions


def actions_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options; the command receives ``action_sources``: an :class:`ActionSources`.

    ``what``: what the folders hold, for the help text.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            sources = ActionSources(
                kwargs.pop("actions_path"),
                kwargs.pop("builtin_actions"),
                kwargs.pop("nuvla_package"),
            )
            return command(action_sources=sources, **kwargs)

        # Off by default: what an engine runs does not change because a package got installed;
        # the image built with the `nuvla` extra turns it on.
        wrapper = click.option(
            "--nuvla-package/--no-nuvla-package",
            default=False,
            envvar="JOB_NUVLA_PACKAGE",
            show_default=True,
            help="Also load Nuvla's own actions and distributions from the installed "
            "nuvla-job-engine (the `nuvla` extra); ours and yours of the same name win.",
        )(wrapper)

        wrapper = click.option(
            "--builtin-actions/--no-builtin-actions",
            default=True,
            envvar="JOB_BUILTIN_ACTIONS",
            show_default=True,
            help="Load the actions shipped with nuvla-job (off: only your own).",
        )(wrapper)
        wrapper = click.option(
            "--actions-path",
            multiple=True,
            envvar="JOB_ACTIONS_PATH",
            type=Directories(),
            help=f"Directory of your own {what} modules (repeatable; the variable takes a "
            "space-separated list).",
        )(wrapper)
        return wrapper

    return decorate

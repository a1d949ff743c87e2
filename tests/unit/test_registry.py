"""Action specs and registries: what ``@action`` accepts, and registries of one's own."""

from __future__ import annotations

import dataclasses
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import nuvla_job.actions
from nuvla_job import registry as registry_module
from nuvla_job.registry import (
    BUILTIN_ACTIONS,
    ActionRegistry,
    ActionSpec,
    action,
    load_actions,
)

BUILTIN_NAMES = {
    "bulk_jobs",
    "monitor_bulk_job",
    "monitor_bulk_jobs",
    "cancel_children_jobs",
    "cleanup_jobs",
    "http_request",
    "restore_queue",
    "sleep",
    "dummy_test_action",
}


@pytest.fixture(autouse=True)
def own_default_registry(monkeypatch: pytest.MonkeyPatch) -> ActionRegistry:
    """The decorator feeds the default registry: each test gets an empty one."""
    fresh = ActionRegistry(lite=False)
    monkeypatch.setattr(registry_module, "registry", fresh)
    return fresh


@pytest.fixture
def module_named() -> Iterator[ModuleType]:
    """A throw-away module in sys.modules, removed after the test."""
    name = "tests_unit_registry_plugin"
    module = ModuleType(name)
    sys.modules[name] = module
    yield module
    for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
        del sys.modules[key]


def define(module: ModuleType, source: str) -> None:
    exec(textwrap.dedent(source), vars(module))


# -- the decorator ----------------------------------------------------------------------------


def test_spec_holds_the_declared_options(own_default_registry: ActionRegistry) -> None:
    @action("unit_spec", pull_mode_support=True, timeout=3)
    class Declared:
        pass

    spec = own_default_registry.spec("unit_spec")
    assert spec == ActionSpec("unit_spec", Declared, pull_mode_support=True, timeout=3.0)
    assert own_default_registry.get("unit_spec") is Declared
    assert own_default_registry.timeout("unit_spec") == 3.0
    assert own_default_registry.spec("no_such_action") is None
    assert spec is not None and spec.where.endswith("Declared")


def test_spec_is_frozen() -> None:
    spec = ActionSpec("frozen", object)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.timeout = 1.0  # type: ignore[misc]


# `retries` was one of these until issue 14 made it an option; `max_retries` (Dramatiq's
# spelling) is a typo of it that must not pass silently.
@pytest.mark.parametrize("option", ["max_retries", "max_concurrency", "pull_mode"])
def test_unknown_option_is_an_error_naming_it(option: str) -> None:
    with pytest.raises(TypeError, match=option):
        action("unit_unknown", **{option: 1})  # type: ignore[arg-type]


def test_retry_policy_options_become_spec_fields(own_default_registry: ActionRegistry) -> None:
    @action("unit_retried", retries=3, backoff=2, max_backoff=30, retry_on=ConnectionError)
    class Retried:
        pass

    spec = own_default_registry.spec("unit_retried")
    assert spec == ActionSpec(
        "unit_retried",
        Retried,
        retries=3,
        backoff=2.0,
        max_backoff=30.0,
        retry_on=(ConnectionError,),
    )
    plain = ActionSpec("plain", object)
    assert (plain.retries, plain.retry_on) == (0, (Exception,))  # no retry unless asked


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"retries": -1}, ValueError, "retries must be an int >= 0"),
        ({"retries": True}, ValueError, "retries must be an int >= 0"),
        ({"retries": 2.5}, ValueError, "retries must be an int >= 0"),
        ({"backoff": 0}, ValueError, "backoff must be a number of seconds > 0"),
        ({"max_backoff": float("inf")}, ValueError, "max_backoff must be a number of seconds"),
        ({"max_backoff": "1m"}, ValueError, "max_backoff must be a number of seconds > 0"),
        ({"backoff": 10, "max_backoff": 5}, ValueError, "max_backoff .* is shorter than"),
        ({"retry_on": "ValueError"}, TypeError, "retry_on must be an exception class"),
        ({"retry_on": (ValueError, int)}, TypeError, "retry_on must be an exception class"),
        ({"retry_on": ()}, TypeError, "retry_on must be an exception class"),
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be an int >= 1"),
        ({"max_concurrent": True}, ValueError, "max_concurrent must be an int >= 1"),
        ({"max_concurrent": "3"}, ValueError, "max_concurrent must be an int >= 1"),
    ],
)
def test_bad_retry_options_are_errors_naming_them(
    options: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"action unit_bad: {message}"):
        action("unit_bad", **options)


def test_upstream_forms_are_accepted(own_default_registry: ActionRegistry) -> None:
    # Upstream: action(action_name=None, pull_mode_support=False), positional or keyword;
    # without a name the class's own name is the action's.
    @action("positional", True)
    class Positional:
        pass

    @action(action_name="keyword", pull_mode_support=True)
    class Keyword:
        pass

    @action()
    class unnamed_action:  # noqa: N801 (an upstream-style name)
        pass

    assert own_default_registry.spec("positional") == ActionSpec("positional", Positional, True)
    assert own_default_registry.spec("keyword") == ActionSpec("keyword", Keyword, True)
    assert own_default_registry.get("unnamed_action") is unnamed_action


def test_pull_mode_support_may_be_0_or_1(own_default_registry: ActionRegistry) -> None:
    action("unit_one", 1)(type("One", (), {}))
    spec = own_default_registry.spec("unit_one")
    assert spec is not None and spec.pull_mode_support is True


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: action("a", action_name="b"), "give the name once"),
        (lambda: action(""), "non-empty string"),
        (lambda: action(42), "non-empty string"),  # type: ignore[arg-type]
        (lambda: action("unit_pull", pull_mode_support="yes"), "unit_pull: pull_mode_support"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_refused(call, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()


def test_a_subclass_does_not_inherit_its_parents_action() -> None:
    @action("unit_parent")
    class Parent:
        pass

    class Child(Parent):
        pass

    own = ActionRegistry(lite=False)
    own.add_class(Child)
    assert len(own) == 0
    own.add_class(Parent)
    assert own.names() == ["unit_parent"]


def test_one_class_may_carry_two_names() -> None:
    @action("unit_first")
    @action("unit_second", timeout=1)
    class Twice:
        pass

    own = ActionRegistry(lite=False)
    own.add_class(Twice)
    assert own.names() == ["unit_first", "unit_second"]
    assert own.timeout("unit_second") == 1.0


# -- registries of one's own ------------------------------------------------------------------


def test_registries_are_independent(module_named: ModuleType) -> None:
    define(
        module_named,
        """
        from nuvla_job.registry import action

        @action("unit_collected", timeout=5)
        class Collected:
            pass
        """,
    )
    first, second = ActionRegistry(lite=False), ActionRegistry(lite=False)
    first.collect(module_named)
    assert first.names() == ["unit_collected"]
    assert len(second) == 0
    second.collect(module_named)  # an imported module is collected again, not re-run
    assert second.spec("unit_collected") == first.spec("unit_collected")


def test_collect_takes_only_classes_the_module_defines(module_named: ModuleType) -> None:
    define(
        module_named,
        """
        from nuvla_job.actions.demo import SleepJob  # imported, not defined here
        from nuvla_job.registry import action

        @action("unit_own")
        class Own(SleepJob):
            pass
        """,
    )
    own = ActionRegistry(lite=False)
    own.collect(module_named)
    assert own.names() == ["unit_own"]


def test_collect_includes_a_packages_imported_submodules(module_named: ModuleType) -> None:
    sub = ModuleType(f"{module_named.__name__}.sub")
    sys.modules[sub.__name__] = sub
    define(
        sub,
        """
        from nuvla_job.registry import action

        @action("unit_in_sub")
        class InSub:
            pass
        """,
    )
    own = ActionRegistry(lite=False)
    own.collect(module_named)
    assert own.names() == ["unit_in_sub"]


def test_first_of_one_name_wins_and_the_second_is_logged_once(
    module_named: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    define(
        module_named,
        """
        from nuvla_job.registry import action

        @action("unit_dup")
        class First:
            pass

        @action("unit_dup")
        class Second:
            pass
        """,
    )
    own = ActionRegistry(lite=False)
    with caplog.at_level(logging.ERROR, logger="nuvla_job.registry"):
        own.collect(module_named)
        own.collect(module_named)
    assert own.get("unit_dup") is vars(module_named)["First"]
    duplicates = [r for r in caplog.records if "unit_dup is defined twice" in r.getMessage()]
    assert len(duplicates) == 1
    assert "First and" in duplicates[0].getMessage()


def test_declaring_logs_no_duplicate(caplog: pytest.LogCaptureFixture) -> None:
    # A process whose executor collects into its own registry logs each duplicate once:
    # the default registry, fed at declaration, keeps quiet.
    with caplog.at_level(logging.ERROR, logger="nuvla_job.registry"):

        @action("unit_quiet")
        class First:
            pass

        @action("unit_quiet")
        class Second:
            pass

    assert registry_module.registry.get("unit_quiet") is First
    assert caplog.records == []


def test_lite_registry_keeps_only_pull_mode_actions() -> None:
    lite = ActionRegistry(lite=True)
    lite.register("unit_push", type("Push", (), {}))
    lite.register("unit_pull", type("Pull", (), {}), pull_mode_support=True)
    assert lite.names() == ["unit_pull"]


def test_lite_comes_from_the_image_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_NAME", "job-lite")
    assert ActionRegistry().lite
    monkeypatch.setenv("IMAGE_NAME", "job")
    assert not ActionRegistry().lite


# -- loading ----------------------------------------------------------------------------------


def test_builtin_actions_load_from_the_package() -> None:
    own = load_actions(use_entry_points=False, into=ActionRegistry(lite=False))
    assert BUILTIN_NAMES <= set(own.names())
    sleep = own.spec("sleep")
    assert sleep is not None and sleep.cls.__module__ == "nuvla_job.actions.demo"
    assert BUILTIN_ACTIONS == Path(nuvla_job.actions.__file__).parent


def test_builtin_actions_can_be_left_out(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from nuvla_job.registry import action\n\n\n@action('unit_mine')\nclass Mine:\n    pass\n"
    )
    own = load_actions(
        [tmp_path], builtin=False, use_entry_points=False, into=ActionRegistry(lite=False)
    )
    assert own.names() == ["unit_mine"]


def test_two_folders_load_both_and_a_folder_loads_once(tmp_path: Path) -> None:
    for folder, name in (("one", "unit_from_one"), ("two", "unit_from_two")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mod.py").write_text(
            f"from nuvla_job.registry import action\n\n\n@action({name!r})\nclass A:\n    pass\n"
        )
    folders = [tmp_path / "one", tmp_path / "two", tmp_path / "one"]
    first = load_actions(folders, builtin=False, use_entry_points=False, into=ActionRegistry())
    second = load_actions(folders, builtin=False, use_entry_points=False, into=ActionRegistry())
    assert first.names() == second.names() == ["unit_from_one", "unit_from_two"]
    assert first.get("unit_from_one") is second.get("unit_from_one")  # imported once


def test_the_builtin_folder_given_as_a_path_is_not_loaded_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="nuvla_job.registry"):
        own = load_actions([BUILTIN_ACTIONS], use_entry_points=False, into=ActionRegistry())
    assert BUILTIN_NAMES <= set(own.names())
    assert not [r for r in caplog.records if "defined twice" in r.getMessage()]

"""Loading the installed ``nuvla-job-engine`` (the ``nuvla`` extra): its actions into a
registry of ours, its distributions adapted to our distributor (nuvla_job/upstream/).

What the package registers is read from the package itself (its own registries, in a child
process when the environment matters); its defaults are spelled out where they are the spec.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest
from nuvla.job_engine.job.actions import Actions
from nuvla.job_engine.job.distributions import Distributions
from prometheus_client import REGISTRY

from nuvla_job import metrics
from nuvla_job.distributor import election_path, select
from nuvla_job.registry import ActionRegistry, DistributionRegistry, load_actions
from nuvla_job.upstream import package
from nuvla_job.upstream.actions import add_package_actions
from nuvla_job.upstream.distributions import add_package_distributions

# Upstream's defaults (collect_interval) and election names (DISTRIBUTION_NAME), 5.1.4.
UPSTREAM_DISTRIBUTIONS = {
    "cleanup_jobs": (86400, "cleanup_jobs"),
    "deployment_set_automatic_update": (60, "deployment_set_automatic_update"),
    "deployment_state_new": (10, "deployment_state_new"),
    "deployment_state_old": (60, "deployment_state_old"),
    "handle_trial_end": (1800, "handle_trial_end"),
    "monitor_bulk_jobs": (30, "monitor_bulk_job"),
    "notify_coupon_end": (3600, "notify_coupon_end"),
    "nuvlabox_cluster_cleanup": (86400, "nuvlabox_cluster_cleanup"),
    "nuvlabox_offline": (30, "nuvlabox_offline"),
    "refresh_customer_subscription_cache": (3600, "refresh_customer_subscription_cache"),
    "register_usage_record": (1800, "register_usage_record"),
    "register_usage_record_new_deployment": (60, "register_usage_record_updated_deployment"),
    "update_nuvlabox_releases": (86400, "update_nuvlabox_releases"),
    "update_vulnerabilities_database": (86400, "update_vulnerabilities_database"),
}

REGISTERED_IN_CHILD = """
import json, sys
from nuvla.job_engine.job.actions import Actions
from nuvla_job.registry import ActionRegistry, load_actions
ours = load_actions(builtin=False, use_entry_points=False, into=ActionRegistry(),
                    nuvla_package=True)
print(json.dumps({"upstream": sorted(Actions.actions), "ours": ours.names()}))
"""


def registered_in_child(**env: str) -> dict[str, list[str]]:
    """What upstream's own registry and ours hold in a fresh process with ``env``."""
    result = subprocess.run(
        [sys.executable, "-c", REGISTERED_IN_CHILD],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_every_package_action_is_registered() -> None:
    registry = add_to_fresh_registry()
    assert len(Actions.actions) == 49  # 5.1.4
    assert registry.names() == sorted(Actions.actions)
    for name, cls in Actions.actions.items():
        assert registry.get(name) is cls  # the package's own class, unchanged


def add_to_fresh_registry() -> ActionRegistry:
    registry = ActionRegistry(lite=False)
    add_package_actions(registry)
    return registry


def test_job_lite_registers_the_pull_capable_subset_as_upstream_does() -> None:
    full = registered_in_child(IMAGE_NAME="")
    lite = registered_in_child(IMAGE_NAME="job-lite")
    assert full["ours"] == full["upstream"] and len(full["ours"]) == 49
    assert lite["ours"] == lite["upstream"]
    assert "deployment_state_10" in lite["ours"] and "cleanup_jobs" not in lite["ours"]
    assert 0 < len(lite["ours"]) < len(full["ours"])


def test_a_name_offered_by_ours_and_the_package_is_ours_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="nuvla_job.upstream"):
        registry = load_actions(use_entry_points=False, into=ActionRegistry(lite=False))
        assert "cleanup_jobs" in registry
        ours = registry.get("cleanup_jobs")
        add_package_actions(registry)
    assert registry.get("cleanup_jobs") is ours
    assert registry.get("deployment_state_10") is Actions.actions["deployment_state_10"]
    [line] = [r.getMessage() for r in caplog.records if "replaced" in r.getMessage()]
    for name in ("cleanup_jobs", "cancel_children_jobs", "dummy_test_action"):
        assert f"{name} (by nuvla_job.actions." in line


def test_asking_for_the_package_when_it_is_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(package, "installed_version", lambda: None)
    with pytest.raises(package.PackageMissing, match=r"pip install 'nuvla-job\[nuvla\]'"):
        add_package_actions(ActionRegistry(lite=False))


# -- distributions ----------------------------------------------------------------------------


@pytest.fixture
def adapted() -> DistributionRegistry:
    registry = DistributionRegistry()
    threads = threading.active_count()
    assert add_package_distributions(registry) == 14
    # Upstream's constructors start their own election loop: none ran.
    assert threading.active_count() == threads
    return registry


def test_package_distributions_keep_upstreams_names_intervals_and_elections(
    adapted: DistributionRegistry,
) -> None:
    assert set(Distributions.distributions) == set(UPSTREAM_DISTRIBUTIONS)
    found = {name: (d.interval, d.election_name) for name, d in adapted.distributions.items()}
    assert found == {n: (float(i), e) for n, (i, e) in UPSTREAM_DISTRIBUTIONS.items()}
    assert election_path(adapted.distributions["monitor_bulk_jobs"].election_name) == (
        "/election/monitor_bulk_job"
    )


def test_distribution_options_match_the_names_upstream_matches(
    adapted: DistributionRegistry,
) -> None:
    known = adapted.distributions
    # Upstream's interval option names the election, its exclude option the registered name.
    picked = select(
        known,
        exclude=["monitor_bulk_jobs", "register_usage_record_updated_deployment"],
        intervals=["deployment_state_new:5", "monitor_bulk_job:7"],
    )
    names = {d.name: d.interval for d in picked}
    assert "monitor_bulk_jobs" not in names
    assert "register_usage_record_new_deployment" not in names
    assert names["deployment_state_new"] == 5.0
    only = select(known, include=["monitor_bulk_job"], intervals=["monitor_bulk_jobs:7"])
    assert [(d.name, d.interval) for d in only] == [("monitor_bulk_jobs", 7.0)]


class SearchOnly:
    """A job API client that finds the given resources, and records the searches."""

    def __init__(self, found: dict[str, list[dict]]) -> None:
        self.found = found
        self.searches: list[tuple[str, str | None]] = []

    def search(self, resource: str, **params: object) -> object:
        from nuvla.api.models import CimiCollection

        self.searches.append((resource, params.get("filter")))  # type: ignore[arg-type]
        docs = self.found.get(resource, [])
        return CimiCollection({"resources": docs, "count": len(docs)})


def test_a_tick_runs_the_generator_with_its_job_exists_and_publishes_its_metrics(
    adapted: DistributionRegistry,
) -> None:
    metrics.watch_distributor([])
    api = SearchOnly({"deployment": [{"id": "deployment/1", "execution-mode": "mixed"}]})
    jobs = list(adapted.distributions["deployment_state_new"].generate(api))
    assert jobs == [
        {
            "action": "deployment_state_10",
            "target-resource": {"href": "deployment/1"},
            "execution-mode": "pull",
        }
    ]
    assert [r for r, _ in api.searches] == ["deployment", "job"]  # the existing-jobs check
    sample = "nuvla_job_distribution_value"
    labels = {"name": "job_distribution.deployment_state_new.in_started"}
    assert REGISTRY.get_sample_value(sample, labels) == 1.0
    # monitor_bulk_jobs' job_exists: a monitor job already there, no second one.
    api = SearchOnly({"job": [{"id": "job/bulk-1"}]})
    assert list(adapted.distributions["monitor_bulk_jobs"].generate(api)) == []
    assert len(api.searches) == 2

"""The plan a project file makes per service: the least disruptive way from what runs to
what the file wants, with every difference named and no env value shown."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reuseport.policies import BackoffPolicy, HealthPolicy, RolloutPolicy
from reuseport.projectplan import SETTINGS_FIELDS, plan, settings_differences, with_settings
from reuseport.spec import ServiceSpec


def web(**changes: object) -> ServiceSpec:
    base = ServiceSpec(name="web", image="app:1", replicas=2, port=8080, env=(("TOKEN", "s3cret"),))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_service_that_is_not_up_is_created() -> None:
    decided = plan(None, web())
    assert decided.action == "create" and decided.changes
    assert "create 2 replicas of app:1 on port 8080" in decided.describe()


def test_a_stored_but_unsupervised_service_is_started_again_adopting_its_replicas() -> None:
    decided = plan(web(), web(), supervised=False)
    assert decided.action == "create"
    assert "not supervised" in decided.describe()


def test_an_unchanged_service_is_a_no_op_that_says_so() -> None:
    decided = plan(web(), web())
    assert decided.action == "no-op" and not decided.changes
    assert decided.reasons == ()
    assert "nothing restarts" in decided.describe()


def test_a_port_change_is_refused_with_the_reason_whatever_else_changes() -> None:
    decided = plan(web(), web(port=9090, image="app:2", replicas=5))
    assert decided.action == "refused" and not decided.changes
    text = decided.describe()
    assert "8080 -> 9090" in text and "reuseport down web" in text


def test_only_the_count_is_a_scale() -> None:
    decided = plan(web(), web(replicas=4))
    assert decided.action == "scale"
    assert decided.replicas_changed and not decided.template_changed
    assert decided.reasons == ("replicas: 2 -> 4",)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"image": "app:2"}, "image: app:1 -> app:2"),
        ({"user": "1000"}, "user: (image default) -> 1000"),
        ({"cpus": 0.5}, "cpus: (no limit) -> 0.5"),
        ({"env": (("TOKEN", "other"),)}, "env TOKEN differs"),
        ({"env": ()}, "env TOKEN removed"),
        ({"health": HealthPolicy(port_base=9000)}, "health_port_base: (image default) -> 9000"),
    ],
)
def test_a_template_change_is_a_rolling_update_naming_it(
    changes: dict[str, object], named: str
) -> None:
    decided = plan(web(), web(**changes))
    assert decided.action == "rollout" and decided.template_changed
    assert named in decided.reasons


def test_env_values_never_show_in_a_plan() -> None:
    decided = plan(web(), web(env=(("TOKEN", "n3w-secret"), ("DB", "hunter2"))))
    text = decided.describe()
    assert "env DB added" in text and "env TOKEN differs" in text
    for secret in ("s3cret", "n3w-secret", "hunter2"):
        assert secret not in text


def test_a_template_and_count_change_rolls_out_then_scales() -> None:
    decided = plan(web(), web(image="app:2", replicas=3))
    assert decided.action == "rollout"
    assert decided.template_changed and decided.replicas_changed
    assert decided.reasons == ("image: app:1 -> app:2", "replicas: 2 -> 3")


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"balance": "hash"}, "balance: round-robin -> hash"),
        ({"health": HealthPolicy(hang_window=0)}, "health.hang_window: 5 -> 0"),
        ({"health": HealthPolicy(interval=4)}, "health.interval: 2 -> 4"),
        ({"backoff": BackoffPolicy(maximum=10)}, "backoff.maximum: 30 -> 10"),
        ({"rollout": RolloutPolicy(max_surge=2)}, "rollout.max_surge: 1 -> 2"),
        ({"stop_timeout": 3}, "stop_timeout: 10 -> 3"),
        ({"metrics_port": 9100}, "metrics_port: (none) -> 9100 (takes effect when"),
    ],
)
def test_a_supervisor_setting_alone_is_a_settings_update_naming_it(
    changes: dict[str, object], named: str
) -> None:
    decided = plan(web(), web(**changes))
    assert decided.action == "settings"
    assert not decided.template_changed and not decided.replicas_changed
    assert any(reason.startswith(named) for reason in decided.reasons), decided.reasons


def test_settings_with_a_count_change_is_a_scale_that_carries_the_settings() -> None:
    decided = plan(web(), web(replicas=3, balance="hash"))
    assert decided.action == "scale"
    assert decided.settings_changed == ("balance: round-robin -> hash",)


def test_the_settings_fields_are_neither_template_nor_count_nor_name() -> None:
    assert set(SETTINGS_FIELDS) == {
        "stop_timeout",
        "backoff",
        "rollout",
        "health",
        "metrics_port",
        "metrics_addr",
        "balance",
        "max_per_node",  # a Swarm placement: Swarm moves tasks, reuseport restarts none
    }


def test_with_settings_takes_the_files_settings_and_keeps_the_live_template_and_count() -> None:
    live = web(image="app:3", replicas=7, health=HealthPolicy(port_base=9000))
    wanted = web(balance="hash", health=HealthPolicy(interval=4), stop_timeout=1)
    merged = with_settings(live, wanted)
    assert (merged.image, merged.replicas, merged.health.port_base) == ("app:3", 7, 9000)
    assert (merged.balance, merged.health.interval, merged.stop_timeout) == ("hash", 4, 1)
    assert merged.spec_hash() == live.spec_hash()
    assert settings_differences(merged, replace(wanted, health=merged.health)) == []

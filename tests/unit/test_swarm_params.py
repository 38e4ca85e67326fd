"""A spec as Swarm's service definition, and the spec's Swarm-only rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reuseport import labels
from reuseport.errors import InvalidSpec
from reuseport.options import build_spec
from reuseport.projectplan import plan
from reuseport.spec import ServiceSpec
from reuseport.swarm.params import NANO, service_params


def swarm_spec(**options: Any) -> ServiceSpec:
    return build_spec(image="shop:1", name="shop", engine="swarm", **options)


def test_tasks_run_in_the_host_network_with_port_and_their_slot_as_replica() -> None:
    params = service_params(swarm_spec(replicas=4, port=9000, env=(("MODE", "prod"),)))
    template = params["task_template"]
    assert template["Networks"] == [{"Target": "host"}]
    assert template["ContainerSpec"]["Env"] == ["MODE=prod", "PORT=9000", "REPLICA={{.Task.Slot}}"]
    assert template["ContainerSpec"]["Init"] is True
    assert params["mode"] == {"replicated": {"Replicas": 4}}
    assert params["name"] == "shop"


def test_labels_name_the_service_and_its_template_but_never_an_env_value() -> None:
    params = service_params(swarm_spec(env=(("TOKEN", "s3cret"),)))
    service_labels = params["labels"]
    assert labels.is_owned_swarm_service(service_labels, "shop")
    assert not labels.is_owned_swarm_service(service_labels, "other")
    task_labels = params["task_template"]["ContainerSpec"]["Labels"]
    assert task_labels[labels.ROLE] == labels.ROLE_SWARM_TASK
    assert task_labels[labels.SPEC_HASH] == service_labels[labels.SPEC_HASH]
    shown = json.dumps(service_labels) + json.dumps(task_labels)
    assert "s3cret" not in shown and "TOKEN" in service_labels[labels.SPEC]


def test_updates_start_first_by_the_surge_and_roll_back_on_failure() -> None:
    params = service_params(swarm_spec(max_surge=2, min_ready=3.0))
    update = params["update_config"]
    assert update["Order"] == "start-first" and update["Parallelism"] == 2
    assert update["FailureAction"] == "rollback" and update["MaxFailureRatio"] == 0
    assert update["Delay"] == 3 * NANO  # min-ready between batches
    assert update["Monitor"] == 5 * NANO  # at least Swarm's default window
    assert params["rollback_config"]["FailureAction"] == "pause"
    assert params["rollback_config"]["Order"] == "start-first"


def test_without_surge_updates_stop_first_by_the_unavailable_count() -> None:
    update = service_params(swarm_spec(max_surge=0, max_unavailable=2))["update_config"]
    assert update["Order"] == "stop-first" and update["Parallelism"] == 2


def test_restart_health_stop_cpu_and_placement_map_onto_swarms() -> None:
    spec = swarm_spec(
        backoff_initial=1.5,
        backoff_reset=20.0,
        health_cmd="test -e /tmp/ok",
        health_interval=4.0,
        health_retries=5,
        stop_timeout=7,
        cpus=0.5,
        max_per_node=2,
    )
    template = service_params(spec)["task_template"]
    assert template["RestartPolicy"] == {
        "Condition": "any",
        "Delay": int(1.5 * NANO),
        "MaxAttempts": 0,
        "Window": 20 * NANO,
    }
    check = template["ContainerSpec"]["Healthcheck"]
    assert check["Test"] == ["CMD-SHELL", "test -e /tmp/ok"]
    assert (check["Interval"], check["Retries"]) == (4 * NANO, 5)
    assert template["ContainerSpec"]["StopGracePeriod"] == 7 * NANO
    assert template["Resources"] == {"Limits": {"NanoCPUs": NANO // 2}}
    assert template["Placement"] == {"MaxReplicas": 2}


def test_a_plain_spec_has_no_placement_limit_healthcheck_or_cpu_limit() -> None:
    template = service_params(swarm_spec())["task_template"]
    assert "Placement" not in template and "Resources" not in template
    assert "Healthcheck" not in template["ContainerSpec"]


def test_a_docker_engine_spec_is_not_a_swarm_service() -> None:
    with pytest.raises(ValueError):
        service_params(build_spec(image="shop:1"))


@pytest.mark.parametrize(
    ("options", "key", "said"),
    [
        ({"max_per_node": 2}, "max-per-node", "goes with engine swarm"),
        ({"engine": "k8s"}, "engine", "must be one of docker, swarm"),
        ({"engine": "swarm", "max_per_node": 0}, "max-per-node", "between 1 and 256"),
        ({"engine": "swarm", "health_port_base": 9000}, "health-port-base", "use health-cmd"),
    ],
)
def test_swarm_only_options_are_checked_with_the_key_named(
    options: dict[str, Any], key: str, said: str
) -> None:
    with pytest.raises(InvalidSpec) as raised:
        build_spec(image="shop:1", **options)
    assert raised.value.key == key and said in str(raised.value)


def test_a_file_cannot_move_a_running_service_between_engines() -> None:
    running = build_spec(image="shop:1", name="shop")
    decided = plan(running, swarm_spec(replicas=2))
    assert decided.action == "refused"
    assert "engine: docker -> swarm" in decided.reasons[0]


def test_a_count_or_rollout_policy_change_leaves_the_task_template_alone() -> None:
    # Swarm rolls every task when the template differs: a scale must not.
    before = service_params(swarm_spec(replicas=2))["task_template"]
    after = service_params(swarm_spec(replicas=5, max_surge=2, min_ready=3.0))
    assert after["task_template"] == before
    # The balance is in what the node agents watch (a worker cannot read the service): a
    # change of it is a rolling update of the tasks.
    hashed = service_params(swarm_spec(replicas=2, balance="hash"))["task_template"]
    assert hashed != before


def test_what_the_node_agent_watches_is_in_each_tasks_labels() -> None:
    from reuseport.swarm.watch import Watch

    spec = swarm_spec(port=9000, hang_window=2.0, start_timeout=30.0)
    task_labels = service_params(spec)["task_template"]["ContainerSpec"]["Labels"]
    assert Watch.from_json(task_labels[labels.WATCH]) == Watch(
        "shop", 9000, 2.0, 30.0, balance=spec.balance
    )


def test_with_a_per_node_maximum_updates_stop_first_a_task_at_a_time() -> None:
    # Swarm counts a start-first task against the maximum: a full node would never update.
    update = service_params(swarm_spec(replicas=4, max_per_node=2))["update_config"]
    assert update["Order"] == "stop-first" and update["Parallelism"] == 1

"""A spec as Swarm's service definition: the keyword arguments of docker-py's low-level
``create_service`` / ``update_service``. Pure; every mapping decision is here.

- Host network (``networks=["host"]``): tasks bind the node's port themselves, several
  per node with SO_REUSEPORT; nothing is published through Swarm's routing mesh.
- ``PORT`` and ``REPLICA`` (Swarm's task slot, ``{{.Task.Slot}}``: 1..N, kept by a
  task's successor) in the environment, as the docker engine gives them.
- Rolling updates start-first (``max-surge`` tasks at a time beside the old ones), or
  stop-first when ``max-surge`` is 0 or a ``max-per-node`` is set (Swarm counts the new
  task against it: a full node has no room), ``max-unavailable`` (at least 1) at a time;
  ``min-ready`` seconds
  between batches; a task failing within the monitor window (at least 5 s) fails the
  update, which then rolls back by itself.
- Restarts: always (any exit), after ``backoff-initial`` seconds; Swarm keeps that delay
  fixed (no doubling), and forgets failures after ``backoff-reset``.
- ``health-cmd`` becomes the container's HEALTHCHECK, which Swarm acts on (an unhealthy
  task is replaced); ``stop-timeout`` the stop grace period; ``cpus`` a CPU limit;
  ``max-per-node`` Swarm's per-node maximum of tasks.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from docker.types import (
    ContainerSpec,
    Healthcheck,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)

from reuseport import labels
from reuseport.spec import ServiceSpec
from reuseport.swarm.watch import Watch

NANO = 1_000_000_000
AGENT_SERVICE = "reuseport-agent"
AGENT_SOCKET_DIR = "/run/reuseport-engine"  # inside the agent's container
# Swarm's own default monitor: how long after its start a task's failure fails the update.
DEFAULT_MONITOR_S = 5.0


def ns(seconds: float) -> int:
    return int(round(seconds * NANO))


def service_params(spec: ServiceSpec) -> dict[str, Any]:
    """Everything Swarm needs to run ``spec``: kwargs for ``create_service`` (and, with
    the service's version, ``update_service``)."""
    if spec.engine != "swarm":
        raise ValueError(f"{spec.name}: engine {spec.engine}, not swarm")
    redacted = spec.redacted()
    return {
        "name": spec.name,
        "task_template": task_template(spec),
        "labels": labels.swarm_service_labels(spec.name, redacted.spec_hash(), redacted.to_json()),
        "mode": ServiceMode("replicated", replicas=spec.replicas),
        "update_config": update_config(spec, failure_action="rollback"),
        "rollback_config": update_config(spec, failure_action="pause"),
    }


def task_template(spec: ServiceSpec) -> TaskTemplate:
    env = dict(spec.env) | {"PORT": str(spec.port), "REPLICA": "{{.Task.Slot}}"}
    health = spec.health
    healthcheck = None
    if health.cmd is not None:
        healthcheck = Healthcheck(
            test=["CMD-SHELL", health.cmd],
            interval=ns(health.interval),
            timeout=ns(health.timeout),
            retries=health.retries,
            start_period=ns(health.start_timeout),
        )
    container = ContainerSpec(
        image=spec.image,
        env=[f"{key}={value}" for key, value in sorted(env.items())],
        user=spec.user,
        # Secret-free: the hash of the redacted spec names the template, never its values.
        labels=labels.swarm_task_labels(
            spec.name, spec.redacted().spec_hash(), Watch.of(spec).to_json()
        ),
        stop_grace_period=ns(spec.stop_timeout),
        init=True,  # signals reach the app, and a Python app gets SIGTERM's default
        healthcheck=healthcheck,
    )
    backoff = spec.backoff
    return TaskTemplate(
        container_spec=container,
        resources=Resources(cpu_limit=ns(spec.cpus)) if spec.cpus is not None else None,
        restart_policy=RestartPolicy(
            condition="any", delay=ns(backoff.initial), window=ns(backoff.reset_after)
        ),
        placement=(
            Placement(maxreplicas=spec.max_per_node) if spec.max_per_node is not None else None
        ),
        networks=["host"],
    )


def update_config(spec: ServiceSpec, failure_action: str) -> UpdateConfig:
    rollout = spec.rollout
    # Start-first needs room for the new task beside the old on its node: Swarm counts both
    # against the per-node maximum, so with one a full node would wait forever. Such a
    # service rolls stop-first, a task at a time (its node's other tasks serve meanwhile).
    start_first = rollout.max_surge > 0 and spec.max_per_node is None
    return UpdateConfig(
        parallelism=rollout.max_surge if start_first else max(1, rollout.max_unavailable),
        # Swarm moves on once a new task runs (and is healthy, with a health-cmd): the
        # delay is min-ready's "ran this long", the monitor how long a failure still counts.
        delay=ns(rollout.min_ready_s),
        failure_action=failure_action,
        monitor=ns(max(rollout.min_ready_s, DEFAULT_MONITOR_S)),
        max_failure_ratio=0,
        order="start-first" if start_first else "stop-first",
    )


def agent_params(image: str, socket_dir: str, socket_name: str) -> dict[str, Any]:
    """The node agents' global service: one task per node, which only launches its node's
    agent as a local container in the host's pid namespace (``swarm.launcher``: a Swarm
    service cannot have one). It needs the engine's socket directory, not recursively (see
    engine.docker's supervisor mount), and no capability of its own."""
    container = ContainerSpec(
        image=image,
        args=["agent"],
        env=[
            "REUSEPORT_NODE_ID={{.Node.ID}}",  # to check it reached its own node's engine
            "REUSEPORT_TASK_ID={{.Task.ID}}",  # to find its own container
            f"DOCKER_HOST=unix://{AGENT_SOCKET_DIR}/{socket_name}",
        ],
        labels={labels.MANAGED: "1", labels.ROLE: labels.ROLE_SWARM_AGENT},
        mounts=[
            {
                "Type": "bind",
                "Source": socket_dir,
                "Target": AGENT_SOCKET_DIR,
                "BindOptions": {"NonRecursive": True},
            },
        ],
        init=True,
        stop_grace_period=ns(5),
    )
    return {
        "name": AGENT_SERVICE,
        "task_template": TaskTemplate(
            container_spec=container,
            restart_policy=RestartPolicy(condition="any", delay=ns(1)),
            networks=["host"],
        ),
        "labels": {
            labels.MANAGED: "1",
            labels.ROLE: labels.ROLE_SWARM_AGENT,
            labels.SERVICE: AGENT_SERVICE,
            # What ensure_agent compares: a tool whose agent is defined otherwise replaces it.
            labels.SPEC_HASH: hashlib.sha256(
                json.dumps(container, sort_keys=True).encode()
            ).hexdigest()[:16],
        },
        "mode": ServiceMode("global"),
    }

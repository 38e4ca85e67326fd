"""A project file's plan for a service with ``engine = "swarm"``: the same decisions
(``projectplan``), carried out by Swarm. A template change is a recorded rolling update
(``swarm.service.rollout``); a count or a setting is a plain service update, which Swarm
applies without restarting a task; either way `up` returns once every task listens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from reuseport.projectplan import ServicePlan
from reuseport.store import StateStore
from reuseport.swarm import service as swarm
from reuseport.swarm.engine import SwarmEngine


def is_running(name: str) -> bool:
    """Whether Swarm runs our service ``name`` (a file's plan: else it is created)."""
    return SwarmEngine.from_env().inspect(name) is not None


def apply(
    decided: ServicePlan,
    ready_timeout_s: float,
    rollout_timeout_s: float,
    store: StateStore,
    progress: Callable[[str], None],
) -> None:
    engine = SwarmEngine.from_env()
    name, wanted = decided.name, decided.wanted

    def tell(seen: swarm.SwarmView) -> None:
        progress(f"{name}: {seen.ready}/{wanted.replicas} tasks ready on port {wanted.port}")

    if decided.action == "create":
        swarm.up(wanted, engine, store)
    elif decided.action == "rollout":
        assert decided.running is not None
        target = replace(wanted, replicas=decided.running.replicas)
        swarm.rollout(target, engine, store, timeout_s=rollout_timeout_s, progress=tell)
        if decided.replicas_changed:
            swarm.scale(name, wanted.replicas, engine, store)
    elif decided.action in ("scale", "settings"):
        engine.update(wanted)
        store.save_spec(wanted)
    swarm.wait_ready(wanted, engine, store, ready_timeout_s, tell)


def down(name: str, store: StateStore) -> int:
    return swarm.down(name, SwarmEngine.from_env(), store)

"""The node agent's process: check it reached its own node's engine, then pass every
``PASS_S`` (``swarm.agent.NodeAgent``) with steering and /metrics, until told to stop or
its launcher (``swarm.launcher``) is gone."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from reuseport import steering
from reuseport.swarm.agent import HEARTBEAT_S, MARK, PASS_S, LocalTask, NodeAgent, task_from_inspect
from reuseport.swarm.agentmetrics import MetricsServers
from reuseport.swarm.agentsteer import NodeSteering
from reuseport.swarm.nodeengine import NodeEngine

ALIVE_S = 2.0  # how often the node agent checks that its launcher still runs


def own_identity(
    engine: NodeEngine, wait: Callable[[float], bool], write: Callable[[str], None]
) -> dict[str, str] | None:
    """This node's identity once the engine reached is this node's (None: told to stop).
    Not this node's engine (its socket is elsewhere than the manager's): acting on another
    node's tasks from this kernel would kill healthy ones. Say so, do nothing."""
    identity = engine.node_identity()
    expected = os.environ.get("REUSEPORT_NODE_ID", "")  # Swarm's {{.Node.ID}}
    while expected and identity["node_id"] != expected:
        write(
            json.dumps(
                {
                    MARK: 1,
                    "node_id": expected,
                    "at": round(time.time(), 3),
                    "error": f"the engine at {os.environ.get('DOCKER_HOST', '?')} is node "
                    f"{identity['node_id'] or '(none)'}, not this one: give every node's "
                    "engine its socket at the manager's path",
                    "tasks": [],
                }
            )
        )
        if wait(HEARTBEAT_S):
            return None
        identity = engine.node_identity()
    return identity


def run(
    engine: NodeEngine,
    wait: Callable[[float], bool],
    write: Callable[[str], None],
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Passes every ``PASS_S`` until ``wait`` says stop or ``alive`` (asked every
    ``ALIVE_S``: does the launcher still run?) says no. A task container is inspected once
    (its pid and start do not change while it runs), then only listed."""
    known: dict[str, LocalTask | None] = {}

    def list_tasks() -> list[LocalTask]:
        ids = engine.local_task_ids()
        for container_id in ids:
            if container_id not in known:
                data = engine.inspect_container(container_id)
                known[container_id] = task_from_inspect(data) if data else None
        for gone in set(known) - set(ids):
            del known[gone]
        return [task for task in known.values() if task is not None]

    identity = own_identity(engine, wait, write)
    if identity is None:
        return

    def say(message: str) -> None:
        write(f"reuseport agent on {identity.get('hostname', '?')}: {message}")

    node_steering = NodeSteering(steering.kernel_opener(lambda: None, lambda _h: None), say)
    agent = NodeAgent(list_tasks, engine.kill, identity, write, steering=node_steering)
    servers = MetricsServers(agent, identity.get("hostname", ""), write)
    asked_at = time.monotonic()
    try:
        while True:
            agent.pass_once()
            servers.sync()
            if wait(PASS_S):
                return
            if time.monotonic() - asked_at >= ALIVE_S:
                asked_at = time.monotonic()
                if not alive():
                    return
    finally:
        servers.stop_all()
        node_steering.close()

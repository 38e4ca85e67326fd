"""`reuseport doctor --engine swarm`: can this engine run reuseport's Swarm services, and on
which nodes; are the node agents there and reporting (the checks of this machine, and of
a port on it, are the plain doctor's, printed before these).

Pure over what :func:`read` gathers (the engine's swarm state, the nodes, the agents'
findings), so unit tests replay clusters without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reuseport.doctor import Finding
from reuseport.errors import ReuseportError
from reuseport.swarm.engine import Node, SwarmEngine

INIT_FIX = "docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377"


@dataclass(frozen=True)
class SwarmFacts:
    state: str  # inactive | pending | active | error | locked
    manager: bool
    nodes: list[Node] = field(default_factory=list)
    agent_running: bool = False
    # node id -> its agent's fresh findings line (swarm.service.agent_findings' source)
    findings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tool_image: bool = True  # reuseport:latest on this node (the agents run it)


def read(engine: SwarmEngine, tool_image: str) -> SwarmFacts:
    from reuseport.swarm import agent
    from reuseport.swarm.service import AGENT_FRESH_S

    state, manager = engine.swarm_state()
    if state != "active" or not manager:
        return SwarmFacts(state, manager)
    try:
        engine.require_image(tool_image)
        has_image = True
    except ReuseportError:
        has_image = False
    lines = agent.parse_findings(engine.agent_lines())
    newest = max((float(line.get("at", 0)) for line in lines.values()), default=0.0)
    fresh = {n: line for n, line in lines.items() if newest - float(line["at"]) <= AGENT_FRESH_S}
    return SwarmFacts(state, manager, engine.nodes(), engine.agent_running(), fresh, has_image)


def diagnose(facts: SwarmFacts) -> list[Finding]:
    if facts.state != "active":
        return [
            Finding("swarm", "fail", f"this engine is not in a swarm ({facts.state})", INIT_FIX)
        ]
    if not facts.manager:
        return [
            Finding("swarm", "fail", "this engine is a swarm worker", "run reuseport on a manager")
        ]
    usable = [n for n in facts.nodes if n.state == "ready" and n.availability == "active"]
    findings = [
        Finding("swarm", "ok", f"a manager of a swarm of {len(facts.nodes)} node(s)"),
        Finding(
            "nodes",
            "ok" if usable else "fail",
            f"{len(usable)} of {len(facts.nodes)} can run tasks: "
            + ", ".join(
                f"{n.hostname} ({n.id[:12]}, {n.state}, {n.availability})" for n in facts.nodes
            ),
            "" if usable else "docker node update --availability active NODE",
        ),
        Finding(
            "tool image",
            "ok" if facts.tool_image else "fail",
            "reuseport:latest is here (the node agents run it; every node needs it)"
            if facts.tool_image
            else "reuseport:latest is missing here: the node agents cannot start",
            "" if facts.tool_image else "scripts/build-images, then load it on every node",
        ),
    ]
    findings.append(_agents(facts, usable))
    findings.append(_foreign(facts))
    return findings


def _foreign(facts: SwarmFacts) -> Finding:
    held = [
        f"node {node[:12]} :{port}: {listener.get('describe', '?')}"
        for node, line in facts.findings.items()
        for port, listeners in (line.get("foreign") or {}).items()
        for listener in listeners
    ]
    if not held:
        return Finding("foreign listeners", "ok", "none on the ports of our tasks, by the agents")
    return Finding(
        "foreign listeners",
        "warn",
        "; ".join(held) + ": each takes a share of its node's connections",
        "stop them, or run them as another uid (the kernel then keeps them out of the group)",
    )


def _agents(facts: SwarmFacts, usable: list[Node]) -> Finding:
    if not facts.agent_running:
        return Finding(
            "node agents",
            "ok",
            "not running: the first `up --engine swarm` starts them (a global service)",
        )
    missing = [n.hostname or n.id[:12] for n in usable if n.id not in facts.findings]
    failing = [
        f"{node[:12]}: {line['error']}"
        for node, line in facts.findings.items()
        if line.get("error")
    ]
    if failing:
        return Finding("node agents", "fail", "; ".join(failing), "see README, Docker Swarm")
    if missing:
        return Finding(
            "node agents",
            "warn",
            f"no fresh report from {', '.join(missing)}: tasks there are unchecked",
            "docker service ps reuseport-agent (is reuseport:latest on that node?)",
        )
    return Finding("node agents", "ok", f"reporting from all {len(usable)} usable node(s)")

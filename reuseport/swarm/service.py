"""Operations on a Swarm-run service, and the kernel's view of its tasks.

Swarm schedules, restarts and rolls; what it cannot tell is whether a running task really
listens on the port. So every wait here ends on the kernel, not on Swarm's "running":
each task must hold a LISTEN socket on the port (the attribution the docker engine's
supervisor uses, ``kernel.attribution``): read here for this node's tasks, and for the
other nodes' from their node agents' findings (``swarm.agent``), which also say whether
a task is hung. A task no fresh finding covers is shown and counted as unchecked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from reuseport import labels
from reuseport import rollout as rollouts
from reuseport.engine.base import Replica
from reuseport.errors import (
    ReplicaFailed,
    RolloutFailed,
    ServiceNotFound,
    SpecConflict,
)
from reuseport.kernel import attribution
from reuseport.kernel.attribution import ForeignListener
from reuseport.spec import ServiceSpec
from reuseport.store import StateStore
from reuseport.swarm import agent
from reuseport.swarm.engine import Node, SwarmEngine, Task

POLL_S = 0.25
AGENT_IMAGE = "reuseport:latest"  # the tool's own image, as the docker engine's supervisor


@dataclass(frozen=True)
class TaskRow:
    """One current task: Swarm's record, and on this node the kernel's word."""

    task: Task
    node: Node | None
    listening: bool | None  # None: on another node, and no agent finding for it
    connections: int | None = None
    verdict: str | None = None  # the node agent's (ready, starting, hung, ...); None: none
    reason: str = ""
    pid: int = 0  # here: the host pid of the process holding its listener (the app, not init)
    steered: str = ""  # the node agent's: "" on the kernel's hash, "in" the map, else why not

    @property
    def node_name(self) -> str:
        return self.node.hostname if self.node else self.task.node_id[:12] or "(unassigned)"


@dataclass(frozen=True)
class SwarmView:
    spec: ServiceSpec
    rows: list[TaskRow]
    update: str = ""  # Swarm's update state, e.g. "updating", "rollback_completed"
    update_message: str = ""
    foreign: tuple[ForeignListener, ...] = ()
    failures: list[Task] = field(default_factory=list)  # recent failed tasks, newest first
    agent_errors: list[str] = field(default_factory=list)  # what node agents could not do
    # Foreign listeners on the port on other nodes, as their agents describe them.
    remote_foreign: list[str] = field(default_factory=list)
    balances: dict[str, str] = field(default_factory=dict)  # node id -> balance in force

    @property
    def listening(self) -> int:
        return sum(1 for r in self.rows if r.listening)

    @property
    def unchecked(self) -> int:
        return sum(1 for r in self.rows if r.task.running and r.listening is None)

    @property
    def ready(self) -> int:
        """Running tasks a kernel shows listening (this node's read here, the others' by
        their node agents); an unchecked task is not ready yet."""
        return sum(1 for r in self.rows if r.task.running and r.listening)

    def converged(self, spec_hash: str) -> bool:
        current = [r for r in self.rows if r.task.running]
        return (
            len(current) == self.spec.replicas
            and self.ready == self.spec.replicas
            and all(r.task.spec_hash == spec_hash for r in current)
        )


def view(name: str, engine: SwarmEngine, store: StateStore) -> SwarmView:
    spec = store.load_spec(name)
    if spec is None:
        raise ServiceNotFound(f"no service named {name!r}")
    tasks, status = engine.tasks_and_update(name)
    nodes = {n.id: n for n in engine.nodes()}
    current = sorted((t for t in tasks if t.current), key=lambda t: (t.slot, t.id))
    here = [t for t in current if t.running and nodes.get(t.node_id, _NOWHERE).is_self]
    seen = attribution.observe(spec.port, [_as_replica(name, t) for t in here])
    reports = agent_findings(engine) if current else AgentReports({}, [], {})
    findings = reports.tasks
    rows = []
    for task in current:
        node = nodes.get(task.node_id)
        found = findings.get(task.node_id, {}).get(task.container_id) if task.running else None
        verdict, reason = (found["verdict"], found["reason"]) if found else (None, "")
        steered = str(found.get("steered") or "") if found else ""
        if node is not None and node.is_self:
            # This node: the kernel read now, the agent's verdict (hung, ...) beside it.
            sockets = seen.replicas.get(task.container_id)
            held = sockets is not None and bool(sockets.listeners)
            count = len(sockets.connections) if sockets else 0
            pid = sockets.pid if sockets and held else task.pid
            rows.append(TaskRow(task, node, held, count, verdict, reason, pid, steered))
        elif found:
            listening, conns = found["listening"], found["connections"]
            rows.append(TaskRow(task, node, listening, conns, verdict, reason, steered=steered))
        else:
            rows.append(TaskRow(task, node, listening=None))
    failures = [t for t in tasks if t.state in ("failed", "rejected") and t.error]
    return SwarmView(
        spec,
        rows,
        status.state,
        status.message,
        seen.foreign,
        failures[:3],
        reports.errors,
        [
            f"node {node[:12]}: {listener['describe']}"
            for node, ports in reports.foreign.items()
            if not nodes.get(node, _NOWHERE).is_self  # this node's: read directly above
            for listener in ports.get(str(spec.port), [])
        ],
        {
            node: str(on_node[str(spec.port)])
            for node, on_node in reports.balances.items()
            if str(spec.port) in on_node
        },
    )


_NOWHERE = Node("", "", "", "", "", "", False)
AGENT_FRESH_S = 3 * agent.HEARTBEAT_S  # an older findings line is no longer believed


@dataclass(frozen=True)
class AgentReports:
    """What the node agents' fresh lines say (``swarm.agent``)."""

    tasks: dict[str, dict[str, dict[str, Any]]]  # node id -> container id -> its finding
    errors: list[str]  # what an agent could not do
    foreign: dict[str, dict[str, list[dict[str, Any]]]]  # node id -> port -> listeners
    balances: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> port -> policy


def agent_findings(engine: SwarmEngine) -> AgentReports:
    now = time.time()
    reports = AgentReports({}, [], {})
    for node, line in agent.parse_findings(engine.agent_lines()).items():
        if now - float(line.get("at", 0)) > AGENT_FRESH_S:
            continue
        if line.get("error"):
            reports.errors.append(f"agent on node {node[:12]}: {line['error']}")
        reports.tasks[node] = {task["container_id"]: task for task in line.get("tasks", [])}
        reports.foreign[node] = line.get("foreign") or {}
        reports.balances[node] = line.get("balance") or {}
    return reports


def _as_replica(service: str, task: Task) -> Replica:
    """A task on this node as the attributor's replica record: its container and pid."""
    return Replica(
        id=task.container_id,
        name=f"{service}.{task.slot}.{task.id[:12]}",
        service=service,
        index=task.slot,
        state="running",
        pid=task.pid,
        image=task.image,
        spec_hash=task.spec_hash,
        spec_json="",
        restarts=0,
        started_at=None,
    )


def wait_ready(
    spec: ServiceSpec,
    engine: SwarmEngine,
    store: StateStore,
    timeout_s: float,
    progress: Callable[[SwarmView], None] = lambda v: None,
) -> SwarmView:
    """Until every task runs the spec's template and listens (here: proven by the kernel);
    ReplicaFailed after ``timeout_s`` naming what Swarm last said."""
    deadline = time.monotonic() + timeout_s
    spec_hash = spec.redacted().spec_hash()
    while True:
        seen = view(spec.name, engine, store)
        progress(seen)
        if seen.converged(spec_hash):
            return seen
        if time.monotonic() > deadline:
            # Why, in Swarm's words: a task it cannot place (pending, "no suitable node"),
            # one that failed, or the update's state.
            stuck = [r.task.error for r in seen.rows if r.task.error and not r.task.running]
            failed = [t.error for t in seen.failures]
            said = next(iter(stuck + failed), seen.update_message)
            raise ReplicaFailed(
                f"{seen.ready}/{spec.replicas} tasks ready on port {spec.port} after "
                f"{timeout_s:g}s" + (f"; Swarm says: {said}" if said else "")
            )
        time.sleep(POLL_S)


def up(spec: ServiceSpec, engine: SwarmEngine, store: StateStore) -> bool:
    """Create the Swarm service (True), or find it already running this spec (False)."""
    engine.require_manager()
    engine.require_image(spec.image)
    engine.ensure_agent(AGENT_IMAGE)
    stored = store.load_spec(spec.name)
    if stored is not None and stored.engine != "swarm":
        raise SpecConflict(
            f"{spec.name!r} runs on the docker engine here: `reuseport down {spec.name}` first"
        )
    existing = engine.inspect(spec.name)
    if existing is not None:
        # The whole (redacted) spec, not only the template: the count, and the hang window
        # the tasks' labels carry, differ too when another spec runs.
        if existing["Spec"]["Labels"].get(labels.SPEC) != spec.redacted().to_json():
            raise SpecConflict(
                f"Swarm service {spec.name!r} already runs another spec: change it with "
                "`reuseport scale`/`rollout`, or `down` it first"
            )
        store.save_spec(spec)
        return False
    engine.create(spec)
    store.save_spec(spec)
    return True


def scale(name: str, replicas: int, engine: SwarmEngine, store: StateStore) -> ServiceSpec:
    spec = _stored(name, store).with_replicas(replicas)
    engine.update(spec)
    store.save_spec(spec)
    return spec


def rollout(
    target: ServiceSpec,
    engine: SwarmEngine,
    store: StateStore,
    *,
    timeout_s: float,
    progress: Callable[[SwarmView], None],
) -> rollouts.Outcome:
    """Swarm's rolling update to ``target`` (start-first), recorded in the history like the
    docker engine's; finished when every task runs it and listens, or Swarm rolled back."""
    current = _stored(target.name, store)
    engine.require_image(target.image)
    revisions = rollouts.history(store, target.name)
    number = max(r["revision"] for r in revisions) + 1
    revisions.append(rollouts.new_revision(number, target, "in progress"))
    store.save_history(target.name, revisions)
    started = time.monotonic()
    target = replace(target, replicas=current.replicas)
    engine.update(target)
    store.save_spec(target)
    deadline = started + timeout_s
    spec_hash = target.redacted().spec_hash()
    while True:
        seen = view(target.name, engine, store)
        progress(seen)
        if seen.update.startswith("rollback") or seen.update == "paused":
            store.save_spec(current)
            rollouts.record(store, target.name, number, f"rolled back: {seen.update_message}")
            raise RolloutFailed(
                f"rollout of {target.name!r} to {target.image} failed; Swarm: "
                f"{seen.update_message or seen.update} (back on {current.image})"
            )
        if seen.converged(spec_hash) and seen.update in ("", "completed"):
            break
        if time.monotonic() > deadline:
            engine.roll_back(target.name)
            store.save_spec(current)
            rollouts.record(store, target.name, number, "rolled back: timed out")
            raise RolloutFailed(
                f"rollout of {target.name!r} to {target.image} did not finish in "
                f"{timeout_s:g}s; rolling back to {current.image}"
            )
        time.sleep(POLL_S)
    for entry in revisions[:-1]:
        if entry["result"] in ("deployed", "complete"):
            entry["result"] = "superseded"
    revisions[-1]["result"] = "complete"
    store.save_history(target.name, revisions)
    return rollouts.Outcome(number, target.image, time.monotonic() - started)


def down(name: str, engine: SwarmEngine, store: StateStore, timeout_s: float = 120) -> int:
    """Remove the Swarm service and wait until its tasks are gone; how many ran."""
    count = len([t for t in engine.tasks(name) if t.current])
    engine.remove(name)
    deadline = time.monotonic() + timeout_s
    while engine.task_containers(name):
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    store.forget(name)
    if not engine.services():  # the last of ours: the node agents go too
        engine.remove_agent()
    return count


def _stored(name: str, store: StateStore) -> ServiceSpec:
    spec = store.load_spec(name)
    if spec is None or spec.engine != "swarm":
        raise ServiceNotFound(f"no Swarm service named {name!r} is up (see `reuseport ps`)")
    return spec

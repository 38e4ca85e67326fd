"""The node agent: reuseport's kernel view on every node of a swarm.

One per node: a local container of the tool's image in the host's pid and network
namespaces, started on its node by the ``reuseport-agent`` global service's task
(``swarm.launcher``; its process loop is ``swarm.agentloop``). Every pass it lists this
node's tasks of every reuseport service from the local engine, reads their sockets from
the kernel (the attribution the supervisor uses) and judges each task the way the
supervisor judges a replica:

- ``starting``: running, not listening yet, within its start timeout;
- ``never-listened``: not listening after its start timeout (watched all that time);
- ``closed``: listened, and closed its listener: being stopped, left to Swarm;
- ``hung``: connections left in its accept queue for the hang window (``liveness``);
- ``ready`` otherwise.

A never-listened or hung task is ended: its listeners are closed first (sock_diag
SOCK_DESTROY: the kernel stops routing new connections to it at once, and with
``tcp_migrate_req=1`` moves its queue to the others), then its container is killed, and
Swarm's restart policy schedules a successor in its slot.

Ports whose tasks ask for a balance other than hash are steered (``swarm.agentsteer``):
the tasks judged ready are the members of the port's map.

Its findings leave as one JSON line on stdout (on a change, else every ``HEARTBEAT_S``):
`ps` reads the latest line per node through `docker service logs`, which Swarm carries
over its own mutually authenticated, encrypted channels (the launcher copies them to its
own output). So the agent listens on nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from reuseport import labels, liveness, steering
from reuseport.engine.base import Replica
from reuseport.judge import suspect_why
from reuseport.kernel import attribution, destroy
from reuseport.kernel.attribution import ForeignListener, ReplicaSockets
from reuseport.swarm.agentsteer import NodeSteering, PortPlan
from reuseport.swarm.watch import Watch

MARK = "reuseport_agent"  # the key that tells a findings line from any other output
PASS_S = 0.5
HEARTBEAT_S = 5.0

READY, STARTING, SUSPECT, HUNG, NEVER = "ready", "starting", "suspect", "hung", "never-listened"
# Listened, and no longer does: being stopped (Swarm's SIGTERM; the app closed its listener
# and finishes its in-flight requests). Never ended by the agent: Swarm is already at it.
CLOSED = "closed"


@dataclass(frozen=True)
class LocalTask:
    """A running task container on this node, from the local engine."""

    container_id: str
    task_id: str
    slot: int
    pid: int
    started_at: float  # epoch seconds
    watch: Watch  # what its labels say to watch (labels.swarm_task_labels)


@dataclass(frozen=True)
class TaskFinding:
    container_id: str
    task_id: str
    service: str
    slot: int
    listening: bool
    accept_queue: int
    backlog: int
    connections: int
    verdict: str
    reason: str = ""
    steered: str = ""  # "" on the kernel's hash; "in" the steering map, else why not


def judge_task(
    task: LocalTask,
    sockets: ReplicaSockets | None,
    stall: liveness.Stall | None,
    now: float,
    listened: bool = False,
    watched_since: float = 0.0,
) -> tuple[str, str]:
    """(verdict, why) of one task from one reading (pure). ``listened``: this agent has
    seen it listening before; ``watched_since``: when this agent first saw it (a task it
    has not watched for its whole start timeout is never called never-listened: it may be
    one that listened before this agent started, now stopping)."""
    watch = task.watch
    if sockets is None or not sockets.listeners:
        if listened:
            return CLOSED, "closed its listener (stopping)"
        waited = now - max(task.started_at, watched_since)
        if waited > watch.start_timeout:
            return NEVER, f"not listening on port {watch.port} after {waited:.0f}s"
        return STARTING, ""
    why = liveness.hung(stall, watch.hang_window, now)
    if why:
        return HUNG, why
    return (SUSPECT, "") if stall is not None else (READY, "")


def out_of_map(verdict: str, why: str, stall: liveness.Stall | None, now: float) -> str:
    """Why a task must not be in its port's steering map ("" = it belongs there): as
    judge.out_of_steering for a replica, a listening task that is not suspect."""
    if verdict in (READY, SUSPECT):
        return suspect_why(stall, now)
    return why or verdict


def asked_balance(tasks: list[LocalTask]) -> str:
    """The balance a port's tasks ask for: the newest task's (a rollout that changes it
    runs old and new tasks side by side for a while)."""
    return max(tasks, key=lambda t: t.started_at).watch.balance


def task_from_inspect(data: dict[str, Any]) -> LocalTask | None:
    """A task container's record, or None when it is not a running reuseport task."""
    config_labels = (data.get("Config") or {}).get("Labels") or {}
    state = data.get("State") or {}
    if config_labels.get(labels.ROLE) != labels.ROLE_SWARM_TASK or not state.get("Running"):
        return None
    watch = Watch.from_json(config_labels.get(labels.WATCH, ""))
    if watch is None:
        return None
    return LocalTask(
        container_id=data["Id"],
        task_id=config_labels.get("com.docker.swarm.task.id", ""),
        slot=_slot(config_labels.get("com.docker.swarm.task.name", "")),
        pid=int(state.get("Pid") or 0),
        started_at=_epoch(state.get("StartedAt", "")),
        watch=watch,
    )


def _slot(task_name: str) -> int:
    # SERVICE.SLOT.TASKID
    parts = task_name.rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def _epoch(stamp: str) -> float:
    if not stamp or stamp.startswith("0001-"):
        return time.time()
    # Docker's RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
    head, _, rest = stamp.partition(".")
    fraction = "".join(c for c in rest if c.isdigit())[:6]
    zone = "+00:00" if stamp.endswith("Z") else rest[len(rest.rstrip("+-:0123456789")) :]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}{zone or '+00:00'}").timestamp()


def _as_replica(task: LocalTask) -> Replica:
    return Replica(
        id=task.container_id,
        name=task.task_id,
        service=task.watch.service,
        index=task.slot,
        state="running",
        pid=task.pid,
        image="",
        spec_hash="",
        spec_json="",
        restarts=0,
        started_at=task.started_at,
    )


class NodeAgent:
    """One node's passes: list, read, judge, end what is hung or never listened, report."""

    def __init__(
        self,
        list_tasks: Callable[[], list[LocalTask]],
        kill: Callable[[str], None],
        node: dict[str, str],
        write: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        observe: Callable[..., attribution.PortObservation] = attribution.observe,
        close_listener: Callable[[int, int], bool] = destroy.close_listener,
        steering: NodeSteering | None = None,
    ) -> None:
        self._list_tasks = list_tasks
        self._kill = kill
        self._node = node
        self._write = write
        self._clock = clock
        self._observe = observe
        self._close_listener = close_listener
        self._steering = steering
        self._stalls: dict[str, liveness.Stall] = {}
        self._ended: set[str] = set()
        self._listened: set[str] = set()  # tasks seen listening (a later close: stopping)
        self._first_seen: dict[str, float] = {}  # container id -> when this agent first saw it
        # port -> inode -> a listener on it that no task of ours holds
        self._foreign: dict[int, dict[int, ForeignListener]] = {}
        # What /metrics reads (swarm.agentmetrics): replaced whole each pass, never mutated.
        self.findings: tuple[TaskFinding, ...] = ()
        self.watches: dict[str, Watch] = {}  # service -> what its tasks here say
        self.foreign_counts: dict[int, int] = {}  # port -> foreign listeners on it
        self.balances: dict[int, str] = {}  # port -> the balance in force on it
        self.ended: Counter[tuple[str, str]] = Counter()  # (service, verdict) -> tasks ended
        self._last_line: object = None
        self._last_write = 0.0

    def pass_once(self) -> list[TaskFinding]:
        now = self._clock()
        listed = self._list_tasks()
        # An ended task is judged no more; once its container is gone, forget it too.
        self._ended &= {t.container_id for t in listed}
        tasks = [t for t in listed if t.container_id not in self._ended]
        judged: list[tuple[LocalTask, ReplicaSockets | None, str, str, str]] = []
        plans: dict[int, PortPlan] = {}
        by_port: dict[int, list[LocalTask]] = {}
        for task in tasks:
            by_port.setdefault(task.watch.port, []).append(task)
        for port, on_port in by_port.items():
            # Foreign listeners too: an owner is looked up once (a scan of every process's
            # fds), then kept by inode, so a steady port costs no scan.
            seen = self._observe(
                port,
                [_as_replica(t) for t in on_port],
                foreign=True,
                known_foreign=self._foreign.get(port, {}),
            )
            self._foreign[port] = {f.inode: f for f in seen.foreign}
            wanted: dict[int, int] = {}
            for task in on_port:
                sockets = seen.replicas.get(task.container_id)
                stall = liveness.advance(self._stalls.get(task.container_id), sockets, now)
                if stall is None:
                    self._stalls.pop(task.container_id, None)
                else:
                    self._stalls[task.container_id] = stall
                if sockets is not None and sockets.listeners:
                    self._listened.add(task.container_id)
                listened = task.container_id in self._listened
                since = self._first_seen.setdefault(task.container_id, now)
                verdict, why = judge_task(task, sockets, stall, now, listened, since)
                if verdict in (HUNG, NEVER):
                    self._end(task, sockets)
                    self.ended = self.ended + Counter({(task.watch.service, verdict): 1})
                out = out_of_map(verdict, why, stall, now)
                if not out and sockets:
                    wanted.update(sockets.holders)
                judged.append((task, sockets, verdict, why, out))
            policy = asked_balance(on_port)
            loads = steering.loads(seen) if policy == "least-conn" else None
            plans[port] = PortPlan(policy, wanted, loads)
        if self._steering is not None:
            self._steering.apply(plans)
        findings = [self._finding(*row) for row in judged]
        live = {t.container_id for t in tasks}
        self._stalls = {cid: s for cid, s in self._stalls.items() if cid in live}
        self._listened &= live
        self._first_seen = {cid: t for cid, t in self._first_seen.items() if cid in live}
        self._foreign = {p: f for p, f in self._foreign.items() if p in by_port}
        self.findings = tuple(findings)
        self.watches = {t.watch.service: t.watch for t in tasks}
        self.foreign_counts = {port: len(found) for port, found in self._foreign.items()}
        self.balances = {port: self.balance(port) for port in by_port}
        self._report(findings, now)
        return findings

    def balance(self, port: int) -> str:
        return self._steering.policy(port) if self._steering is not None else "hash"

    def _finding(
        self, task: LocalTask, sockets: ReplicaSockets | None, verdict: str, why: str, out: str
    ) -> TaskFinding:
        steered = ""
        if self.balance(task.watch.port) != "hash" and self._steering is not None:
            members = self._steering.members(task.watch.port)
            held = set(sockets.listeners) if sockets else set()
            steered = "in" if held and held <= members else (out or "not admitted yet")
        return TaskFinding(
            task.container_id,
            task.task_id,
            task.watch.service,
            task.slot,
            bool(sockets and sockets.listeners),
            sockets.accept_queue if sockets else 0,
            sockets.backlog if sockets else 0,
            len(sockets.connections) if sockets else 0,
            verdict,
            why,
            steered,
        )

    def _end(self, task: LocalTask, sockets: ReplicaSockets | None) -> None:
        """Close its listeners (no new connection reaches it), then kill it: Swarm
        schedules the successor."""
        for inode in sockets.listeners if sockets else ():
            self._close_listener(task.watch.port, inode)
        self._kill(task.container_id)
        self._ended.add(task.container_id)

    def _report(self, findings: list[TaskFinding], now: float) -> None:
        foreign = {
            str(port): [
                {"inode": f.inode, "uid": f.uid, "pid": f.pid, "describe": f.describe()}
                for f in listeners.values()
            ]
            for port, listeners in sorted(self._foreign.items())
            if listeners
        }
        shape = (
            tuple(
                (f.container_id, f.listening, f.verdict, f.accept_queue > 0, f.steered)
                for f in findings
            ),
            tuple((port, len(found)) for port, found in foreign.items()),
        )
        if shape == self._last_line and now - self._last_write < HEARTBEAT_S:
            return
        self._last_line, self._last_write = shape, now
        line = {MARK: 1, **self._node, "at": round(now, 3)}
        line["tasks"] = [asdict(f) for f in findings]
        line["foreign"] = foreign
        line["balance"] = {str(port): policy for port, policy in sorted(self.balances.items())}
        self._write(json.dumps(line, separators=(",", ":")))


def parse_findings(lines: list[str]) -> dict[str, dict[str, Any]]:
    """node id -> its agent's latest findings line, from `docker service logs` output."""
    latest: dict[str, dict[str, Any]] = {}
    for line in lines:
        start = line.find("{")
        if start < 0 or MARK not in line:
            continue
        try:
            found = json.loads(line[start:])
        except ValueError:
            continue
        node = found.get("node_id")
        if (
            isinstance(found, dict)
            and node
            and found.get("at", 0) >= latest.get(node, {}).get("at", 0)
        ):
            latest[node] = found
    return latest

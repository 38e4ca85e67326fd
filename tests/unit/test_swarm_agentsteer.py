"""Steering on a Swarm node, with a fake kernel and a fake steerer: the node agent admits
the tasks that listen, takes a suspect one out before the hang window ends it, never admits
a foreign listener, runs the hash where steering is unavailable (saying so once) and drops
a port's steering when its tasks ask for the hash or are gone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from reuseport.errors import ReuseportError
from reuseport.kernel.attribution import ForeignListener, PortObservation, ReplicaSockets
from reuseport.options import build_spec
from reuseport.swarm.agent import LocalTask, NodeAgent
from reuseport.swarm.agentsteer import NodeSteering, PortPlan
from reuseport.swarm.watch import Watch

SPEC = build_spec(
    image="shop:1", name="shop", engine="swarm", port=9000, hang_window=2.0, balance="round-robin"
)


@dataclass(frozen=True)
class Synced:
    members: frozenset[int]
    failed: dict[int, str]


class FakeSteerer:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.map: dict[int, int] = {}
        self.loads: dict[int, int] = {}
        self.closed = self.detached = False

    def handle(self) -> dict:
        return {}

    def sync(self, wanted: Mapping[int, int]) -> Synced:
        self.map = dict(wanted)
        return Synced(frozenset(self.map), {})

    def members(self) -> frozenset[int]:
        return frozenset(self.map)

    def set_loads(self, loads: Mapping[int, int]) -> None:
        self.loads = dict(loads)

    def close(self) -> None:
        self.closed = True

    def detach(self) -> None:
        self.detached = True
        self.map = {}


class Opener:
    def __init__(self, unavailable: str = "") -> None:
        self.unavailable = unavailable
        self.opened: list[FakeSteerer] = []

    def __call__(self, policy: str) -> FakeSteerer:
        if self.unavailable:
            raise ReuseportError(self.unavailable)
        self.opened.append(FakeSteerer(policy))
        return self.opened[-1]


def task(cid: str, pid: int, spec: Any = SPEC) -> LocalTask:
    return LocalTask(cid, "t-" + cid, pid, pid, 90.0, Watch.of(spec))


def sockets(pid: int, queue: int = 0, connections: int = 0) -> ReplicaSockets:
    inode = pid * 10
    return ReplicaSockets(pid, (inode,), queue, 128, frozenset(range(connections)), ((inode, pid),))


class Node:
    def __init__(self, tasks: list[LocalTask], opener: Opener) -> None:
        self.now = 100.0
        self.tasks = tasks
        self.readings: dict[str, ReplicaSockets] = {}
        self.foreign: tuple[ForeignListener, ...] = ()
        self.said: list[str] = []
        self.lines: list[dict[str, Any]] = []
        self.steering = NodeSteering(opener, self.said.append)
        self.agent = NodeAgent(
            lambda: self.tasks,
            lambda cid: None,
            {"node_id": "n1", "hostname": "box"},
            lambda line: self.lines.append(json.loads(line)),
            clock=lambda: self.now,
            observe=self.observe,
            close_listener=lambda port, inode: True,
            steering=self.steering,
        )

    def observe(self, port: int, replicas: list[Any], **_: Any) -> PortObservation:
        ids = {r.id for r in replicas}
        return PortObservation(
            port, {c: s for c, s in self.readings.items() if c in ids}, self.foreign
        )

    def steered(self) -> dict[str, str]:
        return {f.container_id: f.steered for f in self.agent.pass_once()}


def test_listening_tasks_are_admitted_and_a_starting_one_is_not() -> None:
    opener = Opener()
    node = Node([task("a", 1), task("b", 2), task("c", 3)], opener)
    node.readings = {"a": sockets(1), "b": sockets(2)}
    assert node.steered() == {"a": "in", "b": "in", "c": "starting"}
    assert opener.opened[0].map == {10: 1, 20: 2}
    assert node.lines[-1]["balance"] == {"9000": "round-robin"}
    assert node.lines[-1]["tasks"][0]["steered"] == "in"


def test_a_suspect_task_leaves_the_map_long_before_the_hang_window_and_comes_back() -> None:
    opener = Opener()
    node = Node([task("a", 1), task("b", 2)], opener)
    node.readings = {"a": sockets(1), "b": sockets(2)}
    node.steered()
    node.readings["b"] = sockets(2, queue=3)  # queued connections it does not take
    assert node.steered()["b"] == "in"  # one reading is no evidence yet
    node.now += 0.5
    assert node.steered()["b"].startswith("suspect: accept queue unmoved")
    assert opener.opened[0].map == {10: 1}
    node.now += 0.5
    node.readings["b"] = sockets(2, queue=0)  # it took its queue: back in
    assert node.steered()["b"] == "in"
    assert opener.opened[0].map == {10: 1, 20: 2}


def test_a_foreign_listener_is_never_admitted() -> None:
    opener = Opener()
    node = Node([task("a", 1)], opener)
    node.readings = {"a": sockets(1)}
    node.foreign = (ForeignListener(555, "0.0.0.0:9000", 0, 77, "nc", None),)
    node.steered()
    assert opener.opened[0].map == {10: 1}


def test_unavailable_steering_runs_the_hash_and_says_why_once() -> None:
    node = Node([task("a", 1)], Opener(unavailable="no CAP_SYS_ADMIN"))
    node.readings = {"a": sockets(1)}
    assert node.steered() == {"a": ""}
    node.now += 0.5
    node.steered()
    assert len(node.said) == 1 and "no CAP_SYS_ADMIN" in node.said[0]
    assert node.lines[-1]["balance"] == {"9000": "hash"}


def test_hash_tasks_are_not_steered_and_a_port_left_by_its_tasks_is_detached() -> None:
    opener = Opener()
    node = Node([task("a", 1)], opener)
    node.readings = {"a": sockets(1)}
    node.steered()
    node.tasks = []
    node.steered()
    assert opener.opened[0].detached
    hashed = replace(SPEC, balance="hash")
    node.tasks = [task("h", 4, hashed)]
    node.readings = {"h": sockets(4)}
    assert node.steered() == {"h": ""} and len(opener.opened) == 1


def test_least_conn_gets_each_listeners_connections() -> None:
    opener = Opener()
    least = replace(SPEC, balance="least-conn")
    node = Node([task("a", 1, least), task("b", 2, least)], opener)
    node.readings = {"a": sockets(1, connections=5), "b": sockets(2, connections=1)}
    node.steered()
    assert opener.opened[0].policy == "least-conn"
    assert opener.opened[0].loads == {10: 5, 20: 1}


def test_the_plan_is_applied_per_port() -> None:
    opener = Opener()
    steering = NodeSteering(opener, print)
    steering.apply({1: PortPlan("round-robin", {5: 50}), 2: PortPlan("hash", {6: 60})})
    assert steering.policy(1) == "round-robin" and steering.policy(2) == "hash"
    assert steering.members(1) == {5} and len(opener.opened) == 1
    steering.close()
    assert opener.opened[0].closed and not opener.opened[0].detached

"""The Swarm node agent's decisions, replayed over scripted kernel readings: a task that
listens is ready, one that stops taking its queue is hung after the hang window and ended
(listeners closed first, then killed), one that never listens is ended after its start
timeout, and findings go out on a change or a heartbeat only."""

from __future__ import annotations

import json
from typing import Any

from reuseport import labels
from reuseport.kernel.attribution import ForeignListener, PortObservation, ReplicaSockets
from reuseport.options import build_spec
from reuseport.swarm import agent
from reuseport.swarm.agent import LocalTask, NodeAgent, parse_findings, task_from_inspect
from reuseport.swarm.watch import Watch

SPEC = build_spec(image="shop:1", name="shop", engine="swarm", port=9000, hang_window=2.0)


def task(cid: str = "c1", started_at: float = 0.0) -> LocalTask:
    return LocalTask(cid, "t-" + cid, 1, 4242, started_at, Watch.of(SPEC))


class Kernel:
    """Scripted readings: container id -> its sockets, changed by the test between passes."""

    def __init__(self) -> None:
        self.sockets: dict[str, ReplicaSockets] = {}
        self.foreign: tuple[ForeignListener, ...] = ()
        self.known: list[dict[int, ForeignListener]] = []  # what each read was given

    def observe(
        self,
        port: int,
        replicas: list[Any],
        foreign: bool = True,
        known_foreign: dict[int, ForeignListener] | None = None,
    ) -> PortObservation:
        assert port == 9000 and foreign
        self.known.append(dict(known_foreign or {}))
        ids = {r.id for r in replicas}
        owned = {c: s for c, s in self.sockets.items() if c in ids}
        return PortObservation(port, owned, self.foreign)


def listening(queue: int = 0, connections: frozenset[int] = frozenset()) -> ReplicaSockets:
    return ReplicaSockets(4242, (77,), queue, 128, connections)


class Harness:
    def __init__(self, tasks: list[LocalTask]) -> None:
        self.now = 100.0
        self.tasks = tasks
        self.kernel = Kernel()
        self.killed: list[str] = []
        self.closed: list[tuple[int, int]] = []
        self.lines: list[dict[str, Any]] = []
        self.agent = NodeAgent(
            lambda: self.tasks,
            self.killed.append,
            {"node_id": "n1", "hostname": "box"},
            lambda line: self.lines.append(json.loads(line)),
            clock=lambda: self.now,
            observe=self.kernel.observe,
            close_listener=lambda port, inode: self.closed.append((port, inode)) or True,
        )

    def verdicts(self) -> dict[str, str]:
        return {f.container_id: f.verdict for f in self.agent.pass_once()}


def test_a_listening_task_that_takes_its_queue_is_ready_and_never_ended() -> None:
    h = Harness([task(started_at=99.0)])
    h.kernel.sockets["c1"] = listening()
    assert h.verdicts() == {"c1": "ready"}
    for step in range(10):  # a queue, but new connections accepted each reading: progress
        h.now += 0.5
        h.kernel.sockets["c1"] = listening(queue=3, connections=frozenset({step}))
        assert h.verdicts()["c1"] in ("ready", "suspect")
    assert h.killed == []


def test_a_task_whose_queue_stops_moving_is_hung_after_the_window_and_ended() -> None:
    h = Harness([task(started_at=99.0)])
    h.kernel.sockets["c1"] = listening(queue=2)
    assert h.verdicts() == {"c1": "suspect"}
    h.now += 1.5
    assert h.verdicts() == {"c1": "suspect"}  # within the 2 s hang window
    h.now += 1.0
    assert h.verdicts() == {"c1": "hung"}
    assert h.closed == [(9000, 77)] and h.killed == ["c1"]  # listeners closed, then killed
    h.now += 0.5
    assert h.verdicts() == {}  # ended: never judged (or killed) again
    assert h.killed == ["c1"]


def test_a_task_that_never_listens_is_ended_after_its_start_timeout() -> None:
    h = Harness([task(started_at=100.0)])
    assert h.verdicts() == {"c1": "starting"}
    h.now += SPEC.health.start_timeout + 1
    assert h.verdicts() == {"c1": "never-listened"}
    assert h.killed == ["c1"] and h.closed == []


def test_a_task_that_listened_and_closed_its_listener_is_stopping_and_left_alone() -> None:
    # Swarm's SIGTERM (a rollout, a scale-down): the app closes its listener and finishes
    # its in-flight requests. Killing it now would reset them.
    h = Harness([task(started_at=0.0)])
    h.kernel.sockets["c1"] = listening()
    assert h.verdicts() == {"c1": "ready"}
    del h.kernel.sockets["c1"]
    h.now += SPEC.health.start_timeout + 1
    assert h.verdicts() == {"c1": "closed"}
    assert h.killed == [] and h.closed == []


def test_a_task_found_not_listening_is_watched_a_whole_start_timeout_before_it_is_ended() -> None:
    # This agent started after the task (it may have listened before, and be stopping now).
    h = Harness([task(started_at=0.0)])
    assert h.verdicts() == {"c1": "starting"}
    h.now += SPEC.health.start_timeout + 1
    assert h.verdicts() == {"c1": "never-listened"} and h.killed == ["c1"]


def test_findings_go_out_on_a_change_or_a_heartbeat() -> None:
    h = Harness([task(started_at=99.0)])
    h.kernel.sockets["c1"] = listening()
    h.verdicts()
    h.now += 1
    h.verdicts()  # unchanged, within the heartbeat: nothing written
    assert len(h.lines) == 1
    h.now += agent.HEARTBEAT_S
    h.verdicts()
    assert len(h.lines) == 2
    del h.kernel.sockets["c1"]
    h.now += 0.5
    h.verdicts()  # stopped listening: a change, written at once
    assert len(h.lines) == 3 and h.lines[-1]["tasks"][0]["listening"] is False
    assert h.lines[-1]["node_id"] == "n1" and h.lines[-1][agent.MARK] == 1


def test_the_latest_line_per_node_wins_and_other_output_is_ignored() -> None:
    line = {agent.MARK: 1, "node_id": "n1", "at": 5.0, "tasks": []}
    lines = [
        "starting agent",
        json.dumps({**line, "at": 4.0}),
        json.dumps(line),
        json.dumps({**line, "node_id": "n2", "at": 1.0}),
        "{not json " + agent.MARK,
    ]
    found = parse_findings(lines)
    assert found["n1"]["at"] == 5.0 and found["n2"]["at"] == 1.0


def test_a_task_is_read_from_its_containers_labels_and_state() -> None:
    watch_json = Watch.of(SPEC).to_json()
    data = {
        "Id": "c" * 64,
        "Config": {
            "Labels": {
                **labels.swarm_task_labels("shop", "h", watch_json),
                "com.docker.swarm.task.id": "tid",
                "com.docker.swarm.task.name": "shop.3.tid",
            }
        },
        "State": {"Running": True, "Pid": 31337, "StartedAt": "2026-12-03T04:00:00.123456789Z"},
    }
    found = task_from_inspect(data)
    assert found is not None
    assert (found.slot, found.pid, found.task_id) == (3, 31337, "tid")
    assert found.watch == Watch("shop", 9000, 2.0, SPEC.health.start_timeout, balance=SPEC.balance)
    assert abs(found.started_at - 1796270400.123) < 0.01
    assert task_from_inspect({**data, "State": {"Running": False}}) is None
    other = {**data, "Config": {"Labels": {labels.ROLE: labels.ROLE_REPLICA}}}
    assert task_from_inspect(other) is None


def test_a_foreign_listener_on_the_port_is_reported_and_looked_up_once() -> None:
    h = Harness([task(started_at=99.0)])
    h.kernel.sockets["c1"] = listening()
    h.verdicts()
    stranger = ForeignListener(555, "0.0.0.0:9000", 0, 4321, "python3", None)
    h.kernel.foreign = (stranger,)
    h.now += 0.5
    h.verdicts()  # a change: written at once
    assert h.lines[-1]["foreign"] == {
        "9000": [{"inode": 555, "uid": 0, "pid": 4321, "describe": stranger.describe()}]
    }
    h.now += 0.5
    h.verdicts()
    assert h.kernel.known[-1] == {555: stranger}  # its owner is not looked up again
    h.kernel.foreign = ()
    h.now += 0.5
    h.verdicts()
    assert h.lines[-1]["foreign"] == {}

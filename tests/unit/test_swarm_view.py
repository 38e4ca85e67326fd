"""When a Swarm-run service counts as ready: every current task runs the spec's template and
listens, proven by the kernel on this node, taken on Swarm's word elsewhere (unchecked)."""

from __future__ import annotations

from pathlib import Path

from reuseport.options import build_spec
from reuseport.swarm.engine import Node, Task
from reuseport.swarm.service import SwarmView, TaskRow

SPEC = build_spec(image="shop:1", name="shop", engine="swarm", replicas=3)
HASH = SPEC.redacted().spec_hash()
HERE = Node("n1", "box", "10.0.0.1", "ready", "active", "manager", True)
THERE = Node("n2", "other", "10.0.0.2", "ready", "active", "worker", False)


def task(slot: int, state: str = "running", spec_hash: str = HASH) -> Task:
    return Task(
        f"t{slot}",
        slot,
        "n1",
        state,
        "running",
        f"c{slot}",
        100 + slot,
        None,
        "",
        "",
        spec_hash,
        "shop:1",
    )


def row(slot: int, listening: bool | None, node: Node = HERE, **kw: str) -> TaskRow:
    return TaskRow(task(slot, **kw), node, listening)


def test_every_task_listening_here_is_converged() -> None:
    seen = SwarmView(SPEC, [row(1, True), row(2, True), row(3, True)])
    assert seen.ready == 3 and seen.converged(HASH)


def test_a_running_task_that_does_not_listen_is_not_ready() -> None:
    seen = SwarmView(SPEC, [row(1, True), row(2, False), row(3, True)])
    assert seen.ready == 2 and not seen.converged(HASH)


def test_tasks_on_other_nodes_count_once_their_agent_says_they_listen() -> None:
    seen = SwarmView(SPEC, [row(1, True), row(2, None, THERE), row(3, None, THERE)])
    assert (seen.listening, seen.unchecked, seen.ready) == (1, 2, 1)
    assert not seen.converged(HASH)  # not proven by any kernel yet
    seen = SwarmView(SPEC, [row(1, True), row(2, True, THERE), row(3, True, THERE)])
    assert seen.ready == 3 and seen.converged(HASH)


def test_an_old_template_or_a_starting_task_is_not_converged() -> None:
    assert not SwarmView(
        SPEC, [row(1, True), row(2, True), row(3, True, spec_hash="old")]
    ).converged(HASH)
    starting = SwarmView(SPEC, [row(1, True), row(2, True), row(3, None, THERE, state="starting")])
    assert starting.ready == 2 and not starting.converged(HASH)


def test_more_tasks_than_wanted_is_not_converged() -> None:
    seen = SwarmView(SPEC, [row(i, True) for i in (1, 2, 3, 4)])
    assert not seen.converged(HASH)


def test_an_unreadable_spec_file_is_not_taken_for_a_swarm_service(tmp_path: Path) -> None:
    # ps, top, scale and down ask first; the docker path then reports the file's problem.
    from reuseport.cli.swarm_commands import is_swarm
    from reuseport.store import StateStore

    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    assert is_swarm(store, "shop")
    (tmp_path / "shop.spec.json").write_text("{corrupt")
    assert not is_swarm(store, "shop")
    assert not is_swarm(store, "other")

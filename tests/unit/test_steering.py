"""Membership of the steering map, replayed against the in-memory engine and a fake map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from reuseport import judge, steering
from reuseport.errors import ReuseportError
from reuseport.judge import Verdict
from reuseport.kernel.attribution import PortObservation, ReplicaSockets
from reuseport.liveness import Stall
from reuseport.records import Records
from reuseport.spec import ServiceSpec
from reuseport.store import StateStore
from reuseport.supervisor import Supervisor
from tests.unit.fakes import FakeEngine, FakeSteerer, listening_probe, reconcile_for

pytestmark = pytest.mark.timeout(30)

SPEC = ServiceSpec(name="demo", image="demo:1", replicas=3, port=18080)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def make(  # noqa: ANN201
    engine: FakeEngine,
    tmp_path: Path,
    spec: ServiceSpec = SPEC,
    opener: Callable[[str], FakeSteerer] | None = None,
    **kwargs: object,
):
    """A supervisor over the fake engine whose steering opens FakeSteerers (or ``opener``)."""
    store = StateStore(tmp_path)
    store.save_spec(spec)
    steerers: list[FakeSteerer] = []

    def open_(policy: str) -> FakeSteerer:
        steerers.append(FakeSteerer(policy))
        return steerers[-1]

    messages: list[str] = []
    supervisor = Supervisor(
        spec,
        engine,
        store,
        clock=engine.clock,
        wall=engine.clock,
        sleep=engine.clock.advance,
        readiness=listening_probe(engine, **kwargs),  # type: ignore[arg-type]
        notify=messages.append,
        steering=opener or open_,
    )
    return supervisor, steerers, messages


def pids(engine: FakeEngine) -> set[int]:
    return {r.pid for r in engine.running() if r.pid}


def test_ready_replicas_are_the_map(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor, steerers, _ = make(engine, tmp_path)
    status = supervisor.bring_up(timeout_s=5)
    (steerer,) = steerers
    assert steerer.policy == "round-robin" and steerer.map == pids(engine)
    assert status.balance == "round-robin"
    assert all(r.member is True and r.out_why == "" for r in status.replicas)


def test_a_starting_replica_is_out_until_it_listens(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor, steerers, _ = make(engine, tmp_path, delay=1.0)
    supervisor.reconcile()  # creates them
    status = supervisor.reconcile()  # listed now; nothing listens yet
    assert steerers[0].map == set()
    assert {r.out_why for r in status.replicas if r.container_id} == {"starting"}
    reconcile_for(supervisor, engine, 1.5)
    assert steerers[0].map == pids(engine)


def test_a_suspect_replica_leaves_the_map_and_comes_back(
    engine: FakeEngine, tmp_path: Path
) -> None:
    queues: dict[str, int] = {}
    supervisor, steerers, _ = make(engine, tmp_path, queues=queues)
    supervisor.bring_up(timeout_s=5)
    stuck = next(r for r in engine.running() if r.index == 2)
    queues[stuck.id] = 3  # connections it does not take
    reconcile_for(supervisor, engine, judge.SUSPECT_AFTER_S * 2, step=0.05)
    assert stuck.pid not in steerers[0].map and len(steerers[0].map) == 2
    row = next(r for r in supervisor.status.replicas if r.container_id == stuck.id)
    assert row.member is False and row.out_why.startswith("suspect")
    assert not row.why  # suspect only: far from the hang window, not being replaced
    queues[stuck.id] = 0  # it accepts again
    reconcile_for(supervisor, engine, 0.2, step=0.05)
    assert steerers[0].map == pids(engine)


def test_a_draining_replica_leaves_the_map_before_it_is_stopped(
    engine: FakeEngine, tmp_path: Path
) -> None:
    supervisor, steerers, _ = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    steerer = steerers[0]
    steerer.log = engine.log = []  # type: ignore[attr-defined]
    surplus = next(r for r in engine.running() if r.index == 3)
    original_stop = engine.stop_replica

    def stop(container_id: str, timeout: float) -> None:
        steerer.log.append(f"stop {engine.containers[container_id].pid}")
        original_stop(container_id, timeout)

    engine.stop_replica = stop  # type: ignore[method-assign]
    supervisor.store.save_spec(SPEC.with_replicas(2))
    supervisor.follow_spec(force=True)
    supervisor.stale = True
    supervisor.reconcile()
    supervisor.finish_removals()
    assert steerer.log == [f"evict {surplus.pid}", f"stop {surplus.pid}"]


def test_unavailable_steering_falls_back_to_the_hash_saying_so_once(
    engine: FakeEngine, tmp_path: Path
) -> None:
    def refuse(policy: str) -> FakeSteerer:
        raise ReuseportError("bpf(2) refused: needs CAP_SYS_ADMIN (or CAP_BPF)")

    supervisor, _, messages = make(engine, tmp_path, opener=refuse)
    status = supervisor.bring_up(timeout_s=5)
    reconcile_for(supervisor, engine, 3.0)
    said = [m for m in messages if "not available here" in m]
    assert len(said) == 1 and "needs CAP_SYS_ADMIN" in said[0] and "kernel's hash" in said[0]
    assert status.balance == "hash" and "CAP_SYS_ADMIN" in status.balance_note
    assert all(r.member is None for r in supervisor.status.replicas)


def test_switching_to_hash_takes_steering_off(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor, steerers, _ = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    supervisor.store.save_spec(replace(SPEC, balance="hash"))
    supervisor.follow_spec(force=True)
    status = supervisor.reconcile()
    assert steerers[0].closed == "detached" and steerers[0].map == set()
    assert status.balance == "hash" and all(r.member is None for r in status.replicas)


def test_membership_is_decided_from_verdicts_records_and_holders() -> None:
    from reuseport.engine.base import Replica

    def replica(cid: str, index: int) -> Replica:
        return Replica(
            cid, f"demo.{index}", "demo", index, "running", 100 + index, "demo:1", "h", "{}", 0, 0.0
        )

    listed = [replica("a", 1), replica("b", 2), replica("c", 3), replica("d", 4)]
    records = Records()
    for r in listed:
        records.track(r.id, r.index, 0.0)
    records.get("b").draining = True  # type: ignore[union-attr]
    records.get("c").stall = Stall(since=9.0, queue=2, connections=None)  # type: ignore[union-attr]
    ready = Verdict(judge.READY, True, True)
    verdicts = {"a": ready, "b": ready, "c": ready, "d": Verdict(judge.STARTING, False, False)}
    held = {
        cid: ReplicaSockets(100 + i, (i,), 0, 128, frozenset(), ((i, 100 + i),))
        for i, cid in enumerate("abc", start=1)
    }
    decided = steering.membership(listed, verdicts, records, PortObservation(18080, held), 10.0)
    assert decided.wanted == {1: 101}
    assert decided.out["a"] == "" and decided.out["b"] == "draining"
    assert decided.out["c"].startswith("suspect") and decided.out["d"] == "starting"

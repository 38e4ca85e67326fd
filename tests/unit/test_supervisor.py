"""The reconcile loop replayed against an in-memory engine and a fake clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reuseport.errors import EngineError, ReplicaFailed, ReusePortMissing
from reuseport.policies import BackoffPolicy, RolloutPolicy
from reuseport.spec import ServiceSpec
from reuseport.status import ServiceStatus
from reuseport.store import StateStore
from reuseport.supervisor import Supervisor
from tests.unit.fakes import FakeEngine, InlineExecutor, listening_probe, reconcile_for

pytestmark = pytest.mark.timeout(30)

SPEC = ServiceSpec(
    name="demo",
    image="demo:1",
    replicas=3,
    port=18080,
    backoff=BackoffPolicy(initial=0.5, maximum=4.0, reset_after=10.0),
)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def make(
    engine: FakeEngine, tmp_path: Path, spec: ServiceSpec = SPEC, delay: float = 0.0
) -> Supervisor:
    store = StateStore(tmp_path)
    store.save_spec(spec)
    messages: list[str] = []
    supervisor = Supervisor(
        spec,
        engine,
        store,
        clock=engine.clock,
        wall=engine.clock,
        sleep=engine.clock.advance,
        readiness=listening_probe(engine, delay),
        notify=messages.append,
    )
    supervisor.messages = messages  # type: ignore[attr-defined]
    return supervisor


def test_bring_up_creates_each_index_once(engine: FakeEngine, tmp_path: Path) -> None:
    snapshot = make(engine, tmp_path).bring_up(timeout_s=5)
    assert snapshot.ready == 3
    assert sorted(i for i, _ in engine.created) == [1, 2, 3]


def test_a_dead_replica_is_replaced_on_the_next_pass(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    victim = next(r for r in engine.running() if r.index == 2)
    engine.kill(victim.id)
    supervisor.stale = True  # what a "die" event does
    status = supervisor.reconcile()
    assert victim.id in engine.removed
    assert [i for i, _ in engine.created[3:]] == [2]
    assert len(engine.running()) == 3
    replacement = next(r for r in engine.running() if r.index == 2)
    assert replacement.restarts == 1
    assert status.ready == 2
    assert supervisor.reconcile().ready == 3  # the next pass lists it: it listens (delay 0)
    assert "replica 2 exited with code 137 (signal 9); replacing it now" in supervisor.messages  # type: ignore[attr-defined]


def test_a_crash_loop_is_backed_off_not_hot_looped(engine: FakeEngine, tmp_path: Path) -> None:
    spec = SPEC.with_replicas(1)
    supervisor = make(engine, tmp_path, spec)
    supervisor.bring_up(timeout_s=5)
    engine.crash_on_start = True
    engine.kill(engine.running()[0].id)
    for _ in range(400):  # 20 simulated seconds in 50 ms passes
        supervisor.stale = True
        supervisor.reconcile()
        engine.clock.advance(0.05)
    starts = [t for _, t in engine.created[1:]]
    gaps = [round(b - a, 2) for a, b in zip(starts, starts[1:], strict=False)]
    # immediate, then 0.5, 1, 2, 4, 4, ... (cap): never a hot loop
    # each gap also holds the 50 ms pass in which the death is first seen
    assert gaps[:4] == pytest.approx([0.55, 1.05, 2.05, 4.05], abs=0.06)
    assert all(g >= 3.9 for g in gaps[4:])
    assert len(starts) < 10


def test_bind_conflict_at_bring_up_says_so_reuseport_is_missing(
    engine: FakeEngine, tmp_path: Path
) -> None:
    supervisor = make(engine, tmp_path, delay=0.0)
    original = engine.create_replica

    def second_fails(
        spec: ServiceSpec, index: int, restarts: int, health_port: int | None = None
    ) -> str:
        cid = original(spec, index, restarts, health_port)
        if index > 1:
            engine.kill(cid, code=1)
            engine.log_lines[cid] = ["OSError: [Errno 98] Address already in use"]
        return cid

    engine.create_replica = second_fails  # type: ignore[method-assign]
    # Replica 1 must be seen listening before the others die.
    supervisor.reconcile()
    with pytest.raises(ReusePortMissing, match="must set SO_REUSEPORT"):
        supervisor.bring_up(timeout_s=5)


def test_other_early_death_fails_bring_up_with_the_last_log_line(
    engine: FakeEngine, tmp_path: Path
) -> None:
    engine.crash_on_start = True
    engine.crash_log = "ModuleNotFoundError: No module named 'flask'"
    with pytest.raises(ReplicaFailed, match="No module named 'flask'"):
        make(engine, tmp_path).bring_up(timeout_s=5)


def test_bring_up_times_out_when_nothing_listens(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor = make(engine, tmp_path, delay=1e9)
    with pytest.raises(ReplicaFailed, match="did not listen"):
        supervisor.bring_up(timeout_s=0.2)


def test_scale_is_read_from_the_store(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    supervisor.store.save_spec(SPEC.with_replicas(1))
    assert supervisor.follow_spec(force=True)  # whatever the mtime granularity
    supervisor.reconcile()
    supervisor.finish_removals()
    assert len(engine.stopped) == 2
    assert {r.index for r in engine.running()} == {1}


def test_removed_spec_ends_supervision(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor = make(engine, tmp_path)
    supervisor.store.forget("demo")
    assert supervisor.run() == "removed"
    assert engine.created == []


def test_periodic_resync_replaces_a_death_no_event_reported(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Events can be missed (stream reconnects, dockerd restarts): the resync still acts."""
    import threading
    import time

    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    supervisor = Supervisor(SPEC, engine, store, resync_s=0.05, readiness=listening_probe(engine))
    supervisor.bring_up(timeout_s=5)
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    try:
        victim = next(r for r in engine.running() if r.index == 3)
        engine.kill(victim.id)  # the fake engine's event stream is silent
        deadline = time.monotonic() + 10
        while len(engine.running()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(engine.running()) == 3 and victim.id in engine.removed
    finally:
        supervisor.stop()
        runner.join(timeout=5)
    assert not runner.is_alive()
    published = ServiceStatus.from_json(store.load_status("demo"))
    assert published is not None and published.indices[3].restarts == 1


def test_a_new_template_in_the_store_rolls_out_within_the_surge(
    engine: FakeEngine, tmp_path: Path
) -> None:
    supervisor = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    old_ids = {r.id for r in engine.running()}
    new_spec = replace(SPEC, image="demo:2")
    supervisor.store.save_spec(new_spec)
    assert supervisor.follow_spec(force=True)
    most = 0
    for _ in range(50):
        supervisor.stale = True
        supervisor.reconcile()
        supervisor.finish_removals()  # let graceful stops finish each pass
        most = max(most, len(engine.running()))
        engine.clock.advance(0.1)
    assert {r.image for r in engine.running()} == {"demo:2"}
    assert len(engine.running()) == 3 and not old_ids & {r.id for r in engine.running()}
    assert most <= 3 + SPEC.rollout.max_surge


# -- liveness: hung replicas are replaced before they are stopped ----------------------------


def _hang_supervisor(engine: FakeEngine, tmp_path: Path, sockets: dict) -> Supervisor:
    """A supervisor whose kernel view comes from ``sockets``: id -> (queue, connections)."""
    from reuseport.kernel.attribution import PortObservation, ReplicaSockets

    def observe(port: int, replicas: list, **_: object) -> PortObservation:
        found = {}
        for r in replicas:
            if r.running and r.id in engine.containers:
                queue, conns = sockets.get(r.id, (0, frozenset()))
                found[r.id] = ReplicaSockets(r.pid, (r.pid,), queue, 128, conns)
        return PortObservation(port, found, (), True)

    supervisor = make(engine, tmp_path)
    supervisor.readiness = observe
    supervisor.evicted = []  # type: ignore[attr-defined]
    supervisor.evict = lambda port, inode: supervisor.evicted.append(inode) or True  # type: ignore[attr-defined]
    return supervisor


def test_a_hung_replica_is_replaced_before_it_is_stopped(
    engine: FakeEngine, tmp_path: Path
) -> None:
    sockets: dict = {}
    supervisor = _hang_supervisor(engine, tmp_path, sockets)
    supervisor.bring_up(timeout_s=5)
    hung = next(r for r in engine.running() if r.index == 1)
    sockets[hung.id] = (7, frozenset())  # connections wait; it never takes one
    reconcile_for(supervisor, engine, 4.0)
    assert len(engine.created) == 3  # not yet: the window is 5 s
    reconcile_for(supervisor, engine, 3.0)
    assert len(engine.created) == 4
    # its successor listens, so it is drained: its listener closed first
    assert supervisor.evicted == [hung.pid]  # type: ignore[attr-defined]
    supervisor.finish_removals()
    assert hung.id in engine.stopped
    assert supervisor.replacements["hung"] == 1
    assert supervisor.book.slot(1).restarts == 1
    assert any("hung" in m for m in supervisor.messages)  # type: ignore[attr-defined]


def test_a_slow_replica_that_still_accepts_is_not_hung(engine: FakeEngine, tmp_path: Path) -> None:
    sockets: dict = {}
    supervisor = _hang_supervisor(engine, tmp_path, sockets)
    supervisor.bring_up(timeout_s=5)
    busy = next(r for r in engine.running() if r.index == 2)
    for second in range(30):  # a deep queue that never drains, but new connections taken
        sockets[busy.id] = (50, frozenset({second, second + 1}))
        reconcile_for(supervisor, engine, 1.0)
    assert len(engine.created) == 3
    assert not supervisor.replacements


def test_a_failing_health_check_replaces_the_replica(engine: FakeEngine, tmp_path: Path) -> None:

    from reuseport.policies import HealthPolicy

    spec = replace(SPEC, health=HealthPolicy(cmd="check", interval=1.0, retries=2))
    supervisor = make(engine, tmp_path, spec)
    assert supervisor.health is not None
    supervisor.health.executor = InlineExecutor()  # type: ignore[assignment]
    supervisor.bring_up(timeout_s=5)
    sick = next(r for r in engine.running() if r.index == 3)
    engine.exec_codes[sick.id] = 1
    reconcile_for(supervisor, engine, 3.0)
    assert supervisor.replacements["unhealthy"] == 1
    assert len(engine.created) == 4
    supervisor.finish_removals()
    assert sick.id in engine.stopped  # gracefully: it still served


def test_a_replica_that_never_passes_its_check_waits_out_its_start_timeout(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Its failed checks do not count until --start-timeout (it may be starting slowly):
    meanwhile ps says how they fail; then it is replaced as unhealthy."""
    from reuseport.policies import HealthPolicy

    health = HealthPolicy(cmd="check", interval=0.5, timeout=0.5, retries=2, start_timeout=5)
    supervisor = make(engine, tmp_path, replace(SPEC, replicas=1, health=health))
    assert supervisor.health is not None
    supervisor.health.executor = InlineExecutor()  # type: ignore[assignment]
    engine.exec_codes[f"{1:064x}"] = 1  # the first replica's check always fails
    with pytest.raises(ReplicaFailed, match="replica 1's check: health command exited with code 1"):
        supervisor.bring_up(timeout_s=3)
    (row,) = supervisor.status.replicas
    assert (row.verdict, row.check_error) == (
        "awaiting-health",
        "health command exited with code 1",
    )
    assert not supervisor.replacements and len(engine.created) == 1
    reconcile_for(supervisor, engine, 3.0)  # past 5 s since it started
    assert supervisor.replacements == {"unhealthy": 1} and len(engine.created) == 2


def test_an_unhealthy_replica_that_also_stopped_accepting_has_its_listener_closed(
    engine: FakeEngine, tmp_path: Path
) -> None:
    from reuseport.policies import HealthPolicy

    sockets: dict = {}
    spec = replace(
        SPEC, health=HealthPolicy(cmd="check", interval=0.5, timeout=0.5, retries=2, hang_window=60)
    )
    supervisor = _hang_supervisor(engine, tmp_path, sockets)
    supervisor.store.save_spec(spec)
    supervisor.follow_spec(force=True)  # as the loop does when the stored spec changes
    assert supervisor.health is not None
    supervisor.health.executor = InlineExecutor()  # type: ignore[assignment]
    supervisor.bring_up(timeout_s=5)
    stopped = next(r for r in engine.running() if r.index == 3)
    sockets[stopped.id] = (4, frozenset())  # its queue holds connections it does not take
    engine.exec_codes[stopped.id] = 1  # and its check fails
    reconcile_for(supervisor, engine, 4.0)
    assert supervisor.replacements == {"unhealthy": 1}  # the 60 s hang window is far off
    assert supervisor.evicted == [stopped.pid]  # type: ignore[attr-defined]


def test_a_paused_replica_is_unpaused_not_replaced(engine: FakeEngine, tmp_path: Path) -> None:
    supervisor = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    paused = next(r for r in engine.running() if r.index == 2)
    engine.pause(paused.id)
    reconcile_for(supervisor, engine, 1.0)
    assert engine.unpaused == [paused.id]
    assert paused.id not in engine.removed and len(engine.created) == 3
    assert supervisor.reconcile().ready == 3


def test_a_replica_that_never_listens_is_replaced_under_backoff(
    engine: FakeEngine, tmp_path: Path
) -> None:
    spec = replace(SPEC.with_replicas(1), health=replace(SPEC.health, start_timeout=5.0))
    supervisor = make(engine, tmp_path, spec, delay=3600.0)  # nothing ever listens
    reconcile_for(supervisor, engine, 4.5, step=0.5)
    assert len(engine.created) == 1  # within its start timeout: left to start
    reconcile_for(supervisor, engine, 60.0, step=0.05)
    starts = [t for _, t in engine.created]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # Each successor gets its own start timeout, then waits out a growing backoff: no
    # hot loop, and the never-listening ones are drained, not piled up.
    assert 3 <= len(starts) <= 10, starts
    assert all(gap >= 5.0 for gap in gaps), gaps
    assert gaps[-1] > gaps[0]
    assert supervisor.replacements["never-listened"] == len(starts) - 1
    supervisor.finish_removals()  # graceful stops run on threads, outside the fake clock
    assert len(engine.running()) <= 2


def test_an_unreadable_spec_keeps_the_service_running_and_says_why(
    engine: FakeEngine, tmp_path: Path
) -> None:
    supervisor = make(engine, tmp_path)
    supervisor.bring_up(timeout_s=5)
    spec_file = next(tmp_path.glob("demo.spec.json"))
    spec_file.write_text('{"name": "demo", "imag')  # truncated by a full disk, say
    import os

    os.utime(spec_file, (2e9, 2e9))  # a new mtime: the loop reads it again
    assert supervisor.follow_spec() is True  # still supervising
    status = supervisor.reconcile()
    assert status.ready == 3 and "unreadable" in status.problem
    assert any(m.startswith("PROBLEM: ") for m in supervisor.messages)  # type: ignore[attr-defined]
    supervisor.store.save_spec(SPEC.with_replicas(2))  # fixed: followed again
    assert supervisor.follow_spec(force=True) and supervisor.spec.replicas == 2
    assert supervisor.reconcile().problem == ""


# -- creations of one pass run at once ------------------------------------------------------


def test_successors_created_in_one_pass_get_distinct_health_ports(
    engine: FakeEngine, tmp_path: Path
) -> None:
    spec = replace(
        SPEC,
        replicas=4,
        health=replace(SPEC.health, port_base=19000),
        rollout=RolloutPolicy(max_surge=3),
    )
    supervisor = make(engine, tmp_path, spec)
    assert supervisor.health is not None
    supervisor.health.executor = InlineExecutor()  # type: ignore[assignment]
    supervisor.health.check = lambda replica: None  # every GET /healthz answers 200
    supervisor.bring_up(timeout_s=5)
    assert sorted(r.health_port for r in engine.running()) == [19001, 19002, 19003, 19004]
    supervisor.store.save_spec(replace(spec, image="demo:2"))
    assert supervisor.follow_spec(force=True)
    supervisor.stale = True
    supervisor.reconcile()  # three successors at once, beside the four running replicas
    ports = [r.health_port for r in engine.running()]
    assert len(engine.running()) == 7
    assert len(set(ports)) == 7 and set(ports) - {19001, 19002, 19003, 19004} == {
        19005,
        19006,
        19007,
    }


def test_one_failed_creation_of_a_batch_is_backed_off_alone(
    engine: FakeEngine, tmp_path: Path
) -> None:
    original = engine.create_replica

    def create(spec: ServiceSpec, index: int, restarts: int, health_port: int | None = None) -> str:
        if index == 2:
            raise EngineError("cannot create replica 2: no space left on device")
        return original(spec, index, restarts, health_port)

    engine.create_replica = create  # type: ignore[method-assign]
    supervisor = make(engine, tmp_path)
    supervisor.reconcile()
    assert sorted(r.index for r in engine.running()) == [1, 3]
    assert any("no space left" in m for m in supervisor.messages)  # type: ignore[attr-defined]
    supervisor.stale = True
    supervisor.reconcile()  # inside the backoff: no second attempt yet
    assert sorted(i for i, _ in engine.created) == [1, 3]
    engine.clock.advance(SPEC.backoff.initial * 2)
    engine.create_replica = original  # type: ignore[method-assign]
    supervisor.stale = True
    supervisor.reconcile()
    assert sorted(r.index for r in engine.running()) == [1, 2, 3]


def test_steered_with_traffic_only_listeners_are_read_until_one_holds_a_queue(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Between passes a steered supervisor reads only the port's listeners (every
    STEER_POLL_S): a queue (a replica that may have stopped accepting) or a listener come or
    gone ends the wait at once; otherwise the pass waits for its resync time."""
    supervisor = make(engine, tmp_path)
    idle = {1: ("0.0.0.0:18080", "ipv4", 0, 0), 2: ("0.0.0.0:18080", "ipv4", 0, 0)}
    queued = {**idle, 2: ("0.0.0.0:18080", "ipv4", 0, 3)}
    joined = {**idle, 3: ("0.0.0.0:18080", "ipv4", 0, 0)}

    def run(tables: list[dict], seconds: float) -> int:
        script = iter(tables)
        reads: list[int] = []

        def read(port: int) -> dict:
            reads.append(port)
            return next(script)

        def sleep(step: float) -> bool:
            engine.clock.advance(step)
            return False  # no event

        supervisor.read_listeners = read
        supervisor._sleep = sleep  # type: ignore[method-assign]
        supervisor._sleep_watching_queues(seconds)
        return len(reads)

    assert run([idle, idle, idle, queued], 10.0) == 4  # the queue: a pass now
    assert run([idle, idle, joined], 10.0) == 3  # a new listener: a pass now
    assert run([idle] * 100, 1.05) == 5  # nothing: reads every 0.2 s until the pass is due

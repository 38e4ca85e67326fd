"""/metrics of a supervisor replayed against the in-memory engine, parsed with
prometheus_client's own parser and checked against what `ps --json` prints."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reuseport import metrics, render, service
from reuseport.engine.base import Replica
from reuseport.errors import PortConflict
from reuseport.kernel.attribution import ForeignListener, PortObservation, ReplicaSockets
from reuseport.policies import BackoffPolicy, HealthPolicy
from reuseport.spec import ServiceSpec
from reuseport.store import StateStore
from reuseport.supervisor import Supervisor
from tests.unit.fakes import FakeEngine, InlineExecutor, reconcile_for

pytestmark = pytest.mark.timeout(30)

SPEC = ServiceSpec(
    name="demo",
    image="demo:1",
    replicas=3,
    port=18080,
    backoff=BackoffPolicy(initial=0.5, maximum=4.0, reset_after=10.0),
)
STRANGER = ForeignListener(
    inode=999, address="0.0.0.0:18080", uid=1000, pid=4242, program="nc", container_id=None
)


@dataclass
class Kernel:
    """The port as the fake kernel shows it: per container (queue, connections), and
    listeners no replica holds."""

    engine: FakeEngine
    sockets: dict[str, tuple[int, frozenset[int]]] = field(default_factory=dict)
    foreign: tuple[ForeignListener, ...] = ()

    def observe(self, port: int, replicas: list[Replica], **_: object) -> PortObservation:
        found = {}
        for r in replicas:
            if r.running and r.id in self.engine.containers:
                queue, conns = self.sockets.get(r.id, (0, frozenset()))
                found[r.id] = ReplicaSockets(r.pid, (r.pid,), queue, 128, conns)
        return PortObservation(port, found, self.foreign, True)


Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Scrape:
    """sample name + sorted labels -> value, from the text format, read by its own parser."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"service": "demo", **labels}.items())))]


def series(samples: Scrape, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample, labels in samples if sample == name]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def kernel(engine: FakeEngine) -> Kernel:
    return Kernel(engine)


def make(
    engine: FakeEngine, kernel: Kernel, tmp_path: Path, spec: ServiceSpec = SPEC
) -> Supervisor:
    store = StateStore(tmp_path)
    store.save_spec(spec)
    return Supervisor(
        spec,
        engine,
        store,
        clock=engine.clock,
        wall=engine.clock,
        sleep=engine.clock.advance,
        readiness=kernel.observe,
    )


@pytest.fixture
def registry(engine: FakeEngine, kernel: Kernel, tmp_path: Path) -> Iterator[CollectorRegistry]:
    supervisor = make(engine, kernel, tmp_path)
    registry, detach = metrics.registry_for(supervisor)
    registry.supervisor = supervisor  # type: ignore[attr-defined]
    yield registry
    detach()


def ps_json(
    supervisor: Supervisor, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """What `reuseport ps NAME --json` prints while the supervisor is live: the status it
    published to the status file."""
    supervisor.publish_now(supervisor.status)
    status = service.published_status(supervisor.store, supervisor.spec.name)
    assert status is not None
    return json.loads(render.statuses_json([status], supervisor.wall()))


def test_scrape_matches_ps_json_after_a_death_and_a_foreign_listener(
    engine: FakeEngine,
    kernel: Kernel,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    supervisor: Supervisor = registry.supervisor  # type: ignore[attr-defined]
    supervisor.bring_up(timeout_s=5)
    victim = next(r for r in engine.running() if r.index == 2)
    engine.kill(victim.id)
    reconcile_for(supervisor, engine, 1.0)
    by_index = {r.index: r for r in engine.running()}
    kernel.sockets[by_index[1].id] = (3, frozenset({1, 2, 3, 4}))
    kernel.sockets[by_index[3].id] = (0, frozenset({5}))
    kernel.foreign = (STRANGER,)
    reconcile_for(supervisor, engine, 1.0)  # one resync: the foreign listener is seen

    samples = scrape(registry)
    rows = ps_json(supervisor, kernel, monkeypatch)

    replicas = [row for row in rows if row["state"] == "running"]
    foreign = [row for row in rows if row["state"] == "foreign"]
    assert len(replicas) == 3 and len(foreign) == 1
    assert value(samples, "reuseport_replicas_desired") == rows[0]["desired"] == 3
    assert value(samples, "reuseport_replicas_ready") == rows[0]["ready_replicas"] == 3
    assert value(samples, "reuseport_replicas_running") == 3
    assert value(samples, "reuseport_replicas_listening") == 3
    assert value(samples, "reuseport_replacements_total", reason="exited") == 1
    assert rows[0]["replacements"] == {"exited": 1}
    for reason in ("oom", "removed", "bind-conflict", "hung", "unhealthy", "create-failed"):
        assert value(samples, "reuseport_replacements_total", reason=reason) == 0
    for row in replicas:
        per_index = {"replica": str(row["replica"])}
        per_container = {**per_index, "container": row["container_id"]}
        assert value(samples, "reuseport_replica_restarts_total", **per_index) == row["restarts"]
        assert value(samples, "reuseport_replica_listening", **per_container) == 1
        assert value(samples, "reuseport_replica_ready", **per_container) == 1
        assert (
            value(samples, "reuseport_replica_connections", **per_container) == row["connections"]
        )
        assert (
            value(samples, "reuseport_replica_accept_queue", **per_container) == row["accept_queue"]
        )
        assert value(samples, "reuseport_replica_backlog", **per_container) == row["backlog"]
        assert value(samples, "reuseport_backoff_retry_seconds", **per_index) == 0
    assert {row["replica"]: row["restarts"] for row in replicas} == {1: 0, 2: 1, 3: 0}
    assert [row["connections"] for row in replicas] == [4, 0, 1]
    assert [row["accept_queue"] for row in replicas] == [3, 0, 0]
    # The first death is replaced at once: one failure, no wait.
    assert value(samples, "reuseport_backoff_failures", replica="2") == 1

    assert value(samples, "reuseport_foreign_listeners") == rows[0]["foreign_listeners"] == 1
    assert series(samples, "reuseport_foreign_listener_info") == [
        {
            "service": "demo",
            "inode": "999",
            "pid": str(foreign[0]["pid"]),
            "program": foreign[0]["program"],
            "uid": str(foreign[0]["uid"]),
            "address": foreign[0]["address"],
            "container": "",
        }
    ]
    assert series(samples, "reuseport_replica_failing") == []
    assert value(samples, "reuseport_health_check_failures_total") == 0
    info = series(samples, "reuseport_service_info")
    assert info == [{"service": "demo", "port": "18080", "image": "demo:1", "mode": "foreground"}]


def test_the_foreign_listener_leaves_the_metrics_when_it_closes(
    engine: FakeEngine, kernel: Kernel, registry: CollectorRegistry
) -> None:
    supervisor: Supervisor = registry.supervisor  # type: ignore[attr-defined]
    kernel.foreign = (STRANGER,)
    supervisor.bring_up(timeout_s=5)
    assert value(scrape(registry), "reuseport_foreign_listeners") == 1
    kernel.foreign = ()
    reconcile_for(supervisor, engine, 1.0)
    samples = scrape(registry)
    assert value(samples, "reuseport_foreign_listeners") == 0
    assert series(samples, "reuseport_foreign_listener_info") == []


def test_a_crash_loop_shows_its_backoff(engine: FakeEngine, kernel: Kernel, tmp_path: Path) -> None:
    supervisor = make(engine, kernel, tmp_path, SPEC.with_replicas(1))
    registry, detach = metrics.registry_for(supervisor)
    supervisor.bring_up(timeout_s=5)
    engine.crash_on_start = True
    engine.kill(engine.running()[0].id)
    slot = supervisor.book.slot(1)
    while slot.failures < 3:  # replaced at once, then after 0.5 s: now it waits 1 s
        engine.clock.advance(0.05)
        supervisor.stale = True
        supervisor.reconcile()
    engine.clock.advance(0.25)
    samples = scrape(registry)
    detach()
    assert slot.failures == 3
    assert value(samples, "reuseport_backoff_failures", replica="1") == 3
    retry = value(samples, "reuseport_backoff_retry_seconds", replica="1")
    assert retry == pytest.approx(slot.retry_at - engine.clock()) == 0.75
    assert value(samples, "reuseport_replica_restarts_total", replica="1") == slot.restarts == 3
    assert value(samples, "reuseport_replicas_ready") == 0
    assert value(samples, "reuseport_replicas_running") == 0
    assert value(samples, "reuseport_replacements_total", reason="exited") == 3


def test_a_hung_replica_is_flagged_failing_and_not_ready(
    engine: FakeEngine, kernel: Kernel, registry: CollectorRegistry
) -> None:
    supervisor: Supervisor = registry.supervisor  # type: ignore[attr-defined]
    supervisor.bring_up(timeout_s=5)
    supervisor.evict = lambda port, inode: True
    hung = next(r for r in engine.running() if r.index == 1)
    kernel.sockets[hung.id] = (7, frozenset())  # connections wait; it never takes one
    # Long enough to be judged hung (5 s window), too short for its successor to be
    # created and the hung one drained in the same pass: stop at the first verdict.
    for _ in range(40):
        reconcile_for(supervisor, engine, 0.5)
        if any(r.container_id == hung.id and r.why for r in supervisor.status.replicas):
            break
    samples = scrape(registry)
    labels = {"replica": "1", "container": hung.short_id}
    assert value(samples, "reuseport_replica_failing", **labels, reason="hung") == 1
    assert value(samples, "reuseport_replica_ready", **labels) == 0
    assert value(samples, "reuseport_replica_listening", **labels) == 1
    assert value(samples, "reuseport_replica_accept_queue", **labels) == 7
    assert value(samples, "reuseport_replacements_total", reason="hung") == 1
    # Its successor is counted once it listens; the hung one never is.
    ready = [r for r in supervisor.status.replicas if r.ready]
    assert value(samples, "reuseport_replicas_ready") == len(ready)
    assert hung.id not in {r.container_id for r in ready}


def test_health_check_failures_and_latency(
    engine: FakeEngine, kernel: Kernel, tmp_path: Path
) -> None:
    spec = replace(SPEC, health=HealthPolicy(cmd="check", interval=1.0, retries=3))
    supervisor = make(engine, kernel, tmp_path, spec)
    assert supervisor.health is not None
    supervisor.health.executor = InlineExecutor()  # type: ignore[assignment]
    registry, detach = metrics.registry_for(supervisor)
    supervisor.bring_up(timeout_s=5)
    sick = next(r for r in engine.running() if r.index == 3)
    engine.exec_codes[sick.id] = 1
    reconcile_for(supervisor, engine, 2.5)  # two more rounds of checks: the sick one fails twice
    samples = scrape(registry)
    detach()

    health = supervisor.health
    assert health.failed_total == 2
    assert value(samples, "reuseport_health_check_failures_total") == 2
    assert value(samples, "reuseport_health_check_seconds_count", result="fail") == 2
    passed = value(samples, "reuseport_health_check_seconds_count", result="pass")
    assert passed == 3 + 2 * 2  # bring-up, then two rounds of the two healthy ones
    # the fake clock does not move during an inline check
    assert value(samples, "reuseport_health_check_seconds_sum", result="pass") == 0
    assert value(samples, "reuseport_health_check_seconds_bucket", result="pass", le="0.001") == (
        passed
    )
    labels = {"replica": "3", "container": sick.short_id}
    assert value(samples, "reuseport_replica_health_failures", **labels) == 2
    assert value(samples, "reuseport_replica_health_latency_seconds", **labels) == 0
    assert value(samples, "reuseport_replicas_ready") == 3  # 2 < --health-retries


def test_start_serves_metrics_over_http_and_stops(
    engine: FakeEngine, kernel: Kernel, tmp_path: Path
) -> None:
    supervisor = make(engine, kernel, tmp_path)
    supervisor.bring_up(timeout_s=5)
    port = free_port()
    stop = metrics.start(supervisor, port)
    try:
        assert len(supervisor.health_observers) == 1
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        assert families["reuseport_replicas_ready"].samples[0].value == 3
        assert families["reuseport_replacements"].type == "counter"
        assert families["reuseport_health_check_seconds"].type == "histogram"
        # a private registry: none of the default process/platform collectors
        assert not [name for name in families if not name.startswith("reuseport_")]
    finally:
        stop()
    stop()  # idempotent
    assert supervisor.health_observers == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    # the port is free again: a restarted supervisor can bind it
    metrics.start(supervisor, port)()


def test_a_port_in_use_is_a_one_line_port_conflict(
    engine: FakeEngine, kernel: Kernel, tmp_path: Path
) -> None:
    supervisor = make(engine, kernel, tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortConflict) as raised:
            metrics.start(supervisor, port)
    message = str(raised.value)
    assert message == f"--metrics-port {port} on 127.0.0.1: Address already in use"
    assert "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert supervisor.health_observers == []  # nothing left attached


def test_an_address_not_of_this_host_is_a_port_conflict(
    engine: FakeEngine, kernel: Kernel, tmp_path: Path
) -> None:
    supervisor = make(engine, kernel, tmp_path)
    with pytest.raises(PortConflict, match="on 192.0.2.1: Cannot assign requested address"):
        metrics.start(supervisor, free_port(), "192.0.2.1")  # TEST-NET-1, never local


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]

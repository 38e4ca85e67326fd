"""Prometheus metrics of a live supervisor, served on ``--metrics-port``.

Nothing is counted twice: every figure is read at scrape time from the status the
supervisor published after its last pass (the one `ps` reads) and its health checks, so
`/metrics` and `ps --json` show the same numbers. The one
exception is the health-check latency histogram, which needs every result rather than the
last one, so it is fed by a supervisor health observer.

The reconcile loop mutates that state from another thread while a scrape runs: each
attribute is read once into a local reference, and the mutable dicts are copied (a copy of
a plain dict happens in one step under the GIL, iterating a live one does not).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reuseport.apply import death_kind
from reuseport.errors import InvalidSpec, PortConflict
from reuseport.health import HealthState
from reuseport.status import ReplicaStatus, ServiceStatus
from reuseport.supervisor import Supervisor

# Every kind death_kind() and the supervisor produce, so each reason series exists (at 0)
# from the first scrape and rate()/increase() see its first replacement.
REPLACEMENT_REASONS = (
    "exited",
    "oom",
    "removed",
    "bind-conflict",
    "hung",
    "unhealthy",
    "create-failed",
    "never-listened",
)
# Health checks are HTTP GETs or `docker exec`s with a timeout of about a second: finer
# than the default buckets at the low end, and up to the longest sensible --health-timeout.
HEALTH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOIN_S = 5.0  # how long stopping waits for the server thread


class SupervisorCollector(Collector):
    """Builds every gauge and counter from the supervisor's state at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        # One read of each attribute the loop replaces (see the module doc): the status is
        # immutable, the health states are copied.
        status = sup.status
        health = sup.health
        health_states = dict(health.states) if health is not None else {}
        health_failed = health.failed_total if health is not None else 0
        now = sup.wall()
        service = status.name
        replicas = [r for r in status.replicas if r.container_id]

        yield _gauge(
            "reuseport_service_info",
            "The supervised service (value 1); labels say what it runs.",
            {"service": service, "port": str(status.port), "image": status.image, "mode": sup.mode},
            1,
        )
        yield _gauge(
            "reuseport_replicas_desired",
            "Replicas the service should run.",
            {"service": service},
            status.desired or 0,
        )
        yield _gauge(
            "reuseport_replicas_running",
            "Replica containers running (including ones being replaced).",
            {"service": service},
            status.running,
        )
        yield _gauge(
            "reuseport_replicas_listening",
            "Replicas the kernel shows listening on the service port.",
            {"service": service},
            sum(1 for r in replicas if r.listening),
        )
        yield _gauge(
            "reuseport_replicas_ready",
            "Replicas listening, past their health check if any, and not being replaced.",
            {"service": service},
            status.ready,
        )

        reasons = CounterMetricFamily(
            "reuseport_replacements",
            "Replicas replaced since the supervisor started, by why.",
            labels=("service", "reason"),
        )
        replacements = status.replacements
        for reason in sorted(set(REPLACEMENT_REASONS) | replacements.keys()):
            reasons.add_metric((service, reason), replacements.get(reason, 0))
        yield reasons

        yield from self._indices(service, status, now)
        yield from self._replicas(service, replicas, health_states)

        yield _counter(
            "reuseport_health_check_failures",
            "App-level health checks that failed (0 without --health-port-base/--health-cmd).",
            {"service": service},
            health_failed,
        )

        foreign = status.foreign
        yield _gauge(
            "reuseport_foreign_listeners",
            "Listening sockets on the service port that no replica holds (with SO_REUSEPORT "
            "and the same uid they take a share of the connections).",
            {"service": service},
            len(foreign),
        )
        yield _gauge(
            "reuseport_balance_info",
            "How new connections are spread now (value 1): round-robin or least-conn "
            "(eBPF steering over the ready replicas) or hash (the kernel's).",
            {"service": service, "policy": status.balance or "hash"},
            1,
        )
        info = GaugeMetricFamily(
            "reuseport_foreign_listener_info",
            "One foreign listener on the service port (value 1); pid and program are empty "
            "when its owner is not visible from here.",
            labels=("service", "inode", "pid", "program", "uid", "address", "container"),
        )
        for listener in foreign:
            info.add_metric(
                (
                    service,
                    str(listener.inode),  # keeps two sockets of one process apart
                    str(listener.pid) if listener.pid else "",
                    listener.program or "",
                    str(listener.uid),
                    listener.address,
                    (listener.container_id or "")[:12],
                ),
                1,
            )
        yield info

    def _indices(self, service: str, status: ServiceStatus, now: float) -> Iterator[Metric]:
        """Per replica index: what survives its containers (restarts, backoff)."""
        restarts = CounterMetricFamily(
            "reuseport_replica_restarts",
            "Replacements of this replica index since the service started (RESTARTS in `ps`).",
            labels=("service", "replica"),
        )
        failures = GaugeMetricFamily(
            "reuseport_backoff_failures",
            "Consecutive failures of this replica index (its backoff grows with them).",
            labels=("service", "replica"),
        )
        retry = GaugeMetricFamily(
            "reuseport_backoff_retry_seconds",
            "Seconds until this replica index is re-created (0 when it is not backing off).",
            labels=("service", "replica"),
        )
        for index in sorted(status.indices):
            slot = status.indices[index]
            labels = (service, str(index))
            restarts.add_metric(labels, slot.restarts)
            failures.add_metric(labels, slot.failures)
            retry.add_metric(labels, max(0.0, slot.retry_at - now) if slot.retry_at else 0.0)
        yield from (restarts, failures, retry)

    def _replicas(
        self,
        service: str,
        replicas: list[ReplicaStatus],
        health_states: dict[str, HealthState],
    ) -> Iterator[Metric]:
        """Per container: readiness, and its sockets on the port as `ps` shows them."""
        names = ("service", "replica", "container")
        listening_m = GaugeMetricFamily(
            "reuseport_replica_listening",
            "1 when the kernel shows this replica listening on the port.",
            labels=names,
        )
        ready_m = GaugeMetricFamily(
            "reuseport_replica_ready",
            "1 when this replica counts in reuseport_replicas_ready.",
            labels=names,
        )
        connections = GaugeMetricFamily(
            "reuseport_replica_connections",
            "Established connections this replica has accepted on the port.",
            labels=names,
        )
        accept_queue = GaugeMetricFamily(
            "reuseport_replica_accept_queue",
            "Connections waiting in this replica's accept queue(s).",
            labels=names,
        )
        backlog = GaugeMetricFamily(
            "reuseport_replica_backlog",
            "The most its accept queue(s) may hold.",
            labels=names,
        )
        failing_m = GaugeMetricFamily(
            "reuseport_replica_failing",
            "1 while this replica is being replaced although it still runs (hung, unhealthy).",
            labels=(*names, "reason"),
        )
        health_failures = GaugeMetricFamily(
            "reuseport_replica_health_failures",
            "Failed health checks in a row of this replica.",
            labels=names,
        )
        health_latency = GaugeMetricFamily(
            "reuseport_replica_health_latency_seconds",
            "How long this replica's last finished health check took.",
            labels=names,
        )
        member_m = GaugeMetricFamily(
            "reuseport_replica_steered",
            "1 while this replica is in the steering map (takes new connections), 0 while it "
            "is out; absent when the port is balanced by the kernel's hash.",
            labels=names,
        )
        # As in `ps`: socket figures only when the last read included connections, and only
        # for running replicas (an exited one holds nothing).
        for replica in sorted(replicas, key=lambda r: (r.index, r.container_id or "")):
            labels = (service, str(replica.index), replica.short_id or "")
            listening_m.add_metric(labels, 1 if replica.listening else 0)
            ready_m.add_metric(labels, 1 if replica.ready else 0)
            sockets = replica.sockets
            if sockets is not None:
                connections.add_metric(labels, sockets.connections)
                accept_queue.add_metric(labels, sockets.accept_queue)
                if sockets.backlog:
                    backlog.add_metric(labels, sockets.backlog)
            if replica.why:
                failing_m.add_metric((*labels, death_kind(replica.why)), 1)
            if replica.member is not None:
                member_m.add_metric(labels, 1 if replica.member else 0)
            state = health_states.get(replica.container_id or "")
            if state is not None:
                health_failures.add_metric(labels, state.failures)
                if state.latency_s is not None:
                    health_latency.add_metric(labels, state.latency_s)
        yield from (listening_m, ready_m, connections, accept_queue, backlog, failing_m)
        yield from (health_failures, health_latency, member_m)


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=tuple(labels))
    family.add_metric(tuple(labels.values()), value)
    return family


def _counter(name: str, doc: str, labels: dict[str, str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=tuple(labels))
    family.add_metric(tuple(labels.values()), value)
    return family


def registry_for(supervisor: Supervisor) -> tuple[CollectorRegistry, Callable[[], None]]:
    """A private registry holding the supervisor's metrics (never the global default one:
    two supervisors in one process, e.g. tests, must not collide), and a function that
    detaches it from the supervisor."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(supervisor))
    latency = Histogram(
        "reuseport_health_check_seconds",
        "How long app-level health checks took, by result (a timed-out check counts its timeout).",
        labelnames=("service", "result"),
        buckets=HEALTH_BUCKETS,
        registry=registry,
    )
    service = supervisor.spec.name
    children = {ok: latency.labels(service, "pass" if ok else "fail") for ok in (True, False)}

    def observe(seconds: float, ok: bool) -> None:
        children[ok].observe(seconds)

    supervisor.health_observers.append(observe)

    def detach() -> None:
        if observe in supervisor.health_observers:
            supervisor.health_observers.remove(observe)

    return registry, detach


def start(supervisor: Supervisor, port: int, addr: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the function that
    stops it. A port that cannot be bound raises PortConflict (InvalidSpec for an address
    that does not resolve), with a one-line message."""
    registry, detach = registry_for(supervisor)
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except socket.gaierror as exc:
        detach()
        raise InvalidSpec(f"--metrics-addr: cannot use address {addr!r}: {exc.strerror}") from None
    except OSError as exc:
        detach()
        # Same wording as the preflight check of `up`, which catches most of these earlier
        # (but not a port taken between that check and the supervisor starting).
        raise PortConflict(f"--metrics-port {port} on {addr}: {exc.strerror or exc}") from None

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        detach()
        server.shutdown()  # returns once serve_forever() has left its loop
        server.server_close()
        thread.join(JOIN_S)

    return stop

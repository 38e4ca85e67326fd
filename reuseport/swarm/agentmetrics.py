"""Prometheus metrics from a node agent: each Swarm service that sets ``metrics-port`` gets
``/metrics`` on ``metrics-addr:metrics-port`` (loopback unless the user asks) on every node
that runs a task of it, read at scrape time from the agent's last pass.

The names are the docker engine supervisor's (``reuseport.metrics``) with a ``node`` label,
so one dashboard covers both engines; ``replica`` is the task's slot.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reuseport.metrics import JOIN_S

if TYPE_CHECKING:
    from reuseport.swarm.agent import NodeAgent

ENDED_REASONS = ("hung", "never-listened")  # the agent's verdicts that end a task


class AgentCollector(Collector):
    """The metrics of the services one server serves, from the agent's last pass."""

    def __init__(self, agent: NodeAgent, node: str, services: Callable[[], set[str]]) -> None:
        self.agent = agent
        self.node = node
        self.services = services

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        # One read of each (the pass replaces them whole; see NodeAgent).
        findings, watches = agent.findings, agent.watches
        foreign, ended, balances = agent.foreign_counts, agent.ended, agent.balances
        for service in sorted(self.services()):
            mine = [f for f in findings if f.service == service]
            labels = {"service": service, "node": self.node}
            yield _gauge(
                "reuseport_replicas_running", "Tasks of it running here.", labels, len(mine)
            )
            yield _gauge(
                "reuseport_replicas_listening",
                "Tasks here the kernel shows listening on the port.",
                labels,
                sum(f.listening for f in mine),
            )
            yield _gauge(
                "reuseport_replicas_ready",
                "Tasks here the agent judges ready (listening, queue moving).",
                labels,
                sum(f.verdict == "ready" for f in mine),
            )
            watch = watches.get(service)
            yield _gauge(
                "reuseport_foreign_listeners",
                "Listeners on the port here that no task holds.",
                labels,
                foreign.get(watch.port, 0) if watch else 0,
            )
            yield _gauge(
                "reuseport_balance_info",
                "How new connections are spread on this node (value 1): round-robin or "
                "least-conn (eBPF steering over the ready tasks) or hash (the kernel's).",
                {**labels, "policy": balances.get(watch.port, "hash") if watch else "hash"},
                1,
            )
            replaced = CounterMetricFamily(
                "reuseport_replacements",
                "Tasks the agent ended here, by reason (Swarm started successors).",
                labels=["service", "node", "reason"],
            )
            for reason in ENDED_REASONS:
                replaced.add_metric([service, self.node, reason], ended.get((service, reason), 0))
            yield replaced
            yield from _per_task(service, self.node, mine)


def _per_task(service: str, node: str, findings: list[Any]) -> Iterator[Metric]:
    names = ["service", "node", "replica", "task"]
    families = {
        "listening": GaugeMetricFamily(
            "reuseport_replica_listening", "1 if the kernel shows it listening.", labels=names
        ),
        "connections": GaugeMetricFamily(
            "reuseport_replica_connections", "Established connections it holds.", labels=names
        ),
        "accept_queue": GaugeMetricFamily(
            "reuseport_replica_accept_queue",
            "Connections waiting in its accept queue.",
            labels=names,
        ),
        "backlog": GaugeMetricFamily(
            "reuseport_replica_backlog", "Its listen backlog.", labels=names
        ),
    }
    steered = GaugeMetricFamily(
        "reuseport_replica_steered",
        "1 while this task is in its node's steering map (takes new connections), 0 while "
        "it is out; absent when the node balances the port by the kernel's hash.",
        labels=names,
    )
    for finding in findings:
        values = [service, node, str(finding.slot), finding.task_id[:12]]
        for key, family in families.items():
            family.add_metric(values, float(getattr(finding, key)))
        if finding.steered:
            steered.add_metric(values, 1.0 if finding.steered == "in" else 0.0)
    yield from families.values()
    yield steered


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class MetricsServers:
    """One /metrics server per (address, port) the tasks on this node ask for; started and
    stopped as services come and go (``sync`` after every pass)."""

    def __init__(
        self,
        agent: NodeAgent,
        node: str,
        say: Callable[[str], None],
        serve: Callable[[int, str, CollectorRegistry], tuple[Any, Any]] | None = None,
    ) -> None:
        self.agent = agent
        self.node = node
        self.say = say
        self._serve = serve or _serve
        self._servers: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._services: dict[tuple[str, int], set[str]] = {}
        self._refused: set[tuple[str, int]] = set()

    def sync(self) -> None:
        wanted: dict[tuple[str, int], set[str]] = {}
        for service, watch in self.agent.watches.items():
            if watch.metrics_port is not None:
                wanted.setdefault((watch.metrics_addr, watch.metrics_port), set()).add(service)
        for where in set(self._servers) - set(wanted):
            self._stop(where)
        for where, services in wanted.items():
            self._services[where] = services
            if where not in self._servers and where not in self._refused:
                self._start(where)

    def _start(self, where: tuple[str, int]) -> None:
        addr, port = where
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            AgentCollector(self.agent, self.node, lambda: set(self._services.get(where, ())))
        )
        try:
            self._servers[where] = self._serve(port, addr, registry)
        except (OSError, socket.gaierror) as exc:
            self._refused.add(where)  # said once; a changed port is tried afresh
            self.say(f"metrics on {addr}:{port} refused: {exc}")

    def _stop(self, where: tuple[str, int]) -> None:
        server, thread = self._servers.pop(where)
        self._services.pop(where, None)
        server.shutdown()
        server.server_close()
        thread.join(JOIN_S)

    def stop_all(self) -> None:
        for where in list(self._servers):
            self._stop(where)


def _serve(port: int, addr: str, registry: CollectorRegistry) -> tuple[Any, Any]:
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return server, thread

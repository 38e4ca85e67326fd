"""A node agent's /metrics: the supervisor's metric names with a node label, read at scrape
time from the agent's last pass, one server per address and port the tasks ask for."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from reuseport.swarm.agent import TaskFinding
from reuseport.swarm.agentmetrics import AgentCollector, MetricsServers
from reuseport.swarm.watch import Watch


class FakeAgent:
    def __init__(self) -> None:
        self.findings = (
            TaskFinding("c1", "task1aaaaaaaaaa", "shop", 1, True, 0, 128, 3, "ready", "", "in"),
            TaskFinding(
                "c2", "task2bbbbbbbbbb", "shop", 2, True, 4, 128, 1, "hung", "hung: ...", "hung"
            ),
            TaskFinding("c3", "task3cccccccccc", "other", 1, False, 0, 0, 0, "starting"),
        )
        self.watches = {
            "shop": Watch("shop", 8080, 5.0, 60.0, 9100),
            "other": Watch("other", 8081, 5.0, 60.0),
        }
        self.foreign_counts = {8080: 1}
        self.balances = {8080: "round-robin"}
        self.ended: Counter[tuple[str, str]] = Counter({("shop", "hung"): 2})


def scrape(agent: Any, services: set[str]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, "node-a", lambda: services))
    return generate_latest(registry).decode()


def test_the_services_figures_carry_the_node_and_match_the_last_pass() -> None:
    text = scrape(FakeAgent(), {"shop"})
    assert 'reuseport_replicas_running{node="node-a",service="shop"} 2.0' in text
    assert 'reuseport_replicas_listening{node="node-a",service="shop"} 2.0' in text
    assert 'reuseport_replicas_ready{node="node-a",service="shop"} 1.0' in text
    assert 'reuseport_foreign_listeners{node="node-a",service="shop"} 1.0' in text
    assert 'reuseport_replacements_total{node="node-a",reason="hung",service="shop"} 2.0' in text
    assert (
        'reuseport_replica_accept_queue{node="node-a",replica="2",service="shop",'
        'task="task2bbbbbbb"} 4.0'
    ) in text
    assert 'reuseport_balance_info{node="node-a",policy="round-robin",service="shop"} 1.0' in text
    assert (
        'reuseport_replica_steered{node="node-a",replica="1",service="shop",'
        'task="task1aaaaaaa"} 1.0'
    ) in text
    assert (
        'reuseport_replica_steered{node="node-a",replica="2",service="shop",'
        'task="task2bbbbbbb"} 0.0'
    ) in text
    assert 'service="other"' not in text  # another server's, or none


class Served:
    """A fake server and thread: what was served, and whether it was stopped."""

    def __init__(self, log: list[str], where: str) -> None:
        self.log, self.where = log, where

    def shutdown(self) -> None:
        self.log.append(f"stop {self.where}")

    def server_close(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        pass


def test_servers_follow_the_ports_the_tasks_ask_for_and_a_refusal_is_said_once() -> None:
    agent = FakeAgent()
    log: list[str] = []
    said: list[str] = []

    def serve(port: int, addr: str, registry: CollectorRegistry) -> tuple[Served, Served]:
        if port == 9200:
            raise OSError(98, "Address already in use")
        log.append(f"serve {addr}:{port}")
        return Served(log, f"{addr}:{port}"), Served(log, "thread")

    servers = MetricsServers(agent, "node-a", said.append, serve)  # type: ignore[arg-type]
    servers.sync()
    servers.sync()
    assert log == ["serve 127.0.0.1:9100"]  # only "shop" sets a port, served once
    agent.watches = {"other": Watch("other", 8081, 5.0, 60.0, 9200)}
    servers.sync()
    servers.sync()
    assert log == ["serve 127.0.0.1:9100", "stop 127.0.0.1:9100"]
    assert len(said) == 1 and "9200" in said[0] and "in use" in said[0]

"""`doctor --engine swarm` over replayed clusters: what stops a Swarm service, with the fix."""

from __future__ import annotations

from reuseport.swarm.doctor import INIT_FIX, SwarmFacts, diagnose
from reuseport.swarm.engine import Node

N1 = Node("n1aaaaaaaaaaaa", "one", "10.0.0.1", "ready", "active", "manager", True)
N2 = Node("n2bbbbbbbbbbbb", "two", "10.0.0.2", "ready", "active", "worker", False)


def by_check(facts: SwarmFacts) -> dict[str, tuple[str, str]]:
    return {f.check: (f.status, f.detail + " | " + f.fix) for f in diagnose(facts)}


def test_an_engine_outside_a_swarm_fails_with_the_init_command() -> None:
    (finding,) = diagnose(SwarmFacts("inactive", False))
    assert finding.status == "fail" and finding.fix == INIT_FIX


def test_a_worker_is_told_to_use_a_manager() -> None:
    (finding,) = diagnose(SwarmFacts("active", False))
    assert finding.status == "fail" and "manager" in finding.fix


def test_a_healthy_cluster_with_reporting_agents_is_all_ok() -> None:
    facts = SwarmFacts("active", True, [N1, N2], True, {N1.id: {"at": 1}, N2.id: {"at": 1}})
    found = by_check(facts)
    assert {status for status, _ in found.values()} == {"ok"}
    assert "2 of 2 can run tasks" in found["nodes"][1]


def test_a_silent_agent_warns_and_names_its_node() -> None:
    found = by_check(SwarmFacts("active", True, [N1, N2], True, {N1.id: {"at": 1}}))
    assert found["node agents"][0] == "warn" and "two" in found["node agents"][1]


def test_an_agent_on_the_wrong_engine_fails() -> None:
    line = {"at": 1, "error": "the engine at unix:///x is node n1, not this one"}
    found = by_check(SwarmFacts("active", True, [N1, N2], True, {N1.id: {"at": 1}, N2.id: line}))
    assert found["node agents"][0] == "fail" and "not this one" in found["node agents"][1]


def test_no_usable_node_or_no_tool_image_fails() -> None:
    drained = Node(N1.id, "one", "", "ready", "drain", "manager", True)
    found = by_check(SwarmFacts("active", True, [drained], False, {}, tool_image=False))
    assert found["nodes"][0] == "fail" and "--availability active" in found["nodes"][1]
    assert found["tool image"][0] == "fail"
    assert found["node agents"][0] == "ok"  # not started yet: the first up starts them


def test_foreign_listeners_the_agents_see_are_a_warning_naming_node_and_port() -> None:
    line = {"at": 1, "foreign": {"8080": [{"describe": "pid 42 (python3), uid 0"}]}}
    found = by_check(SwarmFacts("active", True, [N1, N2], True, {N1.id: {"at": 1}, N2.id: line}))
    assert found["foreign listeners"][0] == "warn"
    assert "node n2bbbbbbbbbb :8080: pid 42 (python3)" in found["foreign listeners"][1]

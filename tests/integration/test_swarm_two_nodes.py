"""engine = swarm on a real two-node Swarm on this machine (loadtest/harness/twonode.py):
4 tasks at most 2 per node run 2 + 2 with each node's kernel holding 2 listeners; a foreign
listener on node 2 is reported by that node's agent; a killed
task on the second node is healed by Swarm and `ps` shows it; a SIGSTOPped task there is
found hung by that node's agent and replaced; a rollout under load on both nodes loses
no request; draining a node moves its tasks and the count is restored; and
`down` leaves no service, agent or container on either node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import docker
import pytest

from loadtest.harness.twonode import NETNS, NODE2_ADDR, TwoNodes, two_node_swarm
from reuseport import labels
from tests.integration.conftest import Service, wait_for
from tests.integration.load import Load

V1, V2, TOOL = "reuseport-demo:v1", "reuseport-demo:v2", "reuseport:latest"
AGENT = "reuseport-agent"
# A listener of the same uid with SO_REUSEPORT: it joins the group silently.
STRANGER = (
    "import socket, sys, time\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
    "s.listen()\n"
    "time.sleep(300)\n"
)


@pytest.fixture
def nodes(docker_client: docker.DockerClient) -> Iterator[TwoNodes]:
    with two_node_swarm(docker_client, [V1, V2, TOOL]) as made:
        yield made


def by_node(service: Service) -> dict[str, dict[int, dict[str, object]]]:
    """node id -> slot -> its ps row, of the tasks a kernel shows listening."""
    found: dict[str, dict[int, dict[str, object]]] = {}
    for row in service.ps():
        if row["listening"] is True:
            found.setdefault(str(row["node_id"]), {})[int(str(row["replica"]))] = row
    return found


def counts(service: Service) -> dict[str, int]:
    return {node: len(slots) for node, slots in by_node(service).items()}


def ours(client: docker.DockerClient, name: str) -> list[object]:
    return client.containers.list(
        ignore_removed=True, all=True, filters={"label": labels.filters(name)}
    )


@pytest.mark.timeout(900)
def test_two_nodes_spread_heal_isolate_roll_drain_and_go_down_clean(
    nodes: TwoNodes, service: Service, migrate_req: None
) -> None:
    up = service.cli(
        *service.up_args(
            "--engine",
            "swarm",
            "--max-per-node",
            "2",
            "--hang-window",
            "2",
            replicas=4,
            image=V1,
        ),
        timeout=240,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    # As the migrate_req fixture does on node 1 (each network namespace has its own): a
    # stop-first rollout's closing listener hands its queue to the others instead of
    # resetting it, also where node 2 runs on the kernel's hash.
    subprocess.run(
        ["ip", "netns", "exec", NETNS, "sysctl", "-qw", "net.ipv4.tcp_migrate_req=1"],
        check=True,
    )
    # 2 + 2, each proven listening by its own node's kernel: node 1's read by the CLI,
    # node 2's by its agent (through Swarm's logs); and the kernels agree.
    assert counts(service) == {nodes.node1_id: 2, nodes.node2_id: 2}
    assert all(row["verdict"] == "ready" for row in service.ps())
    # Each node's agent steers its own kernel's group (round-robin, the default).
    wait_for(
        lambda: [row["member"] for row in service.ps()] == [True] * 4,
        timeout=60,
        interval=0.5,
        what="every task in its own node's steering map",
    )
    assert service.ps()[0]["balance"] == "round-robin"
    assert len(nodes.listeners(service.port, 1)) == 2
    assert len(nodes.listeners(service.port, 2)) == 2

    # A stranger joins the port's group on node 2: that node's agent reports it, ps says so.
    stranger = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, sys.executable, "-c", STRANGER, str(service.port)],
    )
    try:
        wait_for(
            lambda: service.ps()[0]["foreign_listeners"] == 1,
            timeout=30,
            interval=0.5,
            what="the foreign listener on node 2 reported",
        )
        shown = service.cli("ps", service.name).stdout
        assert f"foreign listener on :{service.port} on node {nodes.node2_id[:12]}" in shown
    finally:
        stranger.kill()
        stranger.wait()
    wait_for(lambda: service.ps()[0]["foreign_listeners"] == 0, timeout=30, what="it gone")

    # A task's process killed on node 2: Swarm starts a successor, ps shows it listening.
    before = set(nodes.listeners(service.port, 2))
    os.kill(sorted(before)[0], signal.SIGKILL)
    wait_for(
        lambda: (
            counts(service) == {nodes.node1_id: 2, nodes.node2_id: 2}
            and len(set(nodes.listeners(service.port, 2)) - before) == 1
        ),
        timeout=120,
        interval=0.5,
        what="the killed task on node 2 healed",
    )

    # A hung task on node 2 under load to node 2: that node's agent ends it.
    before = set(nodes.listeners(service.port, 2))
    victim = sorted(before)[0]
    with Load(service.port, host=NODE2_ADDR) as load:
        wait_for(lambda: load.requests > 20, timeout=15, what="load on node 2")
        os.kill(victim, signal.SIGSTOP)
        wait_for(
            lambda: (
                victim not in nodes.listeners(service.port, 2)
                and counts(service) == {nodes.node1_id: 2, nodes.node2_id: 2}
            ),
            timeout=120,
            interval=0.5,
            what="the hung task on node 2 replaced",
        )
    hung_rows = [r for r in service.ps() if r["node_id"] == nodes.node2_id]
    assert all(r["verdict"] == "ready" for r in hung_rows), hung_rows

    # A rollout under load on both nodes: no request fails. With a per-node maximum it is
    # stop-first, a task at a time (no room on a full node); start-first is tested in
    # test_swarm.py.
    with Load(service.port) as here, Load(service.port, host=NODE2_ADDR) as there:
        wait_for(lambda: here.requests > 50 and there.requests > 50, timeout=15, what="load")
        rolled = service.cli(
            "rollout", service.name, "--image", V2, "--min-ready", "1", timeout=400
        )
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        wait_for(
            lambda: here.last_versions[-5:] == ["2"] * 5 and there.last_versions[-5:] == ["2"] * 5,
            timeout=20,
            what=f"v2 answering on both nodes (last: {here.last_versions[-5:]}, "
            f"{there.last_versions[-5:]}; {service.ps()})",
        )
    assert here.failures == [] and there.failures == [], (here.failures[:3], there.failures[:3])
    assert counts(service) == {nodes.node1_id: 2, nodes.node2_id: 2}
    assert {row["image"] for row in service.ps()} == {V2}

    # Draining node 2 moves its tasks to node 1 (room for 2 there), the count restored.
    scaled = service.cli("scale", service.name, "2", timeout=120)
    assert scaled.returncode == 0, scaled.stderr
    node2 = nodes.node1.nodes.get(nodes.node2_id)
    spec = dict(node2.attrs["Spec"], Availability="drain")
    node2.update(spec)
    wait_for(
        lambda: counts(service) == {nodes.node1_id: 2},
        timeout=120,
        interval=0.5,
        what="node 2's tasks moved to node 1",
    )
    assert not nodes.listeners(service.port, 2)

    down = service.cli("down", service.name, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    for client in (nodes.node1, nodes.node2):
        wait_for(
            lambda client=client: (
                not ours(client, service.name)
                and not any(
                    client.containers.list(
                        ignore_removed=True, all=True, filters={"label": f"{labels.ROLE}={role}"}
                    )
                    for role in (labels.ROLE_SWARM_AGENT, labels.ROLE_SWARM_NODE_AGENT)
                )
            ),
            timeout=90,
            what="no task or agent container left on a node",
        )
    assert not [s for s in nodes.node1.services.list() if s.name in (service.name, AGENT)]

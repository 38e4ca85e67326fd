"""engine = swarm on a real one-node Docker Swarm: the service comes up in the host network
with every task proven listening by the kernel, a killed task is healed by Swarm and `ps`
shows it, a scale and a start-first rollout under load lose no request, and `down` leaves
no service, task container or state behind.

The swarm is this engine's, made for the test when it is not in one (and left after, with
the `docker_gwbridge` network the leave keeps); an engine already in a swarm is used as it
is and left in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import psutil
import pytest

from reuseport import labels
from reuseport.kernel import sockets as kernel
from tests.integration.conftest import Service, free_port, top_output, wait_for
from tests.integration.load import Load
from tests.integration.strangers import accepted, answered_by, foreign_listener, keep_connecting

V1, V2 = "reuseport-demo:v1", "reuseport-demo:v2"
AGENT = "reuseport-agent"


@pytest.fixture
def swarm(docker_client: docker.DockerClient) -> Iterator[None]:
    state = (docker_client.info().get("Swarm") or {}).get("LocalNodeState")
    made = state == "inactive"
    if made:
        docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    elif state != "active":
        pytest.fail(f"this engine's swarm state is {state!r}; expected inactive or active")
    try:
        yield
    finally:
        if made:
            docker_client.swarm.leave(force=True)
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.networks.get("docker_gwbridge").remove()


HOSTNAME = socket.gethostname()  # tasks and agents share the host's (host network)


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def listening_rows(service: Service) -> dict[int, dict[str, object]]:
    return {row["replica"]: row for row in service.ps() if row["listening"] is True}


def agent_containers(service: Service) -> list[object]:
    """The agent service's task containers and the node agents they launched."""
    return [
        container
        for role in (labels.ROLE_SWARM_AGENT, labels.ROLE_SWARM_NODE_AGENT)
        for container in service.client.containers.list(
            ignore_removed=True, all=True, filters={"label": f"{labels.ROLE}={role}"}
        )
    ]


def task_containers(service: Service) -> list[object]:
    return service.containers(role=labels.ROLE_SWARM_TASK)


@pytest.mark.timeout(600)
def test_a_swarm_service_listens_heals_scales_rolls_out_and_goes_down_clean(
    swarm: None, service: Service, migrate_req: None
) -> None:
    metrics = free_port()
    up_args = service.up_args(
        "--engine",
        "swarm",
        "--hang-window",
        "2",
        "--metrics-port",
        str(metrics),
        replicas=2,
        image=V1,
    )
    up = service.cli(*up_args, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "engine: swarm" in up.stdout + up.stderr
    agents = [s for s in service.client.services.list() if s.name == AGENT]
    assert len(agents) == 1 and agents[0].attrs["Spec"]["Mode"] == {"Global": {}}
    # The node agent reports every task: its verdict is in ps (read through Swarm's logs).
    wait_for(
        lambda: [row["verdict"] for row in service.ps()] == ["ready", "ready"],
        timeout=60,
        interval=0.5,
        what="the node agent's verdicts",
    )
    # The node agent serves the service's /metrics on this node's loopback.
    wait_for(
        lambda: (
            f'reuseport_replicas_listening{{node="{HOSTNAME}",service="{service.name}"}} 2.0'
            in scrape(metrics)
        ),
        timeout=30,
        interval=0.5,
        what="the agent's /metrics",
    )
    again = service.cli(*up_args, timeout=60)  # the same spec: found, nothing changes
    assert again.returncode == 0 and "already running this spec" in again.stdout + again.stderr
    other = service.up_args("--engine", "swarm", "--hang-window", "3", replicas=2, image=V1)
    refused = service.cli(*other, timeout=60)
    assert refused.returncode == 6 and "already runs another spec" in refused.stderr
    shown = top_output(service, service.name)
    assert "engine: swarm" in shown and "2/2 ready" in shown, shown[-1500:]
    rows = service.ps()
    assert sorted(row["replica"] for row in rows) == [1, 2]
    assert all(row["engine"] == "swarm" and row["listening"] is True for row in rows), rows
    assert len(kernel.listening_inodes(service.port)) == 2  # the kernel's own count
    assert all(row["state"] == "running" and row["pid"] for row in rows)

    # A task's process killed from the host: Swarm starts a successor in the same slot,
    # and ps shows it listening (a new task, a new pid).
    victim = next(row for row in rows if row["replica"] == 1)
    os.kill(int(str(victim["pid"])), signal.SIGKILL)
    wait_for(
        lambda: (
            (now := listening_rows(service)).keys() == {1, 2}
            and now[1]["task_id"] != victim["task_id"]
        ),
        timeout=90,
        interval=0.5,
        what="slot 1 healed by Swarm and listening",
    )

    # A hung task (SIGSTOP) under load: the agent sees its queue stop moving for the hang
    # window, closes its listener and kills it; Swarm starts a successor in its slot.
    hung = listening_rows(service)[2]
    with Load(service.port) as load:
        wait_for(lambda: load.requests > 20, timeout=15, what="load running")
        os.kill(int(str(hung["pid"])), signal.SIGSTOP)
        wait_for(
            lambda: (
                (now := listening_rows(service)).keys() == {1, 2}
                and now[2]["task_id"] != hung["task_id"]
            ),
            timeout=90,
            interval=0.5,
            what="the hung task in slot 2 replaced",
        )
    assert not psutil.pid_exists(int(str(hung["pid"])))
    assert load.requests > 100

    scaled = service.cli("scale", service.name, "3", timeout=120)
    assert scaled.returncode == 0, scaled.stderr
    assert listening_rows(service).keys() == {1, 2, 3}

    with Load(service.port) as load:
        wait_for(lambda: load.requests > 50, timeout=15, what="load running")
        rolled = service.cli(
            "rollout", service.name, "--image", V2, "--min-ready", "1", timeout=300
        )
        wait_for(lambda: load.last_versions[-5:] == ["2"] * 5, timeout=15, what="v2 answering")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert load.failures == [], load.failures[:5]
    assert load.versions["1"] > 0 and load.versions["2"] > 0
    after = service.ps()
    assert {row["image"] for row in after} == {V2} and len(after) == 3
    history = service.cli("history", service.name)
    assert V2 in history.stdout and "complete" in history.stdout, history.stdout

    down = service.cli("down", service.name, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not task_containers(service)
    assert not [s for s in service.client.services.list() if s.name == service.name]
    assert not kernel.listening_inodes(service.port)
    assert service.cli("ps", service.name).returncode == 4  # no such service any more
    # The last of our Swarm services: the node agents went with it.
    wait_for(
        lambda: not [s for s in service.client.services.list() if s.name == AGENT],
        timeout=30,
        what="the agent service removed",
    )
    wait_for(lambda: not agent_containers(service), timeout=60, what="the agents' containers gone")


@pytest.mark.timeout(420)
def test_a_steered_swarm_service_splits_exactly_and_shuts_out_a_stranger_and_a_stopped_task(
    swarm: None, service: Service
) -> None:
    """The node agent (launched in the host's pid namespace) steers the port: 400 new
    connections split evenly, a foreign listener of the same uid gets none, a SIGSTOPped
    task stops receiving new connections well within its hang window."""
    up_args = service.up_args(
        "--engine", "swarm", "--balance", "round-robin", "--hang-window", "20", replicas=4
    )
    up = service.cli(*up_args, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    wait_for(
        lambda: [row["member"] for row in service.ps()] == [True] * 4,
        timeout=60,
        interval=0.5,
        what="every task in the node's steering map",
    )
    node_agents = service.client.containers.list(
        ignore_removed=True,
        filters={"label": f"{labels.ROLE}={labels.ROLE_SWARM_NODE_AGENT}"},
    )
    assert len(node_agents) == 1 and node_agents[0].attrs["HostConfig"]["PidMode"] == "host"
    with foreign_listener(service.port) as stranger:
        counts = service.spread(400)
        assert accepted(stranger) == 0, counts
        assert sorted(counts) == ["1", "2", "3", "4"], counts
        assert all(95 <= n <= 105 for n in counts.values()), counts
        shown = service.cli("ps", service.name, timeout=30).stdout
        assert "balance: round-robin" in shown and "STEERED" in shown, shown
        assert "steering shuts it out" in shown, shown

    victim = listening_rows(service)[2]
    pid = int(str(victim["pid"]))
    os.kill(pid, signal.SIGSTOP)
    try:
        # Connections keep arriving for a while; the stopped task's queue fills with its
        # share until the agent sees it unmoved (a pass every 0.5 s, suspect after 0.25 s).
        keep_connecting(service.port, 1.5)
        # From here on none may land on it: one that did would wait for the 20 s hang window.
        assert "2" not in answered_by(service.port, 100, timeout_s=3)
        row = next(r for r in service.ps() if r["replica"] == 2)
        assert row["member"] is False and row["out_why"].startswith("suspect"), row
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(
        lambda: [row["member"] for row in service.ps()] == [True] * 4,
        timeout=30,
        interval=0.5,
        what="the resumed task back in the map",
    )
    down = service.cli("down", service.name, timeout=180)
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not agent_containers(service), timeout=60, what="the agents' containers gone")


def test_swarm_engine_on_an_engine_outside_a_swarm_is_one_line(
    docker_client: docker.DockerClient, service: Service
) -> None:
    if (docker_client.info().get("Swarm") or {}).get("LocalNodeState") != "inactive":
        pytest.fail("this engine is in a swarm: the test needs one that is not")
    up = service.cli(*service.up_args("--engine", "swarm"))
    assert up.returncode == 3, up.stderr
    assert "not in a swarm" in up.stderr and "docker swarm init" in up.stderr
    assert "Traceback" not in up.stderr and len(up.stderr.strip().splitlines()) == 1
    assert service.cli("ps", service.name).returncode == 4  # nothing stored


@pytest.mark.timeout(600)
def test_a_file_with_engine_swarm_applies_scales_in_place_and_honours_the_per_node_maximum(
    swarm: None, service: Service, tmp_path: Path
) -> None:
    path = tmp_path / "reuseport.toml"

    def write(replicas: int, ready_timeout: int = 120) -> None:
        path.write_text(
            f'[services.{service.name}]\nimage = "{V1}"\nreplicas = {replicas}\n'
            f'port = {service.port}\nengine = "swarm"\nmax-per-node = 2\n'
            f"ready-timeout = {ready_timeout}\n"
        )

    def up() -> subprocess.CompletedProcess[str]:
        return service.cli("up", "-f", str(path), timeout=240)

    write(replicas=1)
    created = up()
    assert created.returncode == 0, created.stdout + created.stderr
    assert "(a Swarm service)" in created.stdout, created.stdout
    assert "create (swarm)" in created.stdout + created.stderr
    first = listening_rows(service)
    assert first.keys() == {1}

    write(replicas=2)  # a scale: Swarm adds slot 2 and leaves slot 1's task alone
    scaled = up()
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    assert "scale (replicas: 1 -> 2)" in scaled.stdout, scaled.stdout
    now = listening_rows(service)
    assert now.keys() == {1, 2} and now[1]["task_id"] == first[1]["task_id"]
    again = up()
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout

    # One node, at most 2 per node: a third task cannot be placed, and `up` says why.
    write(replicas=3, ready_timeout=8)
    refused = up()
    assert refused.returncode == 7, refused.stdout + refused.stderr
    assert "2/3 tasks ready" in refused.stdout + refused.stderr
    assert "max replicas per node" in (refused.stdout + refused.stderr).lower()

    down = service.cli("down", "-f", str(path), timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not task_containers(service)
    assert not kernel.listening_inodes(service.port)

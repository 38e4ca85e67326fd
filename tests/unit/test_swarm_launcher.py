"""The agent's Swarm task only launches the node agent proper (a local container in the
host's pid namespace): its config comes from the launcher's own inspect, stale node agents
are removed, output is copied line by line, and the node agent goes with the launcher."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from reuseport import labels
from reuseport.swarm import launcher
from reuseport.swarm.launcher import LauncherError, NodeAgentConfig, node_agent_config
from reuseport.swarm.params import AGENT_SOCKET_DIR

ME = {
    "Id": "f" * 64,
    "Image": "sha256:abc",
    "Config": {
        "Image": "reuseport:latest",
        "Env": [
            "DOCKER_HOST=unix:///run/reuseport-engine/docker.sock",
            "REUSEPORT_NODE_ID=node1",
            "REUSEPORT_TASK_ID=task1",
            "SECRET=not copied",
        ],
    },
    "Mounts": [{"Destination": AGENT_SOCKET_DIR, "Source": "/run/docker-alt"}],
}


def test_the_node_agent_runs_the_launchers_image_engine_and_node() -> None:
    config = node_agent_config(ME)
    assert config.image == "sha256:abc"  # by id: exactly the launcher's code
    assert config.command == ["agent", "--local", "f" * 64]
    assert config.environment == {
        "DOCKER_HOST": "unix:///run/reuseport-engine/docker.sock",
        "REUSEPORT_NODE_ID": "node1",
    }
    assert config.mounts[0]["Source"] == "/run/docker-alt"
    assert config.mounts[0]["Target"] == AGENT_SOCKET_DIR
    assert config.labels[labels.ROLE] == labels.ROLE_SWARM_NODE_AGENT
    assert config.labels[labels.LAUNCHER] == "f" * 64
    assert set(config.cap_add) == {"SYS_PTRACE", "NET_ADMIN", "SYS_ADMIN"}


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"Mounts": []}, "no mount at"),
        ({"Config": {"Env": ["DOCKER_HOST=x"]}}, "lacks REUSEPORT_NODE_ID"),
    ],
)
def test_a_launcher_it_cannot_read_is_one_line(broken: dict[str, Any], why: str) -> None:
    with pytest.raises(LauncherError, match=why):
        node_agent_config({**ME, **broken})


class Engine:
    def __init__(self, output: list[bytes], end: threading.Event | None = None) -> None:
        self.output = output
        self.end = end
        self.started: list[NodeAgentConfig] = []
        self.removed: list[str] = []
        self.agents = [
            {"Id": "old", "Labels": {labels.LAUNCHER: "gone"}},
            {"Id": "sibling", "Labels": {labels.LAUNCHER: "alive"}},
        ]

    def container_of_task(self, task_id: str) -> dict[str, Any] | None:
        return ME if task_id == "task1" else None

    def node_agents(self) -> list[dict[str, Any]]:
        return self.agents

    def running_ids(self, ids: list[str]) -> set[str]:
        return {i for i in ids if i == "alive"}

    def start_node_agent(self, config: NodeAgentConfig) -> str:
        self.started.append(config)
        return "new"

    def remove_container(self, container_id: str) -> None:
        self.removed.append(container_id)

    def follow_output(self, container_id: str) -> Iterator[bytes]:
        assert container_id == "new"
        yield from self.output
        if self.end is not None:
            self.end.wait(5)


def test_output_is_copied_by_line_and_an_exited_agent_ends_the_launcher() -> None:
    engine = Engine([b'{"a":', b"1}\nsecond", b" line\n"])
    lines: list[str] = []
    code = launcher.launch(engine, "task1", lambda s: False, lines.append)
    assert code == 1  # non-zero: Swarm starts the task (and so the agent) again
    assert lines[:2] == ['{"a":1}', "second line"]
    assert engine.removed == ["old", "new"]  # the stale one first; ours at the end


def test_a_stopped_launcher_removes_its_node_agent() -> None:
    end = threading.Event()
    engine = Engine([b"x\n"], end)
    stops = iter([False, True])
    code = launcher.launch(engine, "task1", lambda s: next(stops), lambda line: None)
    end.set()
    assert code == 0 and engine.removed == ["old", "new"]


def test_a_task_without_its_container_is_one_line() -> None:
    with pytest.raises(LauncherError, match="no container of this task"):
        launcher.launch(Engine([]), "other", lambda s: True, lambda line: None)

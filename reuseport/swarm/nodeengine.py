"""A node's own engine, as the node agent and its launcher use it: this node's task
containers, the local node agent container, nothing of the swarm's (a worker's engine
answers no service or task query; ``swarm.engine.SwarmEngine`` is the manager's side)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors

from reuseport import labels
from reuseport.engine.docker import client_from_env, translated
from reuseport.swarm.launcher import NodeAgentConfig


class NodeEngine:
    def __init__(self, client: docker.DockerClient) -> None:
        self._api = client.api

    @classmethod
    def from_env(cls) -> NodeEngine:
        return cls(client_from_env())

    # What the node agent reads and does (swarm.agent).

    @translated
    def node_identity(self) -> dict[str, str]:
        info = self._api.info()
        return {
            "node_id": (info.get("Swarm") or {}).get("NodeID", ""),
            "hostname": info.get("Name", ""),
        }

    @translated
    def local_task_ids(self) -> list[str]:
        """This node's running task containers of reuseport services (one list call)."""
        found = self._api.containers(
            filters={"label": labels.filters(role=labels.ROLE_SWARM_TASK), "status": "running"}
        )
        return [c["Id"] for c in found]

    @translated
    def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = self._api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        return data

    @translated
    def container_running(self, container_id: str) -> bool:
        data = self.inspect_container(container_id)
        return bool(data and (data.get("State") or {}).get("Running"))

    # What a launcher does (swarm.launcher).

    @translated
    def container_of_task(self, task_id: str) -> dict[str, Any] | None:
        found = self._api.containers(filters={"label": f"com.docker.swarm.task.id={task_id}"})
        return self.inspect_container(found[0]["Id"]) if found else None

    @translated
    def node_agents(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._api.containers(
            all=True, filters={"label": labels.filters(role=labels.ROLE_SWARM_NODE_AGENT)}
        )
        return found

    @translated
    def running_ids(self, ids: list[str]) -> set[str]:
        return {i for i in ids if self.container_running(i)}

    @translated
    def start_node_agent(self, config: NodeAgentConfig) -> str:
        host_config = self._api.create_host_config(
            network_mode="host",
            pid_mode="host",
            cap_add=list(config.cap_add),
            init=True,
            auto_remove=True,
            # As the local supervisor: busy tasks must not starve the one that judges them.
            cpu_shares=4096,
            mounts=config.mounts,
        )
        created = self._api.create_container(
            config.image,
            name=config.name,
            command=config.command,
            environment=config.environment,
            labels=config.labels,
            host_config=host_config,
            stop_timeout=5,
        )
        self._api.start(created["Id"])
        return str(created["Id"])

    @translated
    def remove_container(self, container_id: str) -> None:
        # Gone, or auto-removal already under way: either way it goes.
        with contextlib.suppress(docker.errors.APIError):
            self._api.remove_container(container_id, force=True)

    def follow_output(self, container_id: str) -> Iterator[bytes]:
        return iter(
            self._api.logs(container_id, stream=True, follow=True, stdout=True, stderr=True)
        )

    @translated
    def kill(self, container_id: str) -> None:
        # Gone or already stopping: Swarm replaces it either way.
        with contextlib.suppress(docker.errors.APIError):
            self._api.kill(container_id)

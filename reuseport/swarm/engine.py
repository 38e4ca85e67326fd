"""Docker Swarm through the Engine API (docker-py's low-level client): our services, their
tasks and the nodes, as small records. Nothing here decides; ``swarm.service`` does."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from reuseport import labels
from reuseport.engine.docker import client_from_env, socket_path, translated
from reuseport.errors import EngineError, ServiceNotFound, SwarmUnavailable
from reuseport.spec import ServiceSpec
from reuseport.swarm.params import AGENT_SERVICE, agent_params, service_params

INIT_HINT = (
    "make this engine a swarm manager first: `docker swarm init --advertise-addr 127.0.0.1` "
    "for one machine (see README, Docker Swarm)"
)


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    addr: str
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    role: str  # manager | worker
    is_self: bool  # the node this engine is


@dataclass(frozen=True)
class Task:
    """One Swarm task of a service (a slot's current or past container)."""

    id: str
    slot: int
    node_id: str
    state: str  # new .. running | complete | failed | shutdown | rejected | orphaned ...
    desired_state: str  # running | shutdown
    container_id: str  # "" until the node created it
    pid: int  # the container's host pid on its node, 0 when not running
    exit_code: int | None
    message: str
    error: str
    spec_hash: str  # of the template this task runs (our label)
    image: str

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired_state == "running"

    @property
    def current(self) -> bool:
        """Meant to run now (not a past task Swarm keeps in its history)."""
        return self.desired_state == "running"


@dataclass(frozen=True)
class UpdateStatus:
    state: str  # "" (never updated) | updating | paused | completed | rollback_started ...
    message: str


class SwarmEngine:
    def __init__(self, client: docker.DockerClient) -> None:
        self._api = client.api

    @classmethod
    def from_env(cls) -> SwarmEngine:
        return cls(client_from_env())

    def require_manager(self) -> None:
        state, manager = self.swarm_state()
        if state != "active":
            raise SwarmUnavailable(f"this Docker engine is not in a swarm ({state}): {INIT_HINT}")
        if not manager:
            raise SwarmUnavailable(
                "this Docker engine is a swarm worker: run reuseport on a manager node"
            )

    @translated
    def swarm_state(self) -> tuple[str, bool]:
        """(this engine's swarm state: inactive, active, ..., whether it is a manager)."""
        swarm = self._api.info().get("Swarm") or {}
        return swarm.get("LocalNodeState") or "inactive", bool(swarm.get("ControlAvailable"))

    @translated
    def agent_running(self) -> bool:
        return self._agent() is not None

    @translated
    def require_image(self, ref: str) -> None:
        # Nodes pull what they lack; with no registry (as here) an image must be on every
        # node that may run a task. On the manager at least, say so early.
        try:
            self._api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            raise EngineError(
                f"image {ref!r} is not on this node; Swarm nodes pull images they lack, "
                "so push it to a registry they reach or load it on each node first"
            ) from None

    # -- services ------------------------------------------------------------------------

    @translated
    def inspect(self, name: str) -> dict[str, Any] | None:
        """Our service ``name`` (None when there is none); EngineError when a service of
        that name exists and is not reuseport's."""
        try:
            found: dict[str, Any] = self._api.inspect_service(name)
        except docker.errors.NotFound:
            return None
        spec = found.get("Spec") or {}
        if spec.get("Name") != name:  # inspect also matches an id or a prefix of one
            return None
        if not labels.is_owned_swarm_service(spec.get("Labels"), name):
            raise EngineError(
                f"a Swarm service named {name!r} exists and is not reuseport's: "
                "remove or rename it, or choose another name"
            )
        return found

    @translated
    def services(self) -> list[str]:
        found = self._api.services(filters={"label": f"{labels.ROLE}={labels.ROLE_SWARM_SERVICE}"})
        return sorted(
            s["Spec"]["Name"]
            for s in found
            if labels.is_owned_swarm_service(s["Spec"].get("Labels"), s["Spec"]["Name"])
        )

    @translated
    def create(self, spec: ServiceSpec) -> str:
        created: dict[str, Any] = self._api.create_service(**service_params(spec))
        return str(created["ID"])

    @translated
    def update(self, spec: ServiceSpec) -> None:
        """Make the service run ``spec``: Swarm rolls the tasks when the template changed,
        else (a count or policy) only adjusts."""
        current = self._require(spec.name)
        self._api.update_service(current["ID"], current["Version"]["Index"], **service_params(spec))

    @translated
    def roll_back(self, name: str) -> None:
        """Back to the spec the last update replaced (what `docker service rollback` does),
        as a rolling update of its own."""
        current = self._require(name)
        previous = current.get("PreviousSpec")
        if not previous:
            raise EngineError(f"{name!r} has no previous version to go back to")
        self._api.update_service(
            current["ID"],
            current["Version"]["Index"],
            task_template=previous["TaskTemplate"],
            name=previous["Name"],
            labels=previous.get("Labels"),
            mode=previous.get("Mode"),
            update_config=previous.get("UpdateConfig"),
            rollback_config=previous.get("RollbackConfig"),
        )

    @translated
    def remove(self, name: str) -> bool:
        current = self.inspect(name)
        if current is None:
            return False
        try:
            self._api.remove_service(current["ID"])
        except docker.errors.NotFound:
            return False
        return True

    @translated
    def tasks_and_update(self, name: str) -> tuple[list[Task], UpdateStatus]:
        """The service's tasks and its update's state, from one inspect of it."""
        found = self._require(name)
        status = found.get("UpdateStatus") or {}
        listed = self._api.tasks(filters={"service": found["ID"]})
        return [_task(t) for t in listed], UpdateStatus(
            status.get("State", ""), status.get("Message", "")
        )

    def _require(self, name: str) -> dict[str, Any]:
        found = self.inspect(name)
        if found is None:
            raise ServiceNotFound(f"no Swarm service named {name!r} (see `reuseport ps`)")
        return found

    # -- the node agent (swarm.agent) ---------------------------------------------------------

    @translated
    def ensure_agent(self, image: str) -> bool:
        """Start the node agents' global service unless it runs as this version of the
        tool defines it (an older definition is replaced); True when started."""
        socket = os.path.realpath(socket_path())
        params = agent_params(image, os.path.dirname(socket), os.path.basename(socket))
        found = self._agent()
        if found is not None:
            running = ((found.get("Spec") or {}).get("Labels") or {}).get(labels.SPEC_HASH)
            if running == params["labels"][labels.SPEC_HASH]:
                return False
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_service(found["ID"])
        self.require_image(image)
        self._api.create_service(**params)
        return True

    @translated
    def remove_agent(self) -> bool:
        found = self._agent()
        if found is None:
            return False
        try:
            self._api.remove_service(found["ID"])
        except docker.errors.NotFound:
            return False
        return True

    @translated
    def agent_lines(self, tail: int = 100) -> list[str]:
        """The agents' latest output lines (``tail`` per agent), through Swarm's logs."""
        found = self._agent()
        if found is None:
            return []
        chunks = self._api.service_logs(found["ID"], stdout=True, stderr=False, tail=tail)
        text = b"".join(chunks).decode("utf-8", "replace")
        return text.splitlines()

    def _agent(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._api.inspect_service(AGENT_SERVICE)
        except docker.errors.NotFound:
            return None
        spec = found.get("Spec") or {}
        if (spec.get("Labels") or {}).get(labels.ROLE) != labels.ROLE_SWARM_AGENT:
            raise EngineError(
                f"a Swarm service named {AGENT_SERVICE!r} exists and is not reuseport's agent"
            )
        return found

    # -- tasks and nodes -------------------------------------------------------------------

    @translated
    def tasks(self, name: str) -> list[Task]:
        found = self.inspect(name)
        if found is None:
            return []
        return [_task(t) for t in self._api.tasks(filters={"service": found["ID"]})]

    @translated
    def task_containers(self, name: str) -> list[str]:
        """Ids of this node's containers of the service's tasks, stopped ones too."""
        found = self._api.containers(
            all=True, filters={"label": labels.filters(name, labels.ROLE_SWARM_TASK)}
        )
        return [c["Id"] for c in found]

    @translated
    def nodes(self) -> list[Node]:
        me = (self._api.info().get("Swarm") or {}).get("NodeID", "")
        return sorted((_node(n, me) for n in self._api.nodes()), key=lambda n: n.hostname)

    @translated
    def logs(self, name: str, *, follow: bool, tail: int | str) -> Iterator[bytes]:
        """The service's merged task logs as Swarm gives them (each line prefixed with
        its task: ``NAME.SLOT.TASK@NODE``)."""
        found = self._require(name)
        stream: Iterator[bytes] = self._api.service_logs(
            found["ID"], follow=follow, stdout=True, stderr=True, tail=tail
        )
        return stream


def _task(data: dict[str, Any]) -> Task:
    status = data.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    spec = (data.get("Spec") or {}).get("ContainerSpec") or {}
    exit_code = container.get("ExitCode")
    return Task(
        id=data["ID"],
        slot=int(data.get("Slot") or 0),
        node_id=data.get("NodeID", ""),
        state=status.get("State", ""),
        desired_state=data.get("DesiredState", ""),
        container_id=container.get("ContainerID", ""),
        pid=int(container.get("PID") or 0),
        exit_code=int(exit_code) if exit_code is not None else None,
        message=status.get("Message", ""),
        error=status.get("Err", ""),
        spec_hash=(spec.get("Labels") or {}).get(labels.SPEC_HASH, ""),
        image=spec.get("Image", "").split("@", 1)[0],
    )


def _node(data: dict[str, Any], me: str) -> Node:
    status = data.get("Status") or {}
    spec = data.get("Spec") or {}
    return Node(
        id=data["ID"],
        hostname=(data.get("Description") or {}).get("Hostname", ""),
        addr=status.get("Addr", ""),
        state=status.get("State", ""),
        availability=spec.get("Availability", ""),
        role=spec.get("Role", ""),
        is_self=data["ID"] == me,
    )

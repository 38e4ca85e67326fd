"""The agent's Swarm task starts the node agent proper as a local container.

A Swarm service cannot share the host's pid namespace (Docker 20.10's service API has no
pid mode), and steering needs it: the agent borrows a task's listening socket with
``pidfd_open`` + ``pidfd_getfd``, which reach only processes of the caller's own pid
namespace (a host /proc mount shows them, but cannot lend their sockets). So the global
service's task (``reuseport agent``) is only a launcher. Through its own node's engine it
starts one local container of its own image (``reuseport agent --local LAUNCHER``) in the
host's pid and network namespaces, copies that container's output to its own (where `ps`
reads the findings, through `docker service logs`) and removes it when it stops.

The node agent checks every few seconds that its launcher still runs and exits when it
does not (its container is auto-removed), so a launcher killed outright leaves nothing
behind; a new launcher also removes node agents whose launcher is gone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from reuseport import labels
from reuseport.errors import ReuseportError
from reuseport.swarm.params import AGENT_SOCKET_DIR

NODE_AGENT_PREFIX = "reuseport-node-agent"
# SYS_PTRACE: read other processes' fd tables and borrow listeners (pidfd_getfd);
# NET_ADMIN: close a hung task's listener (sock_diag SOCK_DESTROY); SYS_ADMIN: bpf(2) for
# steering (Docker 20.10 does not know the narrower CAP_BPF).
NODE_AGENT_CAPS = ("SYS_PTRACE", "NET_ADMIN", "SYS_ADMIN")


class LauncherError(ReuseportError):
    """The launcher cannot start its node agent (said on its output, then it exits)."""


@dataclass(frozen=True)
class NodeAgentConfig:
    """What the local node agent container is created with (from the launcher's inspect)."""

    name: str
    image: str
    command: list[str]
    environment: dict[str, str]
    labels: dict[str, str]
    mounts: list[dict[str, Any]] = field(default_factory=list)
    cap_add: tuple[str, ...] = NODE_AGENT_CAPS


def node_agent_config(launcher: dict[str, Any]) -> NodeAgentConfig:
    """The node agent of the launcher container ``launcher`` (its inspect data): the same
    image (by id: exactly the launcher's code), the same engine socket directory (the
    host path the launcher's mount names) and the same environment for the engine."""
    launcher_id = str(launcher["Id"])
    config = launcher.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    wanted = ("DOCKER_HOST", "REUSEPORT_NODE_ID")
    missing = [key for key in wanted if not env.get(key)]
    if missing:
        raise LauncherError(f"the launcher's environment lacks {', '.join(missing)}")
    sources = [
        m.get("Source", "")
        for m in launcher.get("Mounts") or []
        if m.get("Destination") == AGENT_SOCKET_DIR
    ]
    if not sources or not sources[0]:
        raise LauncherError(f"the launcher has no mount at {AGENT_SOCKET_DIR} (the engine)")
    socket_dir = {
        "Type": "bind",
        "Source": sources[0],
        "Target": AGENT_SOCKET_DIR,
        "ReadOnly": False,
        "BindOptions": {"NonRecursive": True},  # see engine.docker.supervisor_socket_mount
    }
    return NodeAgentConfig(
        name=f"{NODE_AGENT_PREFIX}.{launcher_id[:12]}",
        image=str(launcher.get("Image") or config.get("Image") or ""),
        command=["agent", "--local", launcher_id],
        environment={key: env[key] for key in wanted},
        labels={
            labels.MANAGED: "1",
            labels.ROLE: labels.ROLE_SWARM_NODE_AGENT,
            labels.LAUNCHER: launcher_id,
        },
        mounts=[socket_dir],
    )


def stale_node_agents(node_agents: list[dict[str, Any]], running: set[str]) -> list[str]:
    """Ids of node agent containers whose launcher (a container id) is not ``running``."""
    return [
        c["Id"]
        for c in node_agents
        if (c.get("Labels") or {}).get(labels.LAUNCHER, "") not in running
    ]


class LauncherEngine(Protocol):
    """What the launcher needs of its node's engine (swarm.engine.SwarmEngine; fakes)."""

    def container_of_task(self, task_id: str) -> dict[str, Any] | None: ...
    def node_agents(self) -> list[dict[str, Any]]: ...
    def running_ids(self, ids: list[str]) -> set[str]: ...
    def start_node_agent(self, config: NodeAgentConfig) -> str: ...
    def remove_container(self, container_id: str) -> None: ...
    def follow_output(self, container_id: str) -> Iterator[bytes]: ...


def launch(
    engine: LauncherEngine,
    task_id: str,
    wait: Callable[[float], bool],
    write: Callable[[str], None],
) -> int:
    """Start this node's agent, copy its output until either it ends or ``wait`` says
    stop; remove it. Returns the exit code for the launcher (non-zero: Swarm restarts)."""
    me = engine.container_of_task(task_id)
    if me is None:
        raise LauncherError(f"no container of this task ({task_id}) on this node's engine")
    config = node_agent_config(me)
    found = engine.node_agents()
    launchers = [(c.get("Labels") or {}).get(labels.LAUNCHER, "") for c in found]
    for stale in stale_node_agents(found, engine.running_ids([x for x in launchers if x])):
        engine.remove_container(stale)
    agent_id = engine.start_node_agent(config)
    ended = threading.Event()

    def copy() -> None:
        pending = b""
        try:
            for chunk in engine.follow_output(agent_id):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    write(line.decode("utf-8", "replace"))
            if pending:
                write(pending.decode("utf-8", "replace"))
        except Exception as exc:  # the stream broke: the agent is restarted with us
            write(f"launcher: lost the node agent's output: {exc}")
        finally:
            ended.set()

    copier = threading.Thread(target=copy, name="node-agent-output", daemon=True)
    copier.start()
    try:
        while not ended.is_set():
            if wait(1.0):
                return 0
        write("launcher: the node agent exited; exiting so Swarm starts both again")
        return 1
    finally:
        engine.remove_container(agent_id)

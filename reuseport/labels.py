"""The ownership contract: which labels mark a container as reuseport's.

Nothing else in the package spells a label key. A container without ``MANAGED`` set to
``"1"`` is never listed, stopped or removed by reuseport.

Labels travel with an image: ``docker commit`` of a replica gives every container run from
it the replica's labels. What an image cannot carry is the container's name, and Docker
keeps names unique. So each container gets a random nonce both in its name
(``SERVICE.INDEX.NONCE``, ``reuseport-supervisor.SERVICE.NONCE``) and in ``NONCE``, and it
is ours only when its name is exactly the one its labels imply (``is_owned``).

Labels carry identity and hashes, never values: ``SPEC`` is the redacted spec.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

PREFIX = "io.reuseport"
MANAGED = f"{PREFIX}.managed"
SERVICE = f"{PREFIX}.service"
ROLE = f"{PREFIX}.role"
REPLICA = f"{PREFIX}.replica"
SPEC_HASH = f"{PREFIX}.spec-hash"
SPEC = f"{PREFIX}.spec"
RESTARTS = f"{PREFIX}.restarts"
HEALTH_PORT = f"{PREFIX}.health-port"
NONCE = f"{PREFIX}.nonce"
WATCH = f"{PREFIX}.watch"  # a Swarm task's port and windows, for the node agent

ROLE_REPLICA = "replica"
ROLE_SUPERVISOR = "supervisor"
# Docker Swarm (reuseport.swarm): the Swarm service, and each task's container. Swarm names
# and owns its containers; ours is the service, owned when its name is its SERVICE label.
ROLE_SWARM_SERVICE = "swarm-service"
ROLE_SWARM_TASK = "swarm-task"
ROLE_SWARM_AGENT = "swarm-agent"  # the node agent's global service (reuseport.swarm.agent)
# The node agent proper: a local container its Swarm task starts (reuseport.swarm.launcher).
ROLE_SWARM_NODE_AGENT = "swarm-node-agent"
LAUNCHER = f"{PREFIX}.launcher"  # a node agent's launcher: its Swarm task's container id
SUPERVISOR_NAME_PREFIX = "reuseport-supervisor"
# Containers created before the nonce label existed: their name ends in 6 hex digits.
_LEGACY_NONCE = re.compile(r"^[0-9a-f]{6}$")


def new_nonce() -> str:
    return secrets.token_hex(3)


def replica_name(service: str, index: int, nonce: str) -> str:
    return f"{service}.{index}.{nonce}"


def supervisor_name(service: str, nonce: str) -> str:
    return f"{SUPERVISOR_NAME_PREFIX}.{service}.{nonce}"


def replica_labels(
    service: str,
    index: int,
    spec_hash: str,
    spec_json: str,
    restarts: int,
    nonce: str,
    health_port: int | None = None,
) -> dict[str, str]:
    """``spec_json``: the REDACTED spec (``ServiceSpec.redacted().to_json()``)."""
    found = {
        MANAGED: "1",
        NONCE: nonce,
        SERVICE: service,
        ROLE: ROLE_REPLICA,
        REPLICA: str(index),
        SPEC_HASH: spec_hash,
        SPEC: spec_json,
        RESTARTS: str(restarts),
    }
    if health_port is not None:
        found[HEALTH_PORT] = str(health_port)
    return found


def supervisor_labels(service: str, spec_hash: str, nonce: str) -> dict[str, str]:
    return {
        MANAGED: "1",
        SERVICE: service,
        ROLE: ROLE_SUPERVISOR,
        SPEC_HASH: spec_hash,
        NONCE: nonce,
    }


def filters(service: str | None = None, role: str | None = None) -> list[str]:
    """Docker label filters selecting what reuseport owns (optionally one service / role)."""
    selected = [f"{MANAGED}=1"]
    if service is not None:
        selected.append(f"{SERVICE}={service}")
    if role is not None:
        selected.append(f"{ROLE}={role}")
    return selected


def is_owned(labels: Mapping[str, str] | None, name: str) -> bool:
    """Whether the container named ``name`` (Docker's leading "/" allowed) with these labels
    is one reuseport created: managed labels AND the name its labels imply, nonce included.
    A container from before the nonce label counts when its name has the old shape."""
    if labels is None or labels.get(MANAGED) != "1" or not labels.get(SERVICE):
        return False
    nonce = labels.get(NONCE)
    name = name.removeprefix("/")
    if nonce is None:  # created by an older reuseport: take the nonce from the name
        nonce = name.rsplit(".", 1)[-1]
        if not _LEGACY_NONCE.match(nonce):
            return False
    if not nonce:
        return False
    service = labels[SERVICE]
    role = labels.get(ROLE)
    if role == ROLE_REPLICA:
        return name == replica_name(service, int_label(labels, REPLICA, -1), nonce)
    if role == ROLE_SUPERVISOR:
        return name == supervisor_name(service, nonce)
    return False


def int_label(labels: Mapping[str, str], key: str, default: int = 0) -> int:
    try:
        return int(labels.get(key, default))
    except (TypeError, ValueError):
        return default


def swarm_service_labels(service: str, spec_hash: str, spec_json: str) -> dict[str, str]:
    """A Swarm service's labels; ``spec_json``: the REDACTED spec."""
    return {
        MANAGED: "1",
        SERVICE: service,
        ROLE: ROLE_SWARM_SERVICE,
        SPEC_HASH: spec_hash,
        SPEC: spec_json,
    }


def swarm_task_labels(service: str, spec_hash: str, watch_json: str) -> dict[str, str]:
    """The labels of each task's container (Swarm adds its own ``com.docker.swarm.*``);
    ``watch_json``: what the node agent watches it by (``swarm.agent.Watch``)."""
    return {
        MANAGED: "1",
        SERVICE: service,
        ROLE: ROLE_SWARM_TASK,
        SPEC_HASH: spec_hash,
        WATCH: watch_json,
    }


def is_owned_swarm_service(labels: Mapping[str, str] | None, name: str) -> bool:
    """Whether the Swarm service ``name`` with these labels is one reuseport created."""
    return (
        labels is not None
        and labels.get(MANAGED) == "1"
        and labels.get(ROLE) == ROLE_SWARM_SERVICE
        and labels.get(SERVICE) == name
    )

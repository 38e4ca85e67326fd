"""The ownership contract: which labels mark a container as reuseport's.

Nothing else in the package spells a label key. A container without ``MANAGED`` set to
``"1"`` is never listed, stopped or removed by reuseport.
"""

from __future__ import annotations

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

ROLE_REPLICA = "replica"
ROLE_SUPERVISOR = "supervisor"


def replica_labels(
    service: str,
    index: int,
    spec_hash: str,
    spec_json: str,
    restarts: int,
    health_port: int | None = None,
) -> dict[str, str]:
    found = {
        MANAGED: "1",
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


def supervisor_labels(service: str, spec_hash: str) -> dict[str, str]:
    return {MANAGED: "1", SERVICE: service, ROLE: ROLE_SUPERVISOR, SPEC_HASH: spec_hash}


def filters(service: str | None = None, role: str | None = None) -> list[str]:
    """Docker label filters selecting what reuseport owns (optionally one service / role)."""
    selected = [f"{MANAGED}=1"]
    if service is not None:
        selected.append(f"{SERVICE}={service}")
    if role is not None:
        selected.append(f"{ROLE}={role}")
    return selected


def is_owned(labels: Mapping[str, str] | None) -> bool:
    return labels is not None and labels.get(MANAGED) == "1" and SERVICE in labels


def int_label(labels: Mapping[str, str], key: str, default: int = 0) -> int:
    try:
        return int(labels.get(key, default))
    except (TypeError, ValueError):
        return default

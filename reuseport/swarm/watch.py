"""What the node agent watches a Swarm task by, carried in the task container's ``WATCH``
label (written by ``swarm.params``, read by ``swarm.agent``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from reuseport.spec import ServiceSpec


@dataclass(frozen=True)
class Watch:
    """What the agent needs of a task's spec, carried in its ``WATCH`` label: only these,
    so that a count or a rollout policy change leaves the tasks' template alone."""

    service: str
    port: int
    hang_window: float
    start_timeout: float
    # Where this node's agent serves the service's /metrics (None: it does not).
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    balance: str = "hash"  # another policy: the node agent steers the port (swarm.agentsteer)

    @classmethod
    def of(cls, spec: ServiceSpec) -> Watch:
        health = spec.health
        return cls(
            spec.name,
            spec.port,
            health.hang_window,
            health.start_timeout,
            spec.metrics_port,
            spec.metrics_addr,
            spec.balance,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Watch | None:
        try:
            data = json.loads(text)
            metrics = data.get("metrics_port")
            return cls(
                str(data["service"]),
                int(data["port"]),
                float(data["hang_window"]),
                float(data["start_timeout"]),
                int(metrics) if metrics is not None else None,
                str(data.get("metrics_addr") or "127.0.0.1"),
                str(data.get("balance") or "hash"),
            )
        except (ValueError, TypeError, KeyError):
            return None

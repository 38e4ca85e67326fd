"""Docker's inspect data of a replica container, read into the engine-neutral Replica."""

from __future__ import annotations

from datetime import datetime

from reuseport import labels
from reuseport.engine.base import Replica


def replica_from_inspect(data: dict) -> Replica:
    """The engine-neutral record of one replica container, from its inspect data."""
    config_labels = data["Config"].get("Labels") or {}
    state = data.get("State", {})
    return Replica(
        id=data["Id"],
        name=data.get("Name", "").lstrip("/"),
        service=config_labels.get(labels.SERVICE, ""),
        index=labels.int_label(config_labels, labels.REPLICA),
        state=state.get("Status", "unknown"),
        pid=int(state.get("Pid") or 0),
        image=data["Config"].get("Image", ""),
        spec_hash=config_labels.get(labels.SPEC_HASH, ""),
        spec_json=config_labels.get(labels.SPEC, ""),
        restarts=labels.int_label(config_labels, labels.RESTARTS),
        started_at=_epoch(state.get("StartedAt")),
        exit_code=state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None,
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        health_port=labels.int_label(config_labels, labels.HEALTH_PORT) or None,
    )


def _epoch(stamp: str | None) -> float | None:
    if not stamp or stamp.startswith("0001-"):
        return None
    # Docker prints nanoseconds; fromisoformat takes at most microseconds.
    head, _, frac = stamp.rstrip("Z").partition(".")
    text = f"{head}.{frac[:6]}+00:00" if frac else f"{head}+00:00"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None

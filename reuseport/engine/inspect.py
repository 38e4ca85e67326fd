"""Docker's inspect data of a replica container, read into the engine-neutral Replica, and
when a listing says it must be read again."""

from __future__ import annotations

import os
import re
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


# The ages in a listing's Status ("Up 5 seconds", "Exited (0) About a minute ago"): they
# change by themselves, so they are no sign that a container changed.
_AGE = re.compile(r"Less than a second|About an? \w+|\d+ \w+")


def listing_key(summary: dict) -> tuple[str, str]:
    """What of a container's listing must change for its inspect data to have changed:
    State and Status without its age (keyed on the age, every resync re-inspected most
    replicas while they were young)."""
    return str(summary.get("State", "")), _AGE.sub("", str(summary.get("Status", "")))


def same_process(data: dict, proc: str = "/proc") -> bool:
    """False when inspect data says running but its host pid is gone: a restart between
    two listings need not change the listing's key. Where that pid is not visible (another
    pid namespace) the data is never trusted."""
    state = data.get("State") or {}
    pid = int(state.get("Pid") or 0)
    return not state.get("Running") or (pid > 0 and os.path.exists(f"{proc}/{pid}"))


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

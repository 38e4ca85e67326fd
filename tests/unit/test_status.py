"""The published status: what every reader sees, through the status file and back."""

from __future__ import annotations

import json
from dataclasses import asdict

from reuseport.kernel.attribution import ForeignListener
from reuseport.status import (
    STATUS_VERSION,
    IndexStatus,
    ReplicaStatus,
    ServiceStatus,
    Sockets,
    replica_json,
)


def status() -> ServiceStatus:
    ready = ReplicaStatus(1, "a" * 64, "running", "ready", True, True, 11, "demo:1", "h", 900.0)
    failing = ReplicaStatus(
        2,
        "b" * 64,
        "running",
        "failing",
        False,
        True,
        12,
        "demo:1",
        "h",
        900.0,
        why="hung: 3 connection(s)",
        sockets=Sockets(4, 3, 128, 0.5),
    )
    backoff = ReplicaStatus(
        3,
        None,
        "backoff",
        "backoff",
        False,
        False,
        None,
        "demo:1",
        retry_at=1003.0,
        last_error="exited with code 1",
    )
    return ServiceStatus(
        "demo",
        8080,
        "demo:1",
        3,
        "h",
        1000.0,
        (ready, failing, backoff),
        {3: IndexStatus(2, 2, 1003.0, "exited with code 1")},
        {"hung": 1},
        (ForeignListener(9, "0.0.0.0", 0, 77, "nc", None),),
        "detached",
        "detached (x)",
    )


def test_a_status_survives_the_status_file() -> None:
    original = status()
    assert ServiceStatus.from_json(original.to_json()) == original


def test_the_status_file_holds_what_asdict_gives() -> None:
    original = status()
    expected = {
        **asdict(original),
        "version": STATUS_VERSION,
        "indices": {"3": asdict(original.indices[3])},
        "replacements": {"hung": 1},
    }
    assert original.to_json() == expected
    assert json.dumps(original.to_json()) == json.dumps(expected)  # the same order too


def test_counts_come_from_the_verdicts() -> None:
    assert (status().ready, status().running, status().connections) == (1, 2, 4)
    assert not status().converged()


def test_a_status_of_another_shape_reads_as_none() -> None:
    assert ServiceStatus.from_json({"mode": "detached", "slots": {}}) is None
    assert ServiceStatus.from_json({**status().to_json(), "replicas": [{"index": 1}]}) is None


def test_ps_json_rows_keep_the_keys_scripts_read() -> None:
    row = replica_json(status(), status().replicas[1], now=1010.0)
    assert row["container_id"] == "b" * 12 and row["failing"].startswith("hung")
    assert (row["connections"], row["accept_queue"], row["share"]) == (4, 3, 0.5)
    assert row["uptime_s"] == 110.0 and row["ready"] is False
    backoff = replica_json(status(), status().replicas[2], now=1001.0)
    assert backoff["retry_in_s"] == 2.0 and backoff["state"] == "backoff"

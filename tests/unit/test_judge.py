"""The judge's verdicts, and the one definition of ready, on scripted observations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reuseport import judge
from reuseport.engine.base import Replica
from reuseport.kernel.attribution import ReplicaSockets
from reuseport.liveness import Stall
from reuseport.records import Records, ReplicaRecord

LIMITS = judge.Limits(hang_window_s=5.0, start_timeout_s=30.0, port=8080)
RUNNING = Replica("c1", "demo.1.abc", "demo", 1, "running", 100, "demo:1", "h", "{}", 0, 0.0)
LISTENS = ReplicaSockets(100, (7,), 0, 128, frozenset())


def verdict(
    replica: Replica = RUNNING,
    record: ReplicaRecord | None = None,
    sockets: ReplicaSockets | None = LISTENS,
    passed: bool | None = None,
    unhealthy: str = "",
    now: float = 10.0,
    running_for: float | None = None,
) -> judge.Verdict:
    record = record or ReplicaRecord("c1", 1, first_seen=0.0)
    return judge.judge(replica, record, sockets, passed, unhealthy, LIMITS, now, running_for)


@pytest.mark.parametrize(
    ("listening", "passed", "failing", "draining", "ready"),
    [
        (True, None, False, False, True),
        (True, True, False, False, True),
        (True, False, False, False, False),  # its first check has not passed
        (False, True, False, False, False),
        (True, True, True, False, False),
        (True, True, False, True, False),
    ],
)
def test_ready_is_listening_past_its_check_and_neither_failing_nor_draining(
    listening: bool, passed: bool | None, failing: bool, draining: bool, ready: bool
) -> None:
    assert judge.is_ready(listening, passed, failing, draining) is ready


def test_a_listening_replica_is_ready_or_awaits_its_first_check() -> None:
    assert verdict() == judge.Verdict(judge.READY, True, True)
    assert verdict(passed=False).kind == judge.AWAITING_HEALTH


def test_a_replica_that_never_listens_fails_after_the_start_timeout() -> None:
    assert verdict(sockets=None, now=29.9).kind == judge.STARTING
    failing = verdict(sockets=None, now=30.0)
    assert failing.kind == judge.FAILING and not failing.ready
    assert failing.why == "never listened on port 8080 within 30s"
    # Once ready, losing the listener is not "never listened".
    was_ready = ReplicaRecord("c1", 1, first_seen=0.0, ready_since=1.0)
    assert verdict(record=was_ready, sockets=None, now=99.0).kind == judge.NOT_LISTENING


def test_hung_and_unhealthy_fail_a_listening_replica_and_stay_failing() -> None:
    stalled = ReplicaRecord("c1", 1, first_seen=0.0, stall=Stall(2.0, 3, frozenset()))
    hung = verdict(record=stalled, sockets=replace(LISTENS, accept_queue=3), now=7.0)
    assert hung.kind == judge.FAILING and hung.why.startswith("hung: 3 connection(s)")
    failed = "unhealthy: 3 failed checks"
    assert verdict(passed=True, unhealthy=failed).why == failed
    sticky = ReplicaRecord("c1", 1, first_seen=0.0, failing="hung: earlier")
    assert verdict(record=sticky).why == "hung: earlier"


def test_paused_dead_and_draining_are_never_ready() -> None:
    assert verdict(replica=replace(RUNNING, state="paused")).kind == judge.PAUSED
    assert verdict(replica=replace(RUNNING, state="exited", pid=0)).kind == judge.DEAD
    draining = ReplicaRecord("c1", 1, first_seen=0.0, draining=True)
    assert verdict(record=draining) == judge.Verdict(judge.DRAINING, False, True)


def test_records_are_forgotten_in_one_place_when_the_listing_drops_them() -> None:
    records = Records()
    records.track("a", 1, 0.0).failing = "hung"
    records.track("b", 2, 0.0)
    assert records.track("a", 1, 5.0).first_seen == 0.0  # tracked once
    gone = records.sync(["b"])
    assert [r.container_id for r in gone] == ["a"] and gone[0].failing == "hung"
    assert records.get("a") is None and len(records) == 1


def test_failed_checks_of_a_starting_replica_count_only_after_its_start_timeout() -> None:
    """Checks start with the container; an app on a busy host answers its HEALTH_PORT a
    moment after it listens. Refused checks then must not replace a replica just started."""
    failed = "unhealthy: 2 failed checks in a row, last: connection refused"
    starting = verdict(passed=False, unhealthy=failed, running_for=1.0)
    assert starting == judge.Verdict(judge.AWAITING_HEALTH, False, True)
    late = verdict(passed=False, unhealthy=failed, running_for=30.0)
    assert late.kind == judge.FAILING and late.why == failed
    # Without the container's start time, the supervisor's first sight of it counts.
    assert verdict(passed=False, unhealthy=failed, now=29.0).kind == judge.AWAITING_HEALTH
    assert verdict(passed=False, unhealthy=failed, now=31.0).kind == judge.FAILING
    # Once it passed a check, failures count at once, however young the replica.
    assert verdict(passed=True, unhealthy=failed, running_for=1.0).why == failed

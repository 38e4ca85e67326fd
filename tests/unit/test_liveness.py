"""The kernel hang signal and the app-level health checks, on scripted readings."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from reuseport import liveness
from reuseport.engine.base import Replica
from reuseport.health import HealthCheckFailed, HealthChecks
from reuseport.kernel.attribution import ReplicaSockets
from reuseport.policies import HealthPolicy
from tests.unit.fakes import InlineExecutor


def sockets(queue: int, connections: set[int]) -> ReplicaSockets:
    return ReplicaSockets(100, (1,), queue, 128, frozenset(connections))


class Detector:
    """Readings folded into one replica's stall, as the supervisor keeps it in its record."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.stall: liveness.Stall | None = None

    def observe(self, reading: ReplicaSockets, now: float) -> None:
        self.stall = liveness.advance(self.stall, reading, now)

    def hung(self, now: float) -> str:
        return liveness.hung(self.stall, self.window_s, now)


def test_a_queue_that_is_never_taken_from_is_a_hang_after_the_window() -> None:
    detector = Detector(5.0)
    for second in range(5):
        detector.observe(sockets(3 + second, {1}), float(second))
        assert detector.hung(float(second)) == ""
    detector.observe(sockets(9, {1}), 5.0)
    assert detector.hung(5.0).startswith("hung: 9 connection(s)")


def test_any_progress_restarts_the_window() -> None:
    detector = Detector(2.0)
    detector.observe(sockets(5, {1}), 0.0)
    detector.observe(sockets(4, {1}), 1.5)  # the queue shrank: it accepted
    detector.observe(sockets(4, {1}), 3.0)
    assert detector.hung(3.0) == ""
    detector.observe(sockets(6, {1, 2}), 4.0)  # a connection it had not held
    detector.observe(sockets(6, {1, 2}), 5.5)
    assert detector.hung(5.5) == ""
    detector.observe(sockets(6, {1, 2}), 6.1)
    assert detector.hung(6.1)


def test_an_empty_queue_is_never_a_hang_and_zero_turns_the_check_off() -> None:
    detector = Detector(1.0)
    for second in range(10):
        detector.observe(sockets(0, set()), float(second))
    assert detector.hung(10.0) == ""
    off = Detector(0.0)
    for second in range(10):
        off.observe(sockets(7, set()), float(second))
    assert off.hung(10.0) == ""
    assert liveness.stalled_for(off.stall, 10.0) == 10.0


def replica(cid: str = "c1") -> Replica:
    return Replica(cid, "s.1", "s", 1, "running", 10, "img", "", "", 0, 0.0, health_port=9001)


def test_health_checks_ready_after_a_pass_unhealthy_after_retries_in_a_row() -> None:
    now = [0.0]
    outcomes = ["ok", "fail", "fail", "ok", "fail", "fail", "fail"]
    results: list[bool] = []

    def check(_: Replica) -> None:
        if outcomes.pop(0) == "fail":
            raise HealthCheckFailed("GET answered 503")

    checks = HealthChecks(
        HealthPolicy(port_base=9000, interval=1.0, retries=3),
        check,
        clock=lambda: now[0],
        executor=InlineExecutor(),  # type: ignore[arg-type]
        on_result=lambda seconds, ok: results.append(ok),
    )
    checks.poll([replica()])
    assert checks.ready("c1") and checks.unhealthy("c1") == ""
    for _ in range(3):
        now[0] += 1.0
        checks.poll([replica()])
    assert checks.unhealthy("c1") == ""  # fail, fail, ok: never 3 in a row
    for _ in range(3):
        now[0] += 1.0
        checks.poll([replica()])
    assert checks.unhealthy("c1").startswith("unhealthy: 3 failed checks in a row")
    assert checks.failed_total == 5 and results.count(False) == 5
    checks.poll([])  # gone: forgotten
    assert not checks.ready("c1")


def test_a_check_that_never_returns_counts_as_failed_after_its_timeout() -> None:
    now = [0.0]
    never: Future[None] = Future()

    class Stuck(InlineExecutor):
        def submit(self, fn: Any, *args: Any) -> Future[None]:
            fn(*args)  # the check starts (the timeout runs from here) but never returns
            return never

    checks = HealthChecks(
        HealthPolicy(cmd="sleep 100", timeout=1.0, retries=1),
        lambda r: None,
        clock=lambda: now[0],
        executor=Stuck(),  # type: ignore[arg-type]
    )
    checks.poll([replica()])
    now[0] = 2.5
    checks.poll([replica()])
    assert "timed out" in checks.unhealthy("c1")


def test_listener_only_readings_count_a_shrinking_queue_as_progress() -> None:
    stall = liveness.advance(None, sockets(5, {1}), 0.0)
    for step in range(1, 40):  # 50 ms readings of the queue only, never shrinking
        stall = liveness.advance(stall, sockets(5 + step, set()), step * 0.05, False)
    assert liveness.hung(stall, 1.0, 1.95)
    stall = liveness.advance(stall, sockets(3, set()), 2.0, False)  # it accepted
    assert liveness.hung(stall, 1.0, 2.0) == ""
    assert stall is not None  # still suspect: it has a queue

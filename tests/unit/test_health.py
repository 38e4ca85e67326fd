"""The health-check pool: one worker per replica (bounded), timeouts from a check's start."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from reuseport.engine.base import Replica
from reuseport.health import MAX_WORKERS, HealthCheckFailed, HealthChecks
from reuseport.policies import HealthPolicy

POLICY = HealthPolicy(cmd="check", interval=2.0, timeout=1.0, retries=1)


def replica(number: int) -> Replica:
    return Replica(
        f"c{number}", f"s.{number}", "s", number, "running", 10 + number, "i", "", "", 0, 0.0
    )


class QueueingExecutor:
    """Holds submitted checks until run_all(): a pool whose workers are all busy."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, tuple[Any, ...], Future[Any]]] = []

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.queued.append((fn, args, future))
        return future

    def run_all(self) -> None:
        while self.queued:
            fn, args, future = self.queued.pop(0)
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - the check's failure is the result
                future.set_exception(exc)

    def shutdown(self, **_: Any) -> None: ...


def test_time_spent_queued_does_not_count_against_the_timeout() -> None:
    now = [0.0]
    took = 0.3
    latencies: list[tuple[float, bool]] = []

    def check(_: Replica) -> None:
        now[0] += took  # the check itself is quick

    executor = QueueingExecutor()
    checks = HealthChecks(
        POLICY,
        check,
        clock=lambda: now[0],
        executor=executor,  # type: ignore[arg-type]
        on_result=lambda seconds, ok: latencies.append((seconds, ok)),
    )
    checks.poll([replica(1)])
    now[0] = 10.0  # queued far longer than timeout + grace
    checks.poll([replica(1)])
    assert checks.unhealthy("c1") == "" and checks.failed_total == 0
    executor.run_all()  # it finally gets a worker, and passes
    assert checks.ready("c1")
    assert latencies == [(pytest.approx(took), True)]  # from its start, not its submission


def test_a_started_check_still_times_out() -> None:
    now = [0.0]
    never: Future[None] = Future()

    class StartsButNeverReturns(QueueingExecutor):
        def submit(self, fn: Any, *args: Any) -> Future[Any]:
            fn(*args)
            return never

    checks = HealthChecks(
        POLICY,
        lambda r: None,
        clock=lambda: now[0],
        executor=StartsButNeverReturns(),  # type: ignore[arg-type]
    )
    checks.poll([replica(1)])
    now[0] = 1.9  # within timeout + 1 s grace
    checks.poll([replica(1)])
    assert checks.failed_total == 0
    now[0] = 2.1
    checks.poll([replica(1)])
    assert "timed out after 1s" in checks.unhealthy("c1")


def test_every_replica_gets_a_worker_and_the_pool_grows_when_scaled() -> None:
    """Checks that block until released: all of them must be running at once."""
    release = threading.Event()
    running: set[str] = set()
    lock = threading.Lock()
    all_started = threading.Condition(lock)

    def check(r: Replica) -> None:
        with all_started:
            running.add(r.id)
            all_started.notify_all()
        if not release.wait(10):
            raise HealthCheckFailed("never released")

    checks = HealthChecks(POLICY, check)
    try:

        def wait_running(count: int, timeout: float = 10) -> bool:
            with all_started:
                return all_started.wait_for(lambda: len(running) >= count, timeout=timeout)

        checks.poll([replica(i) for i in range(2)])
        assert wait_running(2)
        checks.poll([replica(i) for i in range(20)])  # scaled to 20: 18 more at once
        assert wait_running(20)
        checks.poll([replica(i) for i in range(100)])
        assert wait_running(20 + MAX_WORKERS)
        # Bounded: the 20 still in the old pool plus a new pool of MAX_WORKERS; the rest wait.
        assert not wait_running(20 + MAX_WORKERS + 1, timeout=0.5)
    finally:
        release.set()
        checks.close()

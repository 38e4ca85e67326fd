"""App-level health checks, one replica at a time, off the reconcile loop.

A request to the shared port may land on any replica, so it cannot check one. Each replica
instead gets a port of its own (``HEALTH_PORT``, no SO_REUSEPORT) answered by that process
alone, or a command run inside its container. Checks run in worker threads; the loop only
reads their outcome: passed at least once (ready), and failures in a row (unhealthy).

The pool has a worker per replica (up to ``MAX_WORKERS``, growing when the service is
scaled), and a check's timeout runs from when a worker starts it: with a fixed small pool,
checks of healthy replicas queued behind the others and timed out while waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

from reuseport.engine.base import Engine, Replica
from reuseport.errors import ReuseportError
from reuseport.policies import HealthPolicy


class HealthCheckFailed(Exception):
    """One check failed; the message says how."""


Check = Callable[[Replica], None]  # returns when healthy, raises HealthCheckFailed
Observe = Callable[[float, bool], None]  # (seconds the check took, passed)


def http_check(policy: HealthPolicy) -> Check:
    # Imported here: httpx is a tenth of a second of every CLI start, and only a service
    # with an HTTP health check needs it.
    import httpx

    def check(replica: Replica) -> None:
        if replica.health_port is None:
            raise HealthCheckFailed("it has no HEALTH_PORT (started before the check existed)")
        url = f"http://127.0.0.1:{replica.health_port}{policy.path}"
        try:
            response = httpx.get(url, timeout=policy.timeout)
        except httpx.HTTPError as exc:
            raise HealthCheckFailed(f"GET {url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise HealthCheckFailed(f"GET {url} answered {response.status_code}")

    return check


def command_check(engine: Engine, policy: HealthPolicy) -> Check:
    command = policy.cmd or "true"

    def check(replica: Replica) -> None:
        try:
            code = engine.exec_check(replica.id, command, policy.timeout)
        except ReuseportError as exc:
            raise HealthCheckFailed(str(exc)) from None
        if code != 0:
            raise HealthCheckFailed(f"health command exited with code {code}")

    return check


MAX_WORKERS = 64  # checks at once; an exec or GET mostly waits, so threads are cheap


@dataclass
class Attempt:
    """One submitted check; ``started_at`` is set by the worker when it really starts, so
    time spent queued behind other checks never counts against the timeout."""

    started_at: float | None = None


@dataclass
class HealthState:
    passed: bool = False  # passed at least once since the replica started
    failures: int = 0  # failed checks in a row
    last_error: str = ""
    latency_s: float | None = None  # of the last finished check
    next_at: float = 0.0
    in_flight: Future[None] | None = None
    attempt: Attempt | None = None


class HealthChecks:
    def __init__(
        self,
        policy: HealthPolicy,
        check: Check,
        *,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
        on_result: Observe = lambda seconds, ok: None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.check = check
        self.clock = clock
        # Our own pool grows with the replicas (see _size_pool); an injected one is used as is.
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self.executor: Executor = executor or self._new_pool(1)
        # Checks given up after their timeout that still occupy a worker (an exec cannot
        # be cancelled): the pool keeps a worker for each besides one per replica.
        self._abandoned: set[Future[None]] = set()
        self.on_result = on_result
        self.wake = wake
        self.states: dict[str, HealthState] = {}
        self.failed_total = 0
        # Results arrive on worker threads; re-entrant because a finished future runs its
        # callback in the submitting thread.
        self._lock = threading.RLock()

    def poll(self, replicas: Iterable[Replica]) -> None:
        """Start the checks that are due, time out stuck ones, forget gone replicas."""
        with self._lock:
            self._poll(replicas)

    def _poll(self, replicas: Iterable[Replica]) -> None:
        now = self.clock()
        running = {r.id: r for r in replicas if r.running}
        for container_id in [c for c in self.states if c not in running]:
            del self.states[container_id]
        self._size_pool(len(running) + len(self._abandoned))
        for container_id, replica in running.items():
            state = self.states.setdefault(container_id, HealthState())
            if state.in_flight is not None:
                started = state.attempt.started_at if state.attempt else None
                if started is not None and now - started > self.policy.timeout + 1.0:
                    # An exec cannot be cancelled: give up on it and count a failure.
                    self._abandoned.add(state.in_flight)
                    state.in_flight.add_done_callback(self._abandoned.discard)
                    state.in_flight = state.attempt = None
                    self._record(
                        state, self.policy.timeout, f"timed out after {self.policy.timeout:g}s"
                    )
                continue
            if now >= state.next_at:
                self._start(container_id, replica, state, now)

    def _size_pool(self, wanted: int) -> None:
        """Grow our own pool to one worker per check that may run at once (bounded), so a
        check never waits for a worker behind the other replicas' checks."""
        size = min(max(wanted, 1), MAX_WORKERS)
        if self._pool is None or self.executor is not self._pool or size <= self._pool_size:
            return
        old = self._pool
        self.executor = self._new_pool(size)
        old.shutdown(wait=False)  # what it already runs or queued still finishes

    def _new_pool(self, size: int) -> ThreadPoolExecutor:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="health")
        self._pool_size = size
        return self._pool

    def _start(self, container_id: str, replica: Replica, state: HealthState, now: float) -> None:
        state.next_at = now + self.policy.interval
        attempt = state.attempt = Attempt()
        future = self.executor.submit(self._run, attempt, replica)
        state.in_flight = future
        future.add_done_callback(lambda done: self._finished(container_id, done, attempt))

    def _run(self, attempt: Attempt, replica: Replica) -> None:
        with self._lock:
            attempt.started_at = self.clock()
        self.check(replica)

    def _finished(self, container_id: str, future: Future[None], attempt: Attempt) -> None:
        with self._lock:
            state = self.states.get(container_id)
            if state is None or state.in_flight is not future:
                return  # gone, or given up on after its timeout
            state.in_flight = state.attempt = None
            exc = None if future.cancelled() else future.exception()
            error = "" if exc is None else str(exc) or type(exc).__name__
            started = attempt.started_at
            self._record(state, 0.0 if started is None else self.clock() - started, error)
        self.wake()

    def _record(self, state: HealthState, seconds: float, error: str) -> None:
        state.latency_s = seconds
        if error:
            state.failures += 1
            state.last_error = error
            self.failed_total += 1
        else:
            state.passed = True
            state.failures = 0
        self.on_result(seconds, not error)

    def ready(self, container_id: str) -> bool:
        state = self.states.get(container_id)
        return state is not None and state.passed

    def unhealthy(self, container_id: str) -> str:
        """Why the replica failed its check ``retries`` times in a row, or ""."""
        state = self.states.get(container_id)
        if state is None or state.failures < self.policy.retries:
            return ""
        return f"unhealthy: {state.failures} failed checks in a row, last: {state.last_error}"

    def last_error(self, container_id: str) -> str:
        """How its last check failed ("" when it passed or has not run)."""
        state = self.states.get(container_id)
        return state.last_error if state is not None and state.failures else ""

    def next_due(self) -> float | None:
        due = [s.next_at for s in self.states.values() if s.in_flight is None]
        return min(due) if due else None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None and self._pool is not self.executor:
            self._pool.shutdown(wait=False, cancel_futures=True)

"""The supervisor's loop: wake on events or a resync tick, make one pass, publish.

One thread runs the loop; one thread turns the engine's event stream into wake-ups (events
are wake-ups, never the source of truth: every pass re-lists containers by label). While a
replica has been started but does not listen yet the loop polls the kernel every
``POLL_S`` so a replacement is seen the moment it listens. A pass itself is
:class:`reuseport.reconciler.Reconciler`'s.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from reuseport.engine.base import Engine, Replica
from reuseport.errors import ReplicaFailed, ReuseportError, StateUnreadable
from reuseport.judge import STARTING
from reuseport.kernel import attribution, destroy, sockets
from reuseport.liveness import SUSPECT_POLL_S
from reuseport.reconciler import Evict, Notify, Observer, Reconciler
from reuseport.spec import ServiceSpec, differences
from reuseport.status import ReplicaStatus, ServiceStatus
from reuseport.steering import Opener
from reuseport.store import Lease, StateStore

ListenerTable = dict[int, tuple[str, str, int, int]]  # sockets.listening_inodes: inode -> ...

__all__ = ["EngineLost", "Notify", "Supervisor", "stop_all"]

POLL_S = 0.02  # kernel polling period while a replica is starting
SLOW_POLL_S = 0.25  # ... once it has been starting for STARTING_FAST_S
STEER_POLL_S = 0.2  # kernel reads while steering a port with connections
STARTING_FAST_S = 5.0
HEARTBEAT_S = 2.0  # the status file is rewritten at least this often (ps: STALE_AFTER_S)
BRING_UP_RELIST_S = 0.2  # how often bring-up re-lists containers (it has no event stream)
# While the event stream is connected, containers are re-listed this often (events wake a
# pass with a re-list at once; this only bounds what a silently lost event could hide).
# The kernel is still observed every resync_s. Without a stream: every resync_s.
RELIST_S = 5.0
# While the port has no connection at all, nothing can hang and a death comes as an event:
# the kernel is read every QUIET_RESYNC_S instead of every resync_s (half an idle's cost).
QUIET_RESYNC_S = 2.0
# A detached supervisor that cannot reach the engine for this long exits non-zero: its
# restart policy starts a fresh one (a fresh connection, a fresh event stream).
ENGINE_LOST_EXIT_S = 30.0
PROBLEM_REPEAT_S = 10.0  # how often an unresolved problem is said again
WAKE_ACTIONS = frozenset({"die", "oom", "destroy", "start", "stop", "kill", "pause"})


class EngineLost(ReuseportError):
    """The engine did not answer for ENGINE_LOST_EXIT_S: exit so a fresh supervisor starts."""


class Supervisor(Reconciler):
    def __init__(
        self,
        spec: ServiceSpec,
        engine: Engine,
        store: StateStore,
        *,
        mode: str = "foreground",
        resync_s: float = 1.0,
        relist_s: float = RELIST_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        readiness: Observer = attribution.observe,
        evict: Evict = destroy.close_listener,
        notify: Notify = lambda message: None,
        steering: Opener | None = None,
        read_listeners: Callable[[int], ListenerTable] = sockets.listening_inodes,
    ) -> None:
        super().__init__(
            spec,
            engine,
            mode=mode,
            clock=clock,
            wall=wall,
            readiness=readiness,
            evict=evict,
            notify=notify,
            steering=steering,
        )
        self.store = store
        self.read_listeners = read_listeners
        self.resync_s = resync_s
        self.relist_s = relist_s
        self.events_connected = False  # set by the event watcher while its stream is open
        self.sleep = sleep
        self.wakeups: queue.Queue[Any] = queue.Queue()
        self.wake = lambda: self.wakeups.put("wake")
        self.stopping = threading.Event()
        self._stream: Any = None
        self._spec_mtime: float | None = None
        self._published: tuple[Any, ...] = ()
        self._published_at = float("-inf")
        self._problem_said_at = float("-inf")
        self.lease: Lease | None = None  # held while this supervises (see store.acquire_lease)

    # -- bring-up and the loop ------------------------------------------------------------

    def bring_up(
        self, timeout_s: float, progress: Callable[[ServiceStatus], None] = lambda s: None
    ) -> ServiceStatus:
        """Create what is missing and wait until every replica is ready. Any replica that
        dies before listening fails the bring-up (the caller tears down)."""
        self.strict = True
        try:
            deadline = self.clock() + timeout_s
            while True:
                # No event stream runs yet: re-list often so an early death is seen.
                if self.clock() - self.listed_at >= BRING_UP_RELIST_S:
                    self.stale = True
                status = self.reconcile()
                progress(status)
                if status.converged():
                    return status
                if self.clock() > deadline:
                    missing = [r for r in status.replicas if not r.ready]
                    checked = " and pass the health check" if self.health else ""
                    raise ReplicaFailed(
                        f"replicas {sorted(r.index for r in missing)} did not listen on port "
                        f"{self.spec.port}{checked} within {timeout_s:g}s ("
                        + (self._check_errors(missing) or "does the app bind the PORT it is given?")
                        + ")"
                    )
                self.sleep(POLL_S)
        finally:
            self.strict = False

    def _check_errors(self, rows: Sequence[ReplicaStatus]) -> str:
        """How the health checks of these replicas last failed, for the bring-up's error."""
        if self.health is None:
            return ""
        said = []
        for row in rows:
            error = self.health.last_error(row.container_id) if row.container_id else ""
            if error:
                said.append(f"replica {row.index}'s check: {error}")
        return "; ".join(said)

    def run(self) -> str:
        """Supervise until stopped; returns why: 'stopped' or 'removed' (spec file gone)."""
        watcher = threading.Thread(target=self._watch, name="events", daemon=True)
        watcher.start()
        next_resync = next_relist = 0.0
        answered_at = self.clock()
        try:
            while not self.stopping.is_set():
                now = self.clock()
                if now >= next_resync:
                    quiet = self.resync_s < QUIET_RESYNC_S and self._holdings.still_quiet()
                    next_resync = now + (QUIET_RESYNC_S if quiet else self.resync_s)
                    if now >= next_relist or not self.events_connected:
                        self.stale = True
                if self.stale:
                    next_relist = now + self.relist_s
                try:
                    if not self.follow_spec():
                        return "removed"
                    listed_at = self.listed_at
                    status = self.reconcile()
                    if self.listed_at != listed_at:  # this pass asked the engine
                        answered_at = self.clock()
                    self.publish(status)
                except ReuseportError as exc:
                    # e.g. dockerd restarting: keep supervising, retry on the next tick.
                    lost = self.clock() - answered_at
                    if self.mode == "detached" and lost >= ENGINE_LOST_EXIT_S:
                        raise EngineLost(
                            f"no answer from the engine for {lost:.0f}s ({exc}); exiting so a "
                            "fresh supervisor takes over"
                        ) from exc
                    self.notify(f"reconcile failed ({exc}); retrying")
                    self.stale = True
                    self._sleep(self.resync_s)
                    continue
                wake = self._next_wake(status, next_resync)
                if self._steered_with_traffic():
                    self._sleep_watching_queues(wake)
                else:
                    self._sleep(wake)
            return "stopped"
        finally:
            self.stopping.set()
            self._close_stream()
            if self.health is not None:
                self.health.close()
            # The program stays attached with its members: a next supervisor adopts it.
            self.close_steering(detach=False)

    def release(self) -> None:
        """Give up the service's lease (after the last pass)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def stop(self) -> None:
        self.stopping.set()
        self.wakeups.put("stop")
        self._close_stream()

    def drain(self) -> None:
        """Gracefully stop and remove every replica in parallel (after supervision ended)."""
        self._removals.shutdown(wait=True)
        stop_all(self.engine, self.engine.replicas(self.spec.name), self.spec.stop_timeout)

    def _next_wake(self, status: ServiceStatus, next_resync: float) -> float:
        now = self.clock()
        starting = [r for r in self.records if self._verdict_kind(r.container_id) == STARTING]
        if starting:
            # Poll fast while a replica comes up, slower if it takes long (it is replaced
            # once --start-timeout passes).
            fast = any(now - r.first_seen < STARTING_FAST_S for r in starting)
            return POLL_S if fast else SLOW_POLL_S
        waiting = [r.retry_at for r in status.replicas if r.retry_at is not None]
        if status.desired is not None and status.running < status.desired and not waiting:
            return POLL_S
        wake = next_resync - now
        if waiting:
            wake = min(wake, min(waiting) - status.at)
        due = self.health.next_due() if self.health else None
        if due is not None:
            wake = min(wake, due - now)
        if self.spec.health.hang_window > 0 and any(r.stall for r in self.records):
            wake = min(wake, SUSPECT_POLL_S)
        min_ready = self.spec.rollout.min_ready_s
        for since in (r.ready_since for r in self.records):
            if since is not None and now - since < min_ready:  # a rollout waits on it
                wake = min(wake, since + min_ready - now)
        return max(POLL_S, wake)

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until an event; True when an event woke it."""
        try:
            self.wakeups.get(timeout=seconds)
        except queue.Empty:
            return False
        self.stale = True
        while True:  # coalesce a burst of events into one pass
            try:
                self.wakeups.get_nowait()
            except queue.Empty:
                return True

    def _steered_with_traffic(self) -> bool:
        return self.steering.steerer is not None and not self._holdings.still_quiet()

    def _sleep_watching_queues(self, seconds: float) -> None:
        """Steered, with connections flowing: a replica that stops accepting must leave the
        map within STEER_POLL_S + judge.SUSPECT_AFTER_S. Only a listener holding queued
        connections can be stalled, so between passes only the port's listeners are read
        (one sock_diag dump, ~0.1 ms), every STEER_POLL_S: a queue, or a listener come or
        gone, makes a pass at once. With keep-alive clients the queues stay empty and the
        passes keep their resync pace (each pass costs ~10x a listener read)."""
        deadline = self.clock() + seconds
        known: set[int] | None = None  # the listeners at the first read
        while True:
            left = deadline - self.clock()
            if left < STEER_POLL_S:  # the rest of the wait: the pass reads everything next
                if left > 0:
                    self._sleep(left)
                return
            if self._sleep(STEER_POLL_S):
                return
            try:
                now = self.read_listeners(self.spec.port)
            except OSError:
                return
            known = set(now) if known is None else known
            if set(now) != known or any(queued for *_, queued in now.values()):
                return

    def follow_spec(self, force: bool = False) -> bool:
        """Follow the desired spec in the store when it changed (``force``: whatever its
        mtime says); False once it is gone (`down`). A spec that cannot be read keeps the
        service running as it is and is reported until fixed."""
        mtime = self.store.spec_mtime(self.spec.name)
        if mtime is None:
            return False
        if mtime == self._spec_mtime and not force:
            return True
        try:
            stored = self.store.load_spec(self.spec.name)
        except StateUnreadable as exc:
            self._problem(f"{exc}; supervising with the last good spec until it is fixed")
            return True
        self._spec_mtime = mtime
        self.problem = ""
        if stored is None:
            return False
        if stored.replicas != self.spec.replicas:
            self.notify(f"scaling {self.spec.name} from {self.spec.replicas} to {stored.replicas}")
        if stored.spec_hash() != self.spec.spec_hash():
            change = "; ".join(differences(self.spec, stored))
            self.notify(f"rolling {self.spec.name} out ({change})")
        if stored.health != self.spec.health:
            self.set_health(stored.health)
        self.spec = stored
        self.book.policy = stored.backoff
        return True

    def _problem(self, message: str) -> None:
        self.problem = message
        now = self.clock()
        if now - self._problem_said_at >= PROBLEM_REPEAT_S:
            self._problem_said_at = now
            self.notify(f"PROBLEM: {message}")

    def _watch(self) -> None:
        while not self.stopping.is_set():
            try:
                self._stream = self.engine.events(self.spec.name)
                self.events_connected = True
                for event in self._stream:
                    if event.get("Action", "").split(":")[0] in WAKE_ACTIONS:
                        self.wakeups.put(event)
            except Exception:  # noqa: BLE001 - a broken stream is retried; resync covers the gap
                pass
            finally:
                self.events_connected = False
            if not self.stopping.is_set():
                self.wakeups.put("reconnect")
                self.stopping.wait(1.0)

    def _close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # closing a dead stream is harmless
                stream.close()

    def publish_now(self, status: ServiceStatus) -> None:
        """Write the status file now, whatever the heartbeat says."""
        self._published_at = float("-inf")
        self.publish(status)

    def publish(self, status: ServiceStatus) -> None:
        """Write the status file on a change of verdicts, else at the heartbeat (``ps``
        tells a live supervisor from a stale one by its age)."""
        # Compared as objects, not as their JSON: an idle pass turns nothing into JSON.
        essence = _essence(status)
        now = self.clock()
        if essence == self._published and now - self._published_at < HEARTBEAT_S:
            return
        self._published, self._published_at = essence, now
        try:
            self.store.save_status(self.spec.name, status.to_json())
        except ReuseportError as exc:
            self._problem(str(exc))


def _essence(status: ServiceStatus) -> tuple[Any, ...]:
    """What makes a status worth writing before the heartbeat: all of it but the pass's
    time, foreign listeners and the replicas' rows beyond their verdicts. Epoch times move
    by a hair on every pass (two clocks read a moment apart): they are compared rounded,
    or the file would be rewritten on every pass."""
    indices = {
        i: replace(s, retry_at=round(s.retry_at, 1) if s.retry_at else None)
        for i, s in status.indices.items()
    }
    rows = tuple((r.container_id, r.verdict, r.state, r.why) for r in status.replicas)
    return replace(status, at=0.0, replicas=(), foreign=(), indices={}), indices, rows


def stop_all(engine: Engine, replicas: list[Replica], timeout_s: float) -> None:
    """Graceful stop (SIGTERM, SIGKILL after the timeout) and removal, all in parallel."""
    if not replicas:
        return
    with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
        for future in [pool.submit(engine.stop_replica, r.id, timeout_s) for r in replicas]:
            future.result()

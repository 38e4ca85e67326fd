"""The reconcile loop: wake on events or a resync tick, observe, plan, apply.

One thread runs the loop; one thread turns the engine's event stream into wake-ups (events
are wake-ups, never the source of truth: every pass re-lists containers by label). While a
replica has been started but does not listen yet the loop polls the kernel every
``POLL_S`` so a replacement is seen the moment it listens. Clock, engine, store and
readiness probe are injectable so tests can replay scripted histories.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reuseport import controller
from reuseport.backoff import BackoffBook
from reuseport.controller import Create, Fail, Observed, Remove, Replace, Wait
from reuseport.engine.base import Engine, Replica
from reuseport.errors import EngineError, ReplicaFailed, ReuseportError, ReusePortMissing
from reuseport.health import HealthChecks, Observe, command_check, http_check
from reuseport.kernel import attribution, destroy
from reuseport.kernel.attribution import PortObservation
from reuseport.liveness import SUSPECT_POLL_S, HangDetector
from reuseport.spec import HealthPolicy, ServiceSpec, differences
from reuseport.store import StateStore

POLL_S = 0.02  # kernel polling period while a replica is starting
HEARTBEAT_S = 1.0  # the status file is rewritten at least this often
BRING_UP_RELIST_S = 0.2  # how often bring-up re-lists containers (it has no event stream)
WAKE_ACTIONS = frozenset({"die", "oom", "destroy", "start", "stop", "kill"})
BIND_CONFLICT_MARKERS = ("address already in use", "eaddrinuse", "errno 98")
# How often established connections are read (hang detection, the kernel view): the
# listener-only reads of the fast readiness polling cost less.
DETAIL_S = 0.5
# A failing replica whose accept queue has not moved for this long is not accepting: its
# listener is closed for it before it is stopped (see _evict).
STALLED_EVICT_S = 1.0

Observer = Callable[..., PortObservation]  # the signature of attribution.observe
Evict = Callable[[int, int], bool]  # (port, listener inode) -> closed
Notify = Callable[[str], None]


def death_kind(reason: str) -> str:
    """A short label for why a replica was replaced (metrics, status)."""
    lowered = reason.lower()
    if "oom" in lowered:
        return "oom"
    if "outside reuseport" in lowered:
        return "removed"
    if "so_reuseport" in lowered:
        return "bind-conflict"
    if lowered.startswith(("hung", "unhealthy")):
        return lowered.split(":", 1)[0]
    return "exited"


@dataclass(frozen=True)
class Snapshot:
    """What the supervisor knows after one pass (for the live table and status file)."""

    spec: ServiceSpec
    replicas: tuple[Replica, ...]
    listening: dict[str, int]  # container id -> listening host pid
    waiting: dict[int, float]  # index -> seconds until the next attempt
    ready_ids: frozenset[str] = frozenset()  # listening and, if configured, health passed
    port: PortObservation | None = None  # the last full read of the port
    failing: dict[str, str] | None = None  # container id -> why it is being replaced

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.id in self.ready_ids)


class Supervisor:
    def __init__(
        self,
        spec: ServiceSpec,
        engine: Engine,
        store: StateStore,
        *,
        mode: str = "foreground",
        resync_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        readiness: Observer = attribution.observe,
        evict: Evict = destroy.close_listener,
        notify: Notify = lambda message: None,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.store = store
        self.mode = mode
        self.resync_s = resync_s
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.readiness = readiness
        self.evict = evict
        self.notify = notify
        self.book = BackoffBook(spec.backoff)
        self.snapshot = Snapshot(spec, (), {}, {})
        # Liveness: the kernel's hang signal, and the app-level check when configured.
        self.hangs = HangDetector(spec.health.hang_window)
        self.health_observers: list[Observe] = []  # e.g. the metrics' latency histogram
        self.health: HealthChecks | None = None
        self._set_health(spec.health)
        self.replacements: Counter[str] = Counter()  # replacements by death_kind
        self.port_view = PortObservation(spec.port)
        self._failing: dict[str, str] = {}
        self._replaced: set[str] = set()
        self._foreign_seen: set[int] = set()
        self._detail_at = float("-inf")
        self._all: list[Replica] = []  # including replicas being drained
        self.wakeups: queue.Queue[Any] = queue.Queue()
        self.stopping = threading.Event()
        self._replicas: list[Replica] = []
        self._stale = True
        self._removing: set[str] = set()
        self._removals = ThreadPoolExecutor(max_workers=16, thread_name_prefix="remove")
        self._stream: Any = None
        self._spec_mtime = 0.0
        # container id -> when it was first seen listening (readiness age for min-ready)
        self._ever_ready: dict[str, float] = {}
        self._removed_by_us: set[str] = set()
        self._listed_at = 0.0
        self._strict = False
        self._published: dict[str, Any] = {}
        self._published_at = 0.0

    # -- one pass ----------------------------------------------------------------------

    def reconcile(self) -> Snapshot:
        now = self.clock()
        if self._stale:
            self._stale = False
            self._listed_at = now
            previous = {r.id: r.index for r in self._replicas}
            self._all = self.engine.replicas(self.spec.name)
            self._replicas = [r for r in self._all if r.id not in self._removing]
            self._count_vanished(previous, now)
        detail = now - self._detail_at >= DETAIL_S
        observation = self.readiness(
            self.spec.port,
            self._all,
            connections=detail,
            known_foreign={f.inode: f for f in self.port_view.foreign},
        )
        if detail:
            self._detail_at = now
            self.port_view = observation
            self._note_foreign(observation)
        listening = observation.listening
        if self.health is not None:
            self.health.poll(self._replicas)
        present = {r.id for r in self._all}
        self.hangs.forget(present)
        self._failing = {c: why for c, why in self._failing.items() if c in present}
        self._replaced &= present  # a removed container never comes back
        observed = []
        ready_ids = set()
        for replica in self._replicas:
            slot = self.book.slot(replica.index)
            # An adopted replica carries its restart count in a label.
            slot.restarts = max(slot.restarts, replica.restarts)
            listens = replica.id in listening
            if detail or self.hangs.suspects:
                sockets = observation.replicas.get(replica.id)
                self.hangs.observe(replica.id, sockets, now, with_connections=detail)
            if listens and replica.id not in self._failing:
                why = self.hangs.hung(replica.id, now)
                why = why or (self.health.unhealthy(replica.id) if self.health else "")
                if why:
                    self._failing[replica.id] = why
            ready = listens and (self.health is None or self.health.ready(replica.id))
            if ready:
                ready_ids.add(replica.id)
                self._ever_ready.setdefault(replica.id, now)
                self.book.record_ready(replica.index, now)
            elif replica.running:
                self.book.record_not_ready(replica.index)
            observed.append(
                Observed(
                    replica.id,
                    replica.index,
                    replica.running,
                    ready,
                    replica.started_at or 0.0,
                    replica.exit_reason(),
                    replica.spec_hash,
                    now - self._ever_ready[replica.id] if ready else 0.0,
                    self._failing.get(replica.id, ""),
                )
            )
        actions = controller.plan(
            self.spec.replicas,
            observed,
            self.book.slots,
            self.spec.backoff,
            now,
            self.spec.spec_hash(),
            self.spec.rollout,
            draining=len(self._removing),
        )
        self._apply(actions, now)
        waiting = {a.index: max(0.0, a.until - now) for a in actions if isinstance(a, Wait)}
        self.snapshot = Snapshot(
            self.spec,
            tuple(self._replicas),
            listening,
            waiting,
            frozenset(ready_ids),
            self.port_view,
            dict(self._failing),
        )
        return self.snapshot

    def _note_foreign(self, observation: PortObservation) -> None:
        """Say once when a listener that is not ours joins the port; never touch it."""
        inodes = {f.inode for f in observation.foreign}
        for foreign in observation.foreign:
            if foreign.inode not in self._foreign_seen:
                self.notify(
                    f"foreign listener on port {self.spec.port}: {foreign.describe()}; if it "
                    "has SO_REUSEPORT and our uid it takes a share of the connections "
                    "(reuseport leaves it alone)"
                )
        self._foreign_seen = inodes

    def _set_health(self, policy: HealthPolicy) -> None:
        if self.health is not None:
            self.health.close()
            self.health = None
        self.hangs.window_s = policy.hang_window
        if not policy.app_check:
            return
        check = http_check(policy) if policy.port_base else command_check(self.engine, policy)
        self.health = HealthChecks(
            policy,
            check,
            clock=self.clock,
            on_result=self._health_result,
            wake=lambda: self.wakeups.put("health"),
        )

    def _count_vanished(self, previous: dict[str, int], now: float) -> None:
        """A container removed behind our back (``docker rm -f``) died too: count it."""
        current = {r.id for r in self._replicas}
        for container_id, index in previous.items():
            if container_id in current:
                continue
            self._ever_ready.pop(container_id, None)  # gone for good: forget it
            if container_id in self._removed_by_us:
                self._removed_by_us.discard(container_id)
                continue
            if index > self.spec.replicas:
                continue
            self._record_failure(
                Fail(index, container_id, "container was removed outside reuseport", now), now
            )

    def _apply(self, actions: list[controller.Action], now: float) -> None:
        # Order for speed: count deaths, start replacements, then clean up the dead.
        for action in actions:
            if isinstance(action, Fail):
                self._record_failure(action, now)
            elif isinstance(action, Replace):
                self._record_replacement(action)
        for action in actions:
            if isinstance(action, Create):
                self._create(action.index, now)
        for action in actions:
            if isinstance(action, Remove):
                self._remove(action)
        for index in [i for i in self.book.slots if i > self.spec.replicas]:
            self.book.forget(index)

    def _record_failure(self, action: Fail, now: float) -> None:
        reason = action.reason
        if action.container_id not in self._ever_ready and self._bind_conflict(action.container_id):
            reason = (
                f"cannot bind port {self.spec.port} beside its siblings: the app must set "
                "SO_REUSEPORT on its listening socket"
            )
            if self._strict:
                raise ReusePortMissing(
                    f"replica {action.index} exited because port {self.spec.port} is held by a "
                    "sibling: the app must set SO_REUSEPORT on its listening socket before bind()"
                )
        elif self._strict and action.container_id not in self._ever_ready:
            tail = self.engine.last_log_lines(action.container_id, 1)
            said = f"; last log line: {tail[-1].strip()}" if tail else ""
            raise ReplicaFailed(
                f"replica {action.index} {reason} before listening on port {self.spec.port}{said}"
            )
        slot = self.book.slot(action.index)
        first = action.container_id not in slot.counted
        retry_at = self.book.record_failure(action.index, action.container_id, reason, now)
        if first:
            self.replacements[death_kind(reason)] += 1
            delay = retry_at - now
            when = "replacing it now" if delay <= 0 else f"retrying in {delay:.1f}s"
            self.notify(f"replica {action.index} {reason}; {when}")

    def _health_result(self, seconds: float, ok: bool) -> None:
        for observer in self.health_observers:
            observer(seconds, ok)

    def _record_replacement(self, action: Replace) -> None:
        if action.container_id in self._replaced:
            return
        self._replaced.add(action.container_id)
        slot = self.book.slot(action.index)
        slot.restarts += 1
        slot.last_error = action.reason
        self.replacements[death_kind(action.reason)] += 1
        self.notify(
            f"replica {action.index} ({action.container_id[:12]}) {action.reason}; "
            "starting its replacement before stopping it"
        )

    def _bind_conflict(self, container_id: str) -> bool:
        siblings_listen = any(
            r.id != container_id for r in self._replicas if r.id in self._ever_ready
        )
        if not siblings_listen:
            return False
        text = " ".join(self.engine.last_log_lines(container_id, 20)).lower()
        return any(marker in text for marker in BIND_CONFLICT_MARKERS)

    def _health_port(self, index: int) -> int | None:
        """Replica i gets ``base + i``; a successor started beside a still-running replica
        (replace before stop, rollout surge) gets the lowest port above ``base + desired``
        that no replica of the service holds."""
        base = self.spec.health.port_base
        if base is None:
            return None
        taken = {r.health_port for r in self._all if r.running or r.state == "created"}
        if base + index not in taken:
            return base + index
        port = base + self.spec.replicas + 1
        while port in taken:
            port += 1
        return port

    def _create(self, index: int, now: float) -> None:
        slot = self.book.slot(index)
        try:
            self.engine.create_replica(self.spec, index, slot.restarts, self._health_port(index))
        except EngineError as exc:
            if self._strict:
                raise
            # Treat a failed creation like a death so backoff applies, not a hot loop.
            self.book.record_failure(index, f"create-failure-{now}", str(exc), now)
            self.replacements["create-failed"] += 1
            self.notify(f"replica {index}: {exc}")
        self._stale = True

    def _remove(self, action: Remove) -> None:
        self._removed_by_us.add(action.container_id)
        if not action.graceful:
            self.engine.remove_replica(action.container_id)
            self._stale = True
            return
        self._removing.add(action.container_id)
        what = {"outdated": "old-template", "failing": "failing"}.get(action.why, "surplus")
        self.notify(f"draining {what} replica {action.index} ({action.container_id[:12]})")
        if action.why == "failing" and self._not_accepting(action.container_id):
            self._evict(action.container_id)
        future = self._removals.submit(
            self.engine.stop_replica, action.container_id, self.spec.stop_timeout
        )
        future.add_done_callback(lambda _: self._removed(action.container_id))
        self._stale = True

    def _not_accepting(self, container_id: str) -> bool:
        """Hung, or failing its health check while its queue is not being taken from
        (a stopped process fails both): SIGTERM would not get it to close its listener."""
        if self._failing.get(container_id, "").startswith("hung"):
            return True
        return self.hangs.stalled_for(container_id, self.clock()) >= STALLED_EVICT_S

    def _evict(self, container_id: str) -> None:
        """A hung replica would never close its listener, and SIGTERM cannot reach a
        stopped process: close it for it so the kernel stops handing it connections (and,
        with tcp_migrate_req, moves the ones it left waiting to the live replicas)."""
        sockets = self.port_view.replicas.get(container_id)
        for inode in sockets.listeners if sockets else ():
            try:
                closed = self.evict(self.spec.port, inode)
            except OSError as exc:
                self.notify(f"could not close the hung replica's listener: {exc}")
                return
            if closed:
                self.notify(f"closed listener {inode} of hung {container_id[:12]}")

    def _removed(self, container_id: str) -> None:
        self._removing.discard(container_id)
        self.wakeups.put("removed")

    # -- bring-up and the loop ------------------------------------------------------------

    def bring_up(
        self, timeout_s: float, progress: Callable[[Snapshot], None] = lambda s: None
    ) -> Snapshot:
        """Create what is missing and wait until every replica listens. Any replica that
        dies before listening fails the bring-up (the caller tears down)."""
        self._strict = True
        try:
            deadline = self.clock() + timeout_s
            while True:
                # No event stream runs yet: re-list often so an early death is seen.
                if self.clock() - self._listed_at >= BRING_UP_RELIST_S:
                    self._stale = True
                snapshot = self.reconcile()
                progress(snapshot)
                if (
                    snapshot.ready == self.spec.replicas
                    and len(snapshot.replicas) == self.spec.replicas
                ):
                    return snapshot
                if self.clock() > deadline:
                    missing = sorted(
                        r.index for r in snapshot.replicas if r.id not in snapshot.ready_ids
                    )
                    checked = " and pass the health check" if self.health else ""
                    raise ReplicaFailed(
                        f"replicas {missing} did not listen on port {self.spec.port}{checked} "
                        f"within {timeout_s:g}s (does the app bind the PORT it is given?)"
                    )
                self.sleep(POLL_S)
        finally:
            self._strict = False

    def run(self) -> str:
        """Supervise until stopped; returns why: 'stopped' or 'removed' (spec file gone)."""
        watcher = threading.Thread(target=self._watch, name="events", daemon=True)
        watcher.start()
        next_resync = 0.0
        try:
            while not self.stopping.is_set():
                now = self.clock()
                if now >= next_resync:
                    next_resync = now + self.resync_s
                    self._stale = True
                try:
                    if not self._reload_spec():
                        return "removed"
                    snapshot = self.reconcile()
                    self._publish(snapshot)
                except ReuseportError as exc:
                    # e.g. dockerd restarting: keep supervising, retry on the next tick.
                    self.notify(f"reconcile failed ({exc}); retrying")
                    self._stale = True
                    self._sleep(self.resync_s)
                    continue
                self._sleep(self._next_wake(snapshot, next_resync))
            return "stopped"
        finally:
            self.stopping.set()
            self._close_stream()
            if self.health is not None:
                self.health.close()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeups.put("stop")
        self._close_stream()

    def drain(self) -> None:
        """Gracefully stop and remove every replica in parallel (after supervision ended)."""
        self._removals.shutdown(wait=True)
        stop_all(self.engine, self.engine.replicas(self.spec.name), self.spec.stop_timeout)

    def _next_wake(self, snapshot: Snapshot, next_resync: float) -> float:
        now = self.clock()
        starting = any(r.running and r.id not in snapshot.listening for r in snapshot.replicas)
        if starting or len(snapshot.replicas) < self.spec.replicas and not snapshot.waiting:
            return POLL_S
        wake = next_resync - now
        if snapshot.waiting:
            wake = min(wake, min(snapshot.waiting.values()))
        due = self.health.next_due() if self.health else None
        if due is not None:
            wake = min(wake, due - now)
        if self.hangs.suspects and self.hangs.window_s > 0:
            wake = min(wake, SUSPECT_POLL_S)
        min_ready = self.spec.rollout.min_ready_s
        for since in (self._ever_ready.get(r.id) for r in snapshot.replicas):
            if since is not None and now - since < min_ready:  # a rollout waits on it
                wake = min(wake, since + min_ready - now)
        return max(POLL_S, wake)

    def _sleep(self, seconds: float) -> None:
        try:
            self.wakeups.get(timeout=seconds)
        except queue.Empty:
            return
        self._stale = True
        while True:  # coalesce a burst of events into one pass
            try:
                self.wakeups.get_nowait()
            except queue.Empty:
                return

    def _reload_spec(self) -> bool:
        mtime = self.store.spec_mtime(self.spec.name)
        if mtime is None:
            return False
        if mtime != self._spec_mtime:
            self._spec_mtime = mtime
            stored = self.store.load_spec(self.spec.name)
            if stored is None:
                return False
            if stored.replicas != self.spec.replicas:
                self.notify(
                    f"scaling {self.spec.name} from {self.spec.replicas} to {stored.replicas}"
                )
            if stored.spec_hash() != self.spec.spec_hash():
                change = "; ".join(differences(self.spec, stored))
                self.notify(f"rolling {self.spec.name} out ({change})")
            if stored.health != self.spec.health:
                self._set_health(stored.health)
            self.spec = stored
            self.book.policy = stored.backoff
        return True

    def _watch(self) -> None:
        while not self.stopping.is_set():
            try:
                self._stream = self.engine.events(self.spec.name)
                for event in self._stream:
                    if event.get("Action", "").split(":")[0] in WAKE_ACTIONS:
                        self.wakeups.put(event)
            except Exception:  # noqa: BLE001 - a broken stream is retried; resync covers the gap
                pass
            if not self.stopping.is_set():
                self.wakeups.put("reconnect")
                self.stopping.wait(1.0)

    def _close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # closing a dead stream is harmless
                stream.close()

    def _publish(self, snapshot: Snapshot) -> None:
        now, wall = self.clock(), self.wall()
        slots = {
            str(index): {
                "restarts": slot.restarts,
                "failures": slot.failures,
                "last_error": slot.last_error,
                "retry_at": wall + (slot.retry_at - now) if slot.retry_at > now else None,
            }
            for index, slot in self.book.slots.items()
        }
        status = {
            "mode": self.mode,
            "desired": self.spec.replicas,
            "spec_hash": self.spec.spec_hash(),
            "slots": slots,
            "replacements": dict(self.replacements),
            "failing": dict(self._failing),
            # listening, but its app-level check has not passed yet: not ready
            "awaiting_health": sorted(set(snapshot.listening) - snapshot.ready_ids),
        }
        # The loop polls every few ms while replicas start: write only on change or heartbeat.
        if status == self._published and wall - self._published_at < HEARTBEAT_S:
            return
        self._published, self._published_at = status, wall
        self.store.save_status(
            self.spec.name, {**status, "supervisor": {"pid": os.getpid(), "heartbeat": wall}}
        )


def stop_all(engine: Engine, replicas: list[Replica], timeout_s: float) -> None:
    """Graceful stop (SIGTERM, SIGKILL after the timeout) and removal, all in parallel."""
    if not replicas:
        return
    with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
        for future in [pool.submit(engine.stop_replica, r.id, timeout_s) for r in replicas]:
            future.result()

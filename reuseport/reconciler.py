"""One pass of the supervisor: observe -> judge -> plan -> apply -> publish.

- observe: the engine's listing (only when stale: an event, a resync or our own change),
  one read of the port from the kernel, the app-level checks' latest results;
- judge: :func:`reuseport.judge.judge` per container, pure, into its record;
- plan: :func:`reuseport.controller.plan`, pure;
- apply: engine calls (create, stop, remove, unpause) and the listener eviction;
- publish: one :class:`ServiceStatus` that every reader uses.

Clock, engine, kernel reader and evictor are injectable so tests replay scripted histories.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace

from reuseport import controller, judge, liveness
from reuseport.backoff import BackoffBook
from reuseport.controller import Create, Fail, Observed, Remove, Replace, Wait
from reuseport.engine.base import Engine, Replica
from reuseport.errors import EngineError, ReplicaFailed, ReusePortMissing
from reuseport.health import HealthChecks, Observe, command_check, http_check
from reuseport.judge import Verdict
from reuseport.kernel import attribution, destroy
from reuseport.kernel.attribution import PortObservation
from reuseport.records import Records
from reuseport.spec import HealthPolicy, ServiceSpec
from reuseport.status import IndexStatus, ReplicaStatus, ServiceStatus, Sockets

# How often established connections are read (hang detection, the kernel view): the
# listener-only reads of the fast readiness polling cost less.
DETAIL_S = 0.5
# A failing replica whose accept queue has not moved for this long is not accepting: its
# listener is closed for it before it is stopped (see _evict).
STALLED_EVICT_S = 1.0
BIND_CONFLICT_MARKERS = ("address already in use", "eaddrinuse", "errno 98")

Observer = Callable[..., PortObservation]  # the signature of attribution.observe
Evict = Callable[[int, int], bool]  # (port, listener inode) -> closed
Notify = Callable[[str], None]


def pid_namespace() -> int | None:
    """This process's pid namespace: a pid means something only inside the same one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def death_kind(reason: str) -> str:
    """A short label for why a replica was replaced (metrics, status)."""
    lowered = reason.lower()
    if "oom" in lowered:
        return "oom"
    if "outside reuseport" in lowered:
        return "removed"
    if "so_reuseport" in lowered:
        return "bind-conflict"
    if lowered.startswith("never listened"):
        return "never-listened"
    if lowered.startswith(("hung", "unhealthy")):
        return lowered.split(":", 1)[0]
    return "exited"


class Reconciler:
    def __init__(
        self,
        spec: ServiceSpec,
        engine: Engine,
        *,
        mode: str = "foreground",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        readiness: Observer = attribution.observe,
        evict: Evict = destroy.close_listener,
        notify: Notify = lambda message: None,
        app_checks: bool = True,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.mode = mode
        self.clock = clock
        self.wall = wall
        self.readiness = readiness
        self.evict = evict
        self.notify = notify
        self.book = BackoffBook(spec.backoff)
        self.records = Records()
        self.replacements: Counter[str] = Counter()  # replacements by death_kind
        self.health_observers: list[Observe] = []  # e.g. the metrics' latency histogram
        self.health: HealthChecks | None = None
        if app_checks:
            self.set_health(spec.health)
        self.port_view = PortObservation(spec.port)
        self.status = ServiceStatus(spec.name, spec.port, spec.image, spec.replicas, "", 0.0)
        self.problem = ""  # something the user must fix, shown in every status
        self.stale = True  # re-list containers on the next pass
        self.strict = False  # bring-up: an early death fails instead of being replaced
        self.listed_at = float("-inf")
        self._listed: list[Replica] = []
        self._foreign_seen: set[int] = set()
        self._detail_at = float("-inf")
        self._verdicts: dict[str, Verdict] = {}
        self._removals = ThreadPoolExecutor(max_workers=16, thread_name_prefix="remove")
        self._stopping: set[Future[None]] = set()  # graceful stops in flight
        self.wake: Callable[[], None] = lambda: None  # the loop's: pass again soon

    # -- the pass -----------------------------------------------------------------------

    def reconcile(self) -> ServiceStatus:
        now = self.clock()
        observation = self._observe(now)
        observed = self._judge(observation, now)
        actions = controller.plan(
            self.spec.replicas,
            observed,
            self.book.slots,
            self.spec.backoff,
            now,
            self.spec.spec_hash(),
            self.spec.rollout,
            draining=sum(1 for r in self.records if r.draining),
        )
        self._apply(actions, now)
        self.status = self._publish(observation, actions, now)
        return self.status

    def _observe(self, now: float) -> PortObservation:
        if self.stale:
            self.stale = False
            self.listed_at = now
            self._listed = self.engine.replicas(self.spec.name)
            for gone in self.records.sync(r.id for r in self._listed):
                if (
                    not gone.removed_by_us
                    and not gone.draining
                    and gone.index <= self.spec.replicas
                ):
                    reason = "container was removed outside reuseport"
                    self._record_failure(Fail(gone.index, gone.container_id, reason, now), now)
            for replica in self._listed:
                self.records.track(replica.id, replica.index, now)
        detail = now - self._detail_at >= DETAIL_S
        observation = self.readiness(
            self.spec.port,
            self._listed,
            connections=detail,
            known_foreign={f.inode: f for f in self.port_view.foreign},
        )
        if detail:
            self._detail_at = now
            self.port_view = observation
            self._note_foreign(observation)
        if self.health is not None:
            self.health.poll([r for r in self._listed if not self._draining(r.id)])
        return observation

    def _judge(self, observation: PortObservation, now: float) -> list[Observed]:
        limits = judge.Limits(
            self.spec.health.hang_window, self.spec.health.start_timeout, self.spec.port
        )
        suspects = any(r.stall for r in self.records)
        observed = []
        self._verdicts = {}
        for replica in self._listed:
            record = self.records.track(replica.id, replica.index, now)
            sockets = observation.replicas.get(replica.id)
            if observation.with_connections or suspects:
                record.stall = liveness.advance(
                    record.stall, sockets, now, observation.with_connections
                )
            health = self.health
            verdict = judge.judge(
                replica,
                record,
                sockets,
                health.ready(replica.id) if health else None,
                health.unhealthy(replica.id) if health else "",
                limits,
                now,
            )
            self._verdicts[replica.id] = verdict
            if verdict.why and not record.failing:
                record.failing = verdict.why
            if verdict.ready:
                if record.ready_since is None:
                    record.ready_since = now
                self.book.record_ready(replica.index, now)
            elif replica.running:
                self.book.record_not_ready(replica.index)
            if record.draining:
                continue
            # An adopted replica carries its restart count in a label.
            slot = self.book.slot(replica.index)
            slot.restarts = max(slot.restarts, replica.restarts)
            observed.append(
                Observed(
                    replica.id,
                    replica.index,
                    # a paused replica holds its index: it is unpaused, not replaced
                    replica.running or verdict.kind == judge.PAUSED,
                    verdict.ready,
                    replica.started_at or 0.0,
                    replica.exit_reason(),
                    replica.spec_hash,
                    now - record.ready_since if verdict.ready and record.ready_since else 0.0,
                    record.failing,
                )
            )
        return observed

    def _apply(self, actions: list[controller.Action], now: float) -> None:
        # Order for speed: count deaths, start replacements, then clean up the dead.
        for action in actions:
            if isinstance(action, Fail):
                self._record_failure(action, now)
            elif isinstance(action, Replace):
                self._record_replacement(action, now)
        for replica in self._listed:
            if self._verdicts.get(replica.id, judge.Verdict(judge.DEAD, False, False)).kind == (
                judge.PAUSED
            ):
                self._unpause(replica)
        for action in actions:
            if isinstance(action, Create):
                self._create(action.index, now)
        for action in actions:
            if isinstance(action, Remove):
                self._remove(action)
        for index in [i for i in self.book.slots if i > self.spec.replicas]:
            self.book.forget(index)

    # -- apply --------------------------------------------------------------------------

    def _record_failure(self, action: Fail, now: float) -> None:
        reason = action.reason
        record = self.records.get(action.container_id)
        ever_ready = record is not None and record.ever_ready
        if not ever_ready and self._bind_conflict(action.container_id):
            reason = (
                f"cannot bind port {self.spec.port} beside its siblings: the app must set "
                "SO_REUSEPORT on its listening socket"
            )
            if self.strict:
                raise ReusePortMissing(
                    f"replica {action.index} exited because port {self.spec.port} is held by a "
                    "sibling: the app must set SO_REUSEPORT on its listening socket before bind()"
                )
        elif self.strict and not ever_ready:
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

    def _record_replacement(self, action: Replace, now: float) -> None:
        """A running replica failed (hung, unhealthy, never listened): count it once, as a
        failure of its index, so a successor that fails too is backed off."""
        record = self.records.get(action.container_id)
        if record is None or record.counted:
            return
        record.counted = True
        self.book.record_failure(action.index, action.container_id, action.reason, now)
        self.replacements[death_kind(action.reason)] += 1
        self.notify(
            f"replica {action.index} ({action.container_id[:12]}) {action.reason}; "
            "starting its replacement before stopping it"
        )

    def _bind_conflict(self, container_id: str) -> bool:
        siblings_listen = any(r.container_id != container_id and r.ever_ready for r in self.records)
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
        taken = {r.health_port for r in self._listed if r.running or r.state == "created"}
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
            if self.strict:
                raise
            # Treat a failed creation like a death so backoff applies, not a hot loop.
            self.book.record_failure(index, f"create-failure-{now}", str(exc), now)
            self.replacements["create-failed"] += 1
            self.notify(f"replica {index}: {exc}")
        self.stale = True

    def _unpause(self, replica: Replica) -> None:
        """Paused outside reuseport: its listener still takes ~1/N of new connections that
        nobody accepts. The supervisor owns the replicas' lifecycle: it resumes it."""
        self.notify(f"replica {replica.index} ({replica.short_id}) is paused; unpausing it")
        try:
            self.engine.unpause_replica(replica.id)
        except EngineError as exc:
            self.notify(f"could not unpause replica {replica.index}: {exc}")
        self.stale = True

    def _remove(self, action: Remove) -> None:
        record = self.records.get(action.container_id)
        if record is not None:
            record.removed_by_us = True
        if not action.graceful:
            self.engine.remove_replica(action.container_id)
            self.stale = True
            return
        if record is not None:
            record.draining = True
        what = {"outdated": "old-template", "failing": "failing"}.get(action.why, "surplus")
        self.notify(f"draining {what} replica {action.index} ({action.container_id[:12]})")
        if action.why == "failing" and self._not_accepting(action.container_id):
            self._evict(action.container_id)
        future = self._removals.submit(
            self.engine.stop_replica, action.container_id, self.spec.stop_timeout
        )
        self._stopping.add(future)
        future.add_done_callback(self._drained)
        self.stale = True

    def _drained(self, future: Future[None]) -> None:
        self._stopping.discard(future)
        self.stale = True
        self.wake()

    def finish_removals(self, timeout_s: float | None = None) -> None:
        """Wait for the graceful stops in flight (teardown; tests replaying histories)."""
        wait(list(self._stopping), timeout=timeout_s)

    def _draining(self, container_id: str) -> bool:
        record = self.records.get(container_id)
        return record is not None and record.draining

    def _not_accepting(self, container_id: str) -> bool:
        """Hung, or failing while its queue is not being taken from (a stopped process
        fails its check too): SIGTERM would not get it to close its listener."""
        record = self.records.get(container_id)
        if record is None:
            return False
        if record.failing.startswith("hung"):
            return True
        return liveness.stalled_for(record.stall, self.clock()) >= STALLED_EVICT_S

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

    def set_health(self, policy: HealthPolicy) -> None:
        if self.health is not None:
            self.health.close()
            self.health = None
        if not policy.app_check:
            return
        check = http_check(policy) if policy.port_base else command_check(self.engine, policy)
        self.health = HealthChecks(
            policy,
            check,
            clock=self.clock,
            on_result=self._health_result,
            wake=lambda: self.wake(),
        )

    def _health_result(self, seconds: float, ok: bool) -> None:
        for observer in self.health_observers:
            observer(seconds, ok)

    # -- publish ------------------------------------------------------------------------

    def _publish(
        self, observation: PortObservation, actions: list[controller.Action], now: float
    ) -> ServiceStatus:
        wall = self.wall()

        def epoch(monotonic: float | None) -> float | None:
            return None if monotonic is None else wall + (monotonic - now)

        port = self.port_view
        total = port.connections
        rows = []
        for replica in self._listed:
            record = self.records.get(replica.id)
            verdict = self._verdicts.get(replica.id)
            if record is None or verdict is None:
                continue
            slot = self.book.slots.get(replica.index)
            held = port.replicas.get(replica.id)
            counted = port.with_connections and replica.running
            rows.append(
                ReplicaStatus(
                    index=replica.index,
                    container_id=replica.id,
                    state=replica.state,
                    verdict=verdict.kind,
                    ready=verdict.ready,
                    listening=verdict.listening,
                    pid=(held.pid if held and held.pid else replica.pid) or None,
                    image=replica.image,
                    spec_hash=replica.spec_hash,
                    started_at=replica.started_at,
                    ready_since=epoch(record.ready_since),
                    restarts=max(replica.restarts, slot.restarts if slot else 0),
                    last_error=slot.last_error if slot else "",
                    why=record.failing,
                    sockets=Sockets(
                        len(held.connections) if held else 0,
                        held.accept_queue if held else 0,
                        held.backlog if held else 0,
                        round(len(held.connections) / total, 3) if held and total else 0.0,
                    )
                    if counted
                    else None,
                )
            )
        waiting = {a.index: a.until for a in actions if isinstance(a, Wait)}
        present = {r.index for r in rows if r.running or r.state == "paused"}
        for index in range(1, self.spec.replicas + 1):
            if index in present:
                continue
            slot = self.book.slots.get(index)
            rows.append(
                ReplicaStatus(
                    index=index,
                    container_id=None,
                    state="backoff" if index in waiting else "pending",
                    verdict="backoff" if index in waiting else "pending",
                    ready=False,
                    listening=False,
                    pid=None,
                    image=self.spec.image,
                    restarts=slot.restarts if slot else 0,
                    retry_at=epoch(waiting.get(index)),
                    last_error=slot.last_error if slot else "",
                )
            )
        indices = {
            i: IndexStatus(
                s.restarts,
                s.failures,
                epoch(s.retry_at) if s.retry_at > now else None,
                s.last_error,
            )
            for i, s in self.book.slots.items()
        }
        return ServiceStatus(
            name=self.spec.name,
            port=self.spec.port,
            image=self.spec.image,
            desired=self.spec.replicas,
            spec_hash=self.spec.spec_hash(),
            at=wall,
            replicas=tuple(sorted(rows, key=lambda r: (r.index, not r.running))),
            indices=indices,
            replacements=dict(self.replacements),
            foreign=port.foreign,
            mode=self.mode,
            supervisor=self.describe(),
            pid=os.getpid(),
            pid_namespace=pid_namespace(),
            problem=self.problem,
            counted=port.with_connections,
        )

    def describe(self) -> str:
        return f"{self.mode} (pid {os.getpid()})"


def observe_unsupervised(
    spec: ServiceSpec,
    engine: Engine,
    published: ServiceStatus | None,
    readiness: Observer = attribution.observe,
) -> ServiceStatus:
    """The verdicts a supervisor would publish for what runs now, made without one (none
    runs, or it went stale): the same observe, judge and publish, nothing applied. Without
    its memory nothing is known to be failing and app-level checks are not run; restarts
    and backoff come from the last status a supervisor published."""
    reconciler = Reconciler(spec, engine, mode="", readiness=readiness, app_checks=False)
    now = reconciler.clock()
    observation = reconciler._observe(now)
    reconciler._judge(observation, now)
    status = reconciler._publish(observation, [], now)
    if published is None:
        return replace(status, supervisor="none")
    restarts = {i: s.restarts for i, s in published.indices.items()}
    rows = tuple(
        replace(r, restarts=max(r.restarts, restarts.get(r.index, 0))) for r in status.replicas
    )
    return replace(
        status,
        replicas=rows,
        indices=published.indices,
        replacements=published.replacements,
        supervisor="none",
        pid=None,
        pid_namespace=None,
    )

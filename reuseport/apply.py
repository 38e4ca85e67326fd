"""The apply step of a pass: engine calls for the plan's actions, and what they mean for
the backoff book and the records (deaths counted once, replacements counted as failures,
graceful stops in flight, a hung replica's listener closed before it is stopped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from reuseport import controller, liveness, steering
from reuseport.backoff import BackoffBook
from reuseport.controller import Create, Fail, Remove, Replace
from reuseport.engine.base import Engine, Replica
from reuseport.errors import EngineError, ReplicaFailed, ReusePortMissing
from reuseport.judge import PAUSED, Verdict
from reuseport.kernel.attribution import PortObservation
from reuseport.records import Records
from reuseport.spec import ServiceSpec

# A failing replica whose accept queue has not moved for this long is not accepting: its
# listener is closed for it before it is stopped (see _evict).
STALLED_EVICT_S = 1.0
DRAIN_QUEUE_S = 2.0  # longest wait for a drained replica's accept queue before its stop
# Creations of one pass run at once: each is two engine round trips that mostly wait on
# dockerd (16 at once brought 16 replicas up in 2.6 s where one after another took 3.3 s).
CREATE_PARALLELISM = 16
BIND_CONFLICT_MARKERS = ("address already in use", "eaddrinuse", "errno 98")

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
    if lowered.startswith("never listened"):
        return "never-listened"
    if lowered.startswith(("hung", "unhealthy")):
        return lowered.split(":", 1)[0]
    return "exited"


class Applier:
    """Mixed into the Reconciler, which owns this state (declared here for the checker)."""

    spec: ServiceSpec
    engine: Engine
    records: Records
    book: BackoffBook
    replacements: Counter[str]
    port_view: PortObservation
    notify: Notify
    evict: Evict
    clock: Callable[[], float]
    wake: Callable[[], None]
    stale: bool
    strict: bool
    _listed: list[Replica]
    _verdicts: dict[str, Verdict]
    _removals: ThreadPoolExecutor
    _stopping: set[Future[None]]
    _steer: Callable[[float], None]
    _steered_listeners: Callable[[Remove], tuple[int, ...]]

    def _verdict_kind(self, container_id: str) -> str | None:
        """The kind of this pass's verdict on a container (None: not judged this pass)."""
        verdict = self._verdicts.get(container_id)
        return verdict.kind if verdict is not None else None

    def _apply(self, actions: list[controller.Action], now: float) -> None:
        # Order for speed: count deaths, start replacements, then clean up the dead.
        for action in actions:
            if isinstance(action, Fail):
                self._record_failure(action, now)
            elif isinstance(action, Replace):
                self._record_replacement(action, now)
        for replica in self._listed:
            if self._verdict_kind(replica.id) == PAUSED:
                self._unpause(replica)
        self._create_all([a.index for a in actions if isinstance(a, Create)], now)
        removals = [a for a in actions if isinstance(a, Remove)]
        for action in removals:
            self._mark_removed(action)
        # Membership before the stops: a draining replica leaves the steering map first, so
        # its queue only empties from then on (see _stop_when_accepted).
        self._steer(now)
        for action in removals:
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

    def _health_ports(self, indices: list[int]) -> dict[int, int | None]:
        """Replica i gets ``base + i``; a successor started beside a still-running replica
        (replace before stop, rollout surge) gets the lowest port above ``base + desired``
        that no replica of the service holds and no other creation of this pass got."""
        base = self.spec.health.port_base
        if base is None:
            return {index: None for index in indices}
        taken = {r.health_port for r in self._listed if r.running or r.state == "created"}
        ports: dict[int, int | None] = {}
        for index in indices:
            port = base + index
            if port in taken:
                port = base + self.spec.replicas + 1
                while port in taken:
                    port += 1
            taken.add(port)
            ports[index] = port
        return ports

    def _create_all(self, indices: list[int], now: float) -> None:
        if not indices:
            return
        ports = self._health_ports(indices)
        restarts = {index: self.book.slot(index).restarts for index in indices}

        def create(index: int) -> EngineError | None:
            try:
                self.engine.create_replica(self.spec, index, restarts[index], ports[index])
            except EngineError as exc:
                return exc
            return None

        if len(indices) == 1:
            failures = [create(indices[0])]
        else:
            with ThreadPoolExecutor(
                max_workers=min(len(indices), CREATE_PARALLELISM), thread_name_prefix="create"
            ) as pool:
                failures = list(pool.map(create, indices))
        self.stale = True
        for index, exc in zip(indices, failures, strict=True):
            if exc is None:
                continue
            if self.strict:
                raise exc
            # Treat a failed creation like a death so backoff applies, not a hot loop.
            self.book.record_failure(index, f"create-failure-{now}", str(exc), now)
            self.replacements["create-failed"] += 1
            self.notify(f"replica {index}: {exc}")

    def _stop_when_accepted(self, container_id: str, listeners: tuple[int, ...]) -> None:
        """Out of the steering map, a replica gets no new connection: let it accept what
        its queue holds (bounded), then stop it, so SIGTERM resets no queued connection
        whatever tcp_migrate_req says."""
        if listeners:
            steering.wait_accepted(self.spec.port, listeners, DRAIN_QUEUE_S)
        self.engine.stop_replica(container_id, self.spec.stop_timeout)

    def _unpause(self, replica: Replica) -> None:
        """Paused outside reuseport: its listener still takes ~1/N of new connections that
        nobody accepts. The supervisor owns the replicas' lifecycle: it resumes it."""
        self.notify(f"replica {replica.index} ({replica.short_id}) is paused; unpausing it")
        try:
            self.engine.unpause_replica(replica.id)
        except EngineError as exc:
            self.notify(f"could not unpause replica {replica.index}: {exc}")
        self.stale = True

    def _mark_removed(self, action: Remove) -> None:
        record = self.records.get(action.container_id)
        if record is not None:
            record.removed_by_us = True
            record.draining = record.draining or action.graceful

    def _remove(self, action: Remove) -> None:
        if action.why == "unstarted":
            self.notify(
                f"replica {action.index} ({action.container_id[:12]}) was created but never "
                "started (its creator stopped in between): removing it, a new one takes its place"
            )
        if not action.graceful:
            self.engine.remove_replica(action.container_id)
            self.stale = True
            return
        what = {"outdated": "old-template", "failing": "failing"}.get(action.why, "surplus")
        self.notify(f"draining {what} replica {action.index} ({action.container_id[:12]})")
        if action.why == "failing" and self._not_accepting(action.container_id):
            self._evict(action.container_id)
        future = self._removals.submit(
            self._stop_when_accepted, action.container_id, self._steered_listeners(action)
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

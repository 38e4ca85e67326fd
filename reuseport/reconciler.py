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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from reuseport import controller, judge, liveness, publish, steering
from reuseport.apply import Applier, Evict, Notify
from reuseport.backoff import BackoffBook
from reuseport.controller import Fail, Observed, Remove, Wait
from reuseport.engine.base import Engine, Replica
from reuseport.errors import ReuseportError
from reuseport.health import HealthChecks, Observe, command_check, http_check
from reuseport.judge import Verdict
from reuseport.kernel import attribution, destroy
from reuseport.kernel.attribution import PortObservation
from reuseport.kernel.holdings import Holdings
from reuseport.policies import HealthPolicy
from reuseport.records import Records
from reuseport.spec import ServiceSpec
from reuseport.status import ServiceStatus
from reuseport.steering import Opener, SteeringState

# How often established connections are read (hang detection, the kernel view): the
# listener-only reads of the fast readiness polling cost less.
DETAIL_S = 0.5

Observer = Callable[..., PortObservation]  # the signature of attribution.observe


def pid_namespace() -> int | None:
    """This process's pid namespace: a pid means something only inside the same one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


class Reconciler(Applier):
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
        steering: Opener | None = None,
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
        # Who holds which socket, kept between passes: an idle pass reads no process tree.
        self._holdings = Holdings()
        self._verdicts: dict[str, Verdict] = {}
        self._removals = ThreadPoolExecutor(max_workers=16, thread_name_prefix="remove")
        self._stopping: set[Future[None]] = set()  # graceful stops in flight
        self.wake: Callable[[], None] = lambda: None  # the loop's: pass again soon
        # Steering (see reuseport.steering): None opener = the kernel's hash, said nowhere.
        self._steer_open = steering
        self.steering = SteeringState()
        self._observation = PortObservation(spec.port)  # this pass's read of the port
        self._membership: dict[str, str] = {}  # container id -> why not in the map
        self._steer_said: set[str] = set()

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
        self.status = self._publish(actions, now)
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
        detail = now - self._detail_at >= DETAIL_S
        observation = self.readiness(
            self.spec.port,
            self._listed,
            connections=detail,
            known_foreign={f.inode: f for f in self.port_view.foreign},
            cache=self._holdings,
        )
        if detail:
            self._detail_at = now
            self.port_view = observation
            self._note_foreign(observation)
        if self.health is not None:
            self.health.poll([r for r in self._listed if not self._draining(r.id)])
        self._observation = observation
        return observation

    def _judge(self, observation: PortObservation, now: float) -> list[Observed]:
        limits = judge.Limits(
            self.spec.health.hang_window, self.spec.health.start_timeout, self.spec.port
        )
        # Stalls are followed on every read while steering (a suspect must leave the map
        # within judge.SUSPECT_AFTER_S of its last accept); otherwise they start on reads
        # with connections, which also see progress as newly accepted connections.
        follow = self.steering.steerer is not None or any(r.stall for r in self.records)
        observed = []
        self._verdicts = {}
        for replica in self._listed:
            record = self.records.track(replica.id, replica.index, now)
            sockets = observation.replicas.get(replica.id)
            if observation.with_connections or follow:
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
                self.wall() - replica.started_at if replica.started_at else None,
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
                    unstarted=replica.state == "created" and not replica.started_at,
                )
            )
        return observed

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

    # -- steering -----------------------------------------------------------------------

    def _steer(self, now: float) -> None:
        """Make the steering map hold exactly the replicas that may take new connections."""
        self._open_steering()
        steerer = self.steering.steerer
        if steerer is None:
            self._membership = {}
            return
        decided = steering.membership(
            self._listed, self._verdicts, self.records, self._observation, now
        )
        self._membership = decided.out
        if self.steering.policy == "least-conn" and self._observation.with_connections:
            steerer.set_loads(steering.loads(self._observation))
        if set(decided.wanted) == steerer.members():
            return
        try:
            result = steerer.sync(decided.wanted)
        except ReuseportError as exc:
            self._say_once(f"steering: {exc}")
            return
        if self.strict:
            return  # bring-up: retried next pass; a replica that cannot come up says why
        for inode, why in result.failed.items():
            self._say_once(f"steering: cannot admit listener {inode}: {why}")

    def _open_steering(self) -> None:
        state, asked = self.steering, self.spec.balance
        if state.asked == asked:
            return
        state.close(detach=True)  # a different policy: the old program's map empties
        state.asked, state.policy, state.note = asked, "hash", ""
        if asked == "hash" or self._steer_open is None:
            return
        try:
            state.steerer = self._steer_open(asked)
            state.policy = asked
        except ReuseportError as exc:
            state.note = str(exc)
            self.notify(
                f"{asked} balancing is not available here ({exc}); new connections are "
                "spread by the kernel's hash"
            )

    def _steered_listeners(self, action: Remove) -> tuple[int, ...]:
        """The listeners of a replica that just left the map (their queues to wait out)."""
        if self.steering.steerer is None:
            return ()
        sockets_ = self._observation.replicas.get(action.container_id)
        return sockets_.listeners if sockets_ else ()

    def _say_once(self, message: str) -> None:
        if message not in self._steer_said:
            self._steer_said.add(message)
            self.notify(message)

    def close_steering(self, detach: bool) -> None:
        """Supervision ends: keep the program attached for the next supervisor (``detach``
        False), or take steering off (the service is going away)."""
        self.steering.close(detach)
        self.steering.asked = ""

    # -- publish ------------------------------------------------------------------------

    def _publish(self, actions: list[controller.Action], now: float) -> ServiceStatus:
        return publish.service_status(
            publish.PassResult(
                spec=self.spec,
                listed=tuple(self._listed),
                records={r.container_id: r for r in self.records},
                verdicts=dict(self._verdicts),
                slots=dict(self.book.slots),
                port=self.port_view,
                waiting={a.index: a.until for a in actions if isinstance(a, Wait)},
                replacements=dict(self.replacements),
                problem=self.problem,
                membership=dict(self._membership),
                balance=self.steering.policy,
                balance_note=self.steering.note,
                # publish shows them only for a replica awaiting its first passing check
                check_errors={r.id: self.health.last_error(r.id) for r in self._listed}
                if self.health is not None
                else {},
            ),
            publish.Publisher(self.mode, self.describe(), os.getpid(), pid_namespace()),
            now,
            self.wall(),
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
    status = reconciler._publish([], now)
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
        # The kernel keeps steering by the last supervisor's map meanwhile.
        balance=published.balance,
        balance_note=published.balance_note
        or ("as the last supervisor left it" if published.balance not in ("", "hash") else ""),
    )

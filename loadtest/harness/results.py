"""The typed figures of every part of the load benchmark: what the parts return, what
``loadtest.report`` reads, and (``to_json``) what results.json holds.

Every field has a default so that :meth:`LoadtestResults.from_json` reads a partial or
older results.json; a part that was not run is None and absent from the JSON. The JSON
keys are the field names (see ``jsonable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtest.harness import jsonable
from loadtest.harness.jsonable import OMIT_NONE
from loadtest.harness.openhang import OpenHangFigures
from loadtest.harness.overloadresult import OverloadRun
from loadtest.harness.steerfigures import BalanceResult, SteerCostResult
from loadtest.wrk import WrkResult

# The order in which the throughput setups are shown (as loadtest.setups.NAMES).
SETUP_ORDER = ("reuseport", "steered", "manual", "nginx", "haproxy", "limit", "single")

# --------------------------------------------------------------------------- throughput


@dataclass
class SetupFigures:
    """One setup's wrk figures: medians over the runs."""

    description: str = ""
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    runs: list[WrkResult] = field(default_factory=list)


@dataclass
class ShareFigures:
    """The kernel's spread of new connections over the replicas of one port."""

    per_replica: dict[str, int] = field(default_factory=dict)
    max_over_min: float | None = None


@dataclass
class SlowMixResult:
    """New connections with a fraction of slow requests, by --balance (``loadtest.slowmix``)."""

    slow_fraction: float = 0.0
    slow_s: float = 0.0
    connections: int = 0
    duration_s: float = 0.0
    repeats: int = 0
    setups: dict[str, SetupFigures] = field(default_factory=dict)


@dataclass
class ThroughputResult:
    replicas: int = 0
    connections: int = 0
    duration_s: float = 0.0
    repeats: int = 0
    tool: str = ""
    setups: dict[str, SetupFigures] = field(default_factory=dict)
    # connections ("64") -> setup -> spread
    shares: dict[str, dict[str, ShareFigures]] = field(default_factory=dict)
    slow_mix: SlowMixResult | None = field(default=None, metadata=OMIT_NONE)
    steer_cost: SteerCostResult | None = field(default=None, metadata=OMIT_NONE)
    balance: BalanceResult | None = field(default=None, metadata=OMIT_NONE)


# --------------------------------------------------------------------------- latency


@dataclass
class OpenLoopFigures:
    """One setup at one offered rate (h2load, open loop)."""

    achieved_rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    responses: int = 0
    errors: int = 0
    held: bool = False  # achieved within ``LatencyResult.tolerance`` of offered: open loop


@dataclass
class RateStep:
    """Every setup at one offered rate, measured one after the other in ``order``."""

    fraction: float = 0.0  # of ``LatencyResult.proxy_max_rps``
    offered_rps: float = 0.0
    order: list[str] = field(default_factory=list)
    setups: dict[str, OpenLoopFigures] = field(default_factory=dict)


@dataclass
class LatencyResult:
    """Latency at equal offered load: fractions of the proxy's closed-loop maximum."""

    replicas: int = 0
    connections: int = 0
    duration_s: float = 0.0  # per setup per rate
    tool: str = ""
    proxy: str = "nginx"
    proxy_max_rps: float = 0.0
    proxy_max_source: str = ""  # how proxy_max_rps was measured
    tolerance: float = 0.0  # how far below offered the achieved rate may be
    descriptions: dict[str, str] = field(default_factory=dict)
    steps: list[RateStep] = field(default_factory=list)


# --------------------------------------------------------------------------- chaos


@dataclass
class Summary:
    median: float | None = None
    max: float | None = None
    n: int = 0


@dataclass
class DockerPolicySummary(Summary):
    n_under_load: int = 0  # of ``n``, measured under load (the rest after it)


@dataclass
class KillFigures:
    t_s: float = 0.0  # since the load start
    method: str = ""
    replica: int = 0
    replacement_ms: float = 0.0
    failures: int = 0  # failed requests attributed to this kill


@dataclass
class ChaosSecond:
    t_s: float = 0.0
    rps: int = 0
    failed: int = 0


@dataclass
class ChaosResult:
    duration_s: float = 0.0
    kill_every_s: float = 0.0
    users: int = 0
    replicas: int = 0
    user_classes: list[str] = field(default_factory=list)
    user_rps: float = 0.0
    port: int = 0
    docker_policy_port: int = 0
    backoff_reset_s: float = 0.0
    kills: list[KillFigures] = field(default_factory=list)
    replacement_ms: Summary = field(default_factory=Summary)
    replacement_ms_by_method: dict[str, Summary] = field(default_factory=dict)
    docker_policy_ms: DockerPolicySummary = field(default_factory=DockerPolicySummary)
    requests: int = 0
    failures: int = 0
    failures_in_flight_on_killed: int = 0
    failures_on_killed_sent_before_kill: int = 0
    failures_on_killed_sent_after_kill: int = 0
    failures_other: int = 0
    failures_by_error: dict[str, int] = field(default_factory=dict)
    throughput: list[ChaosSecond] = field(default_factory=list)
    shares: dict[str, Any] = field(default_factory=dict)
    restarts_counted: int | None = None
    left_behind: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- rollout


@dataclass
class RolloutRun:
    clients: str = "mixed"
    tcp_migrate_req: int = 0
    rollout_ok: bool = False
    rollout_s: float = 0.0
    requests: int = 0
    failures: int = 0
    failures_by_error: dict[str, int] = field(default_factory=dict)
    running_min: int = 0
    running_max: int = 0


@dataclass
class RolloutResult:
    replicas: int = 0
    from_image: str = field(default="", metadata=jsonable.key("from"))
    to_image: str = field(default="", metadata=jsonable.key("to"))
    users: int = 0
    min_ready_s: float = 0.0
    max_surge: int = 1
    max_unavailable: int = 0
    runs: list[RolloutRun] = field(default_factory=list)
    overload: list[OverloadRun] = field(default_factory=list)  # loadtest.overload's rows
    skipped: str | None = field(default=None, metadata=OMIT_NONE)  # why it did not run


# --------------------------------------------------------------------------- scale-out


@dataclass
class ScaleoutResult:
    replicas: int = 0
    seconds: float = 0.0  # `up -n N -d` to all N listening (best of rounds)
    port: int = 0
    rounds: int = 1  # each a baseline run then an `up`, alternating
    # The same N containers by N parallel `docker run -d` to all listening (best of runs),
    # and ``seconds`` divided by it; None when the baseline was not run.
    docker_run_seconds: float | None = field(default=None, metadata=OMIT_NONE)
    ratio: float | None = field(default=None, metadata=OMIT_NONE)


# --------------------------------------------------------------------------- cost


@dataclass
class IdleFigures:
    """The detached supervisor of N ready replicas, idle (no load, nothing changing)."""

    replicas: int = 0
    cpu_percent: float = 0.0  # of one core, averaged over ``sample_s``
    rss_mb: float = 0.0  # MiB, its container's processes together
    sample_s: float = 0.0
    status_writes: int | None = None  # status-file rewrites seen while sampling


@dataclass
class CostResult:
    idle: list[IdleFigures] = field(default_factory=list)
    startup: ScaleoutResult | None = field(default=None, metadata=OMIT_NONE)
    cpu_target_percent: float = 0.0  # at ``cpu_target_replicas``
    cpu_target_replicas: int = 0
    rss_target_mb: float = 0.0
    startup_target_ratio: float = 0.0


# --------------------------------------------------------------------------- hang


@dataclass
class HangSecond:
    t_s: float = 0.0  # since the SIGSTOP
    ok: int = 0
    failed: int = 0


@dataclass
class HealthSettings:
    interval_s: float = 0.0
    http_timeout_s: float = 0.0
    retries: int = 0


@dataclass
class HangFigures:
    """One setup under load with a SIGSTOPped replica; seconds since the SIGSTOP, None
    when it never happened."""

    description: str = ""
    port: int = 0
    requests: int = 0
    ok: int = 0
    slow: int = 0
    slow_by_user_class: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    failures_by_error: dict[str, int] = field(default_factory=dict)
    failures_by_user_class: dict[str, int] = field(default_factory=dict)
    successor_listening_s: float | None = None
    stopped_listener_gone_s: float | None = None
    stopped_process_gone_s: float | None = None
    unhealthy_s: float | None = None
    listening_min: int = 0
    listening_max: int = 0
    stopped_accept_queue_max: int = 0
    throughput: list[HangSecond] = field(default_factory=list)
    # reuseport only: what `ps` says it replaced, by reason
    replacements: dict[str, int] | None = field(default=None, metadata=OMIT_NONE)
    # Docker only: its own view of the stopped container at the end
    restart_count: int | None = field(default=None, metadata=OMIT_NONE)
    docker_state: str | None = field(default=None, metadata=OMIT_NONE)
    health_status: str | None = field(default=None, metadata=OMIT_NONE)
    failing_streak: int | None = field(default=None, metadata=OMIT_NONE)
    health_ports: list[int] | None = field(default=None, metadata=OMIT_NONE)


@dataclass
class HangResult:
    replicas: int = 0
    users: int = 0
    user_classes: list[str] = field(default_factory=list)
    user_rps: float = 0.0
    warmup_s: float = 0.0
    duration_s: float = 0.0
    stopped_replica: int = 0
    network_timeout_s: float = 0.0
    hang_window_s: float = 0.0
    stop_timeout_s: int = 0
    health: HealthSettings = field(default_factory=HealthSettings)
    tcp_migrate_req: int = 0
    tcp_migrate_req_before: int | None = None
    tcp_migrate_req_restored: bool = False
    poll_ms: float = 0.0
    setups: dict[str, HangFigures] = field(default_factory=dict)  # "reuseport", "docker"
    open_rate: float = 0.0  # the open-loop run's requests/s (loadtest.hangopen)
    open_loop: dict[str, OpenHangFigures] = field(default_factory=dict)  # the tool's setups
    left_behind: list[str] = field(default_factory=list)
    skipped: str | None = field(default=None, metadata=OMIT_NONE)  # why it did not run


# --------------------------------------------------------------------------- faults


@dataclass
class FaultFigures:
    """One injected fault: when, what, on which replica (None: not a replica's), and how
    long until ``ps --json`` showed every wanted replica ready again (None: never)."""

    t_s: float = 0.0  # since the scenario's load start
    kind: str = ""
    replica: int | None = None
    reconverge_s: float | None = None
    failures: int = 0  # failed requests attributed to this fault (on its replica)


@dataclass
class ResourceSample:
    """The detached supervisor's process tree (docker-init and the supervisor) from the host."""

    rss_mb: float = 0.0
    open_fds: int = 0
    threads: int = 0
    cpu_percent: float = 0.0  # over a 1 s window


@dataclass
class SoakFigures:
    duration_s: float = 0.0
    start: ResourceSample = field(default_factory=ResourceSample)
    # after the warm-up kills: pools and caches that open on first use are open by then
    warm: ResourceSample = field(default_factory=ResourceSample)
    end: ResourceSample = field(default_factory=ResourceSample)
    ratio: dict[str, float | None] = field(default_factory=dict)  # end / warm per figure


@dataclass
class FaultScenario:
    """One scenario under locust load on the shared port."""

    name: str = ""
    group: str = ""
    description: str = ""
    faults: list[FaultFigures] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    failures_on_faulted: int = 0  # in flight on (or queued at) a deliberately faulted replica
    failures_other: int = 0
    failures_by_error: dict[str, int] = field(default_factory=dict)
    running_max: int = 0  # replica containers running at once, sampled every 50 ms
    running_bound: int = 0  # desired + max surge: running_max must not exceed it
    creations: int = 0  # replica containers created (engine events)
    creations_max_per_s: int = 0  # in any 1 s window: a hot loop shows here
    reconverge_s: float | None = None  # the slowest fault's; None: did not reconverge
    converged: bool = False  # every fault was followed by all wanted replicas ready
    app_restarts: int | None = None  # replicas restarted by the tool itself; None: n/a
    problem: str | None = field(default=None, metadata=OMIT_NONE)  # what ps --json said
    soak: SoakFigures | None = field(default=None, metadata=OMIT_NONE)
    notes: list[str] = field(default_factory=list)


@dataclass
class FaultsResult:
    replicas: int = 0
    max_surge: int = 1
    users: int = 0
    user_classes: list[str] = field(default_factory=list)
    user_rps: float = 0.0
    network_timeout_s: float = 0.0
    random_faults: int = 0
    soak_s: float = 0.0
    tcp_migrate_req: int = 1
    tcp_migrate_req_before: int | None = None
    tcp_migrate_req_restored: bool = False
    scenarios: list[FaultScenario] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)
    skipped: str | None = field(default=None, metadata=OMIT_NONE)


# --------------------------------------------------------------------------- the whole run


@dataclass
class Machine:
    date: str = "?"
    cores: int | None = None
    kernel: str = "?"
    docker: str = "?"
    python: str = "?"
    reuseport: str = "?"


@dataclass
class LoadtestResults:
    machine: Machine = field(default_factory=Machine)
    command: str = "?"
    smoke: bool = False
    throughput: ThroughputResult | None = field(default=None, metadata=OMIT_NONE)
    chaos: ChaosResult | None = field(default=None, metadata=OMIT_NONE)
    rollout: RolloutResult | None = field(default=None, metadata=OMIT_NONE)
    scaleout: ScaleoutResult | None = field(default=None, metadata=OMIT_NONE)
    hang: HangResult | None = field(default=None, metadata=OMIT_NONE)
    faults: FaultsResult | None = field(default=None, metadata=OMIT_NONE)
    # Parts this run did not run, kept from the previous results.json (and its date).
    carried_over: list[str] = field(default_factory=list)
    carried_from: str | None = field(default=None, metadata=OMIT_NONE)
    cost: CostResult | None = field(default=None, metadata=OMIT_NONE)
    elapsed_s: float | None = field(default=None, metadata=OMIT_NONE)
    latency: LatencyResult | None = field(default=None, metadata=OMIT_NONE)
    workload: str = "the demo app"  # or the service of a project file (--file)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable.to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadtestResults:
        return jsonable.from_json(cls, data)

"""The typed figures of the two steered-vs-hash measurements that need runs of their own:
the cost of steering (``loadtest.steercost``) and a setup where balance matters
(``loadtest.balanced``). Part of ``ThroughputResult``; defaults as in ``results``."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtest.wrk import WrkResult


@dataclass
class SteerCostResult:
    """Hash and steered alone, in pairs of runs next to each other, the pairs alternating
    which goes first (hash-steered, steered-hash, ...): each pair's ratio cancels the
    machine's drift. ``supervisor_cpu``: % of one core of the measured setup's own
    supervisor (its container's processes) during each of its runs."""

    connections: int = 0
    duration_s: float = 0.0
    pairs: int = 0
    order: list[str] = field(default_factory=list)  # the setup of each run, in run order
    runs: dict[str, list[WrkResult]] = field(default_factory=dict)  # by setup, run order
    supervisor_cpu: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ScheduledRun:
    """One run of ``loadtest.openclient --connections``: latencies from each request's
    SCHEDULED send time. A request not sent by the run's end counts with the run's end
    minus its scheduled time (a lower bound), a failed one with the timeout."""

    offered_rps: float = 0.0
    rps: float = 0.0  # delivered: requests answered 2xx per second of the run
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    scheduled: int = 0  # requests due in the run
    served: int = 0
    not_sent: int = 0  # due in the run, still waiting on their connection at its end
    errors: int = 0  # sent, failed (timeout, closed, not 2xx)
    duration_s: float = 0.0


@dataclass
class BalanceResult:
    """Few long-lived connections, each at a fixed rate (``loadtest.openclient``, open
    loop, latency from the scheduled send time), over replicas with a CPU quota (``up
    --cpus``): hash against steered, alternating runs."""

    replicas: int = 0
    cpus: float = 0.0  # each replica's --cpus
    connections: int = 0
    capacity_rps: float = 0.0  # wrk closed loop on the same replicas (best setup)
    load: float = 0.0  # offered_rps over capacity_rps
    offered_rps: float = 0.0
    duration_s: float = 0.0
    runs: dict[str, list[ScheduledRun]] = field(default_factory=dict)  # by setup, run order

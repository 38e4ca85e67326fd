"""The replace-latency experiment: reuseport's supervisor against Docker's restart policy.

Both setups run side by side with the same topology (``replicas`` containers of the image in
the host network sharing one port); SIGKILL trials alternate between them so both see the
same machine load (see ``latency`` for one trial). Extra trials kill reuseport replicas with
``docker kill`` and ``docker rm -f``, which Docker's policy never restarts (a manual stop);
:func:`check_policy_after_docker_kill` verifies that once. ``benchmarks/replace_latency.py``
is the command line on top of this.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import docker

import reuseport
from loadtest.harness import jsonable
from loadtest.harness.bench import Bench
from loadtest.harness.latency import (
    DOCKER_KILL,
    DOCKER_POLICY,
    DOCKER_RM,
    DOCKER_STABLE_S,
    POLL_S,
    REUSEPORT,
    SIGKILL,
    Trial,
    dk_trial,
    median_or_none,
    p90,
    round_ms,
    rp_trial,
)
from reuseport.kernel import sockets as kernel

REUSEPORT_METHODS = (SIGKILL, DOCKER_KILL, DOCKER_RM)


@dataclass
class ScenarioSummary:
    """One row of the table: the trials of one setup and one kind of death."""

    setup: str
    method: str
    trials: int
    median_ms: float | None
    p90_ms: float | None
    max_ms: float | None
    min_ms: float | None
    kill_to_start_median_ms: float | None
    exit_to_start_median_ms: float | None
    samples_ms: list[float]


@dataclass
class Scenario:
    setup: str
    method: str
    trials: list[Trial] = field(default_factory=list)

    def summary(self) -> ScenarioSummary:
        samples = [t.latency_ms for t in self.trials]
        return ScenarioSummary(
            setup=self.setup,
            method=self.method,
            trials=len(samples),
            median_ms=round_ms(statistics.median(samples)) if samples else None,
            p90_ms=round_ms(p90(samples)) if samples else None,
            max_ms=round_ms(max(samples)) if samples else None,
            min_ms=round_ms(min(samples)) if samples else None,
            kill_to_start_median_ms=median_or_none(t.kill_to_start_ms for t in self.trials),
            exit_to_start_median_ms=median_or_none(t.exit_to_start_ms for t in self.trials),
            samples_ms=[round_ms(s) for s in samples],
        )


@dataclass
class ReplaceLatencyRun:
    """What one run measured, scenario by scenario."""

    bench: Bench
    rp_scenarios: dict[str, Scenario] = field(
        default_factory=lambda: {m: Scenario(REUSEPORT, m) for m in REUSEPORT_METHODS}
    )
    dk_scenario: Scenario = field(default_factory=lambda: Scenario(DOCKER_POLICY, SIGKILL))
    policy_after_docker_kill: str = "not checked"
    restarts_seen: int | None = None

    @property
    def measured(self) -> bool:
        return bool(self.rp_scenarios[SIGKILL].trials or self.dk_scenario.trials)

    def record(self, trial: Trial, scenario: Scenario) -> None:
        scenario.trials.append(trial)
        extra = ""
        if trial.kill_to_start_ms is not None:
            extra = f" (kill->started {trial.kill_to_start_ms:.0f} ms)"
        self.bench.log(
            f"{trial.setup:13} {trial.method:17} {trial.target:28} "
            f"{trial.latency_ms:7.1f} ms{extra}"
        )


def setup(bench: Bench) -> None:
    """Both setups, Docker's first, each proven listening."""
    bench.check_images()
    bench.cleanup_stale()
    bench.take_ports()
    bench.start_docker_policy()
    bench.start_reuseport()


def run_trials(run: ReplaceLatencyRun, trials: int, extra_trials: int) -> None:
    """``trials`` SIGKILL trials per side, alternating, then ``extra_trials`` each of
    ``docker kill`` and ``docker rm -f`` on reuseport; at least ``gap_s`` apart."""
    bench = run.bench
    n = bench.replicas
    next_index = 0
    last_trial = 0.0

    def pace() -> None:
        delay = last_trial + bench.config.gap_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    for k in range(trials):
        pace()
        index = next_index % n + 1
        next_index += 1
        run.record(rp_trial(bench, index, SIGKILL), run.rp_scenarios[SIGKILL])
        last_trial = time.perf_counter()
        pace()
        run.record(dk_trial(bench, bench.dk_containers[k % n]), run.dk_scenario)
        last_trial = time.perf_counter()
    for method in [DOCKER_KILL, DOCKER_RM] * extra_trials:
        pace()
        index = next_index % n + 1
        next_index += 1
        run.record(rp_trial(bench, index, method), run.rp_scenarios[method])
        last_trial = time.perf_counter()
    run.restarts_seen = sum(int(r.get("restarts") or 0) for r in bench.cli.ps(bench.name))


def check_policy_after_docker_kill(run: ReplaceLatencyRun) -> None:
    """Docker's restart policy treats `docker kill` as a manual stop: verify it once."""
    bench = run.bench
    if not bench.dk_containers:
        return
    container = bench.dk_containers[0]
    container.kill()
    time.sleep(2.0)
    container.reload()
    listening = len(kernel.listening_inodes(bench.dk_port))
    if container.status != "running" and listening == bench.replicas - 1:
        run.policy_after_docker_kill = (
            f"verified: after `docker kill` the --restart always container stayed "
            f"{container.status} for 2 s"
        )
    else:
        run.policy_after_docker_kill = (
            f"UNEXPECTED: after `docker kill` the container is {container.status}, "
            f"{listening}/{bench.replicas} listening"
        )


# --------------------------------------------------------------------------- the report


def versions(client: docker.DockerClient) -> dict[str, str]:
    info = client.version()
    return {
        "kernel": platform.release(),
        "docker_engine": str(info.get("Version", "?")),
        "docker_api": str(info.get("ApiVersion", "?")),
        "docker_py": docker.__version__,
        "python": platform.python_version(),
        "reuseport": reuseport.__version__,
        "cpus": str(os.cpu_count()),
    }


@dataclass
class LatencyConfig:
    image: str
    replicas: int
    reuseport_port: int
    docker_policy_port: int
    service: str
    backoff_reset: float | None
    gap_s: float
    poll_ms: float
    docker_stable_s: float


@dataclass
class Ratios:
    median: float | None
    p90: float | None


@dataclass
class LatencyReport:
    """The figures of one run (``--json`` prints them, with the exit status)."""

    versions: dict[str, str]
    config: LatencyConfig
    # reuseport SIGKILL, docker-policy SIGKILL, reuseport docker kill, reuseport docker rm -f
    scenarios: list[ScenarioSummary]
    ratio_reuseport_over_docker_policy: Ratios
    docker_policy_after_manual_stop: str
    reuseport_restarts_counted: int | None
    trials: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable.to_json(self)
        return data


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def report(run: ReplaceLatencyRun, info: dict[str, str]) -> LatencyReport:
    bench = run.bench
    rp = run.rp_scenarios[SIGKILL].summary()
    dk = run.dk_scenario.summary()
    return LatencyReport(
        versions=info,
        config=LatencyConfig(
            image=bench.config.image,
            replicas=bench.replicas,
            reuseport_port=bench.rp_port,
            docker_policy_port=bench.dk_port,
            service=bench.name,
            backoff_reset=bench.config.backoff_reset,
            gap_s=bench.config.gap_s,
            poll_ms=POLL_S * 1000,
            docker_stable_s=DOCKER_STABLE_S,
        ),
        scenarios=[
            rp,
            dk,
            run.rp_scenarios[DOCKER_KILL].summary(),
            run.rp_scenarios[DOCKER_RM].summary(),
        ],
        ratio_reuseport_over_docker_policy=Ratios(
            median=ratio(rp.median_ms, dk.median_ms), p90=ratio(rp.p90_ms, dk.p90_ms)
        ),
        docker_policy_after_manual_stop=run.policy_after_docker_kill,
        reuseport_restarts_counted=run.restarts_seen,
        trials=[
            t.to_json() for s in (*run.rp_scenarios.values(), run.dk_scenario) for t in s.trials
        ],
    )

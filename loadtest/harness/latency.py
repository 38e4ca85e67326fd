"""One death -> replacement-listening trial, timed from the kernel.

t0 = ``perf_counter()`` right before the kill; then sock_diag
(``reuseport.kernel.listening_inodes``) is read every 2 ms until an inode that was not there
before listens AND the port has ``replicas`` listeners again (t1). Latency = t1 - t0.

A target is only killed once its backoff has reset, so every trial is the "lone crash after
a stable period" case: a reuseport replica once the supervisor shows 0 failures for it, a
Docker ``--restart always`` container once it has run 10.5 s (Docker doubles its restart
delay, 100 ms, 200 ms, ..., for a container that ran less than 10 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker.errors
from docker.models.containers import Container

from loadtest.harness.bench import Bench
from loadtest.harness.errors import TrialFailed
from reuseport.kernel import sockets as kernel

POLL_S = 0.002
DOCKER_STABLE_S = 10.5  # Docker resets its restart delay to 100 ms after a 10 s run
RECOVER_TIMEOUT_S = 30.0
DEFAULT_BACKOFF_RESET_S = 10.0  # reuseport's default --backoff-reset

SIGKILL = "SIGKILL from host"
DOCKER_KILL = "docker kill"
DOCKER_RM = "docker rm -f"
REUSEPORT = "reuseport"
DOCKER_POLICY = "docker-policy"


@dataclass
class Trial:
    setup: str  # REUSEPORT | DOCKER_POLICY
    method: str  # SIGKILL | DOCKER_KILL | DOCKER_RM
    target: str  # replica index or container name
    latency_ms: float
    kill_to_start_ms: float | None = None  # kill -> Docker's State.StartedAt of the new process
    exit_to_start_ms: float | None = None  # Docker policy only: FinishedAt -> StartedAt
    # Wall clock (time.time()) right before the kill and when the replacement listened.
    kill_wall: float = field(default=0.0, compare=False)
    done_wall: float = field(default=0.0, compare=False)

    def to_json(self) -> dict[str, Any]:
        measured = {
            "setup": self.setup,
            "method": self.method,
            "target": self.target,
            "latency_ms": self.latency_ms,
            "kill_to_start_ms": self.kill_to_start_ms,
            "exit_to_start_ms": self.exit_to_start_ms,
        }
        return {k: round_ms(v) if isinstance(v, float) else v for k, v in measured.items()}


def round_ms(value: float) -> float:
    return round(value, 1)


def median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round_ms(statistics.median(present)) if present else None


def p90(samples: list[float]) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


def docker_time(text: str | None) -> float | None:
    """Epoch seconds of a Docker RFC 3339 timestamp (nanoseconds kept to float precision)."""
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    base = datetime.strptime(main[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{frac}") if frac else 0.0)


def wait_replaced(port: int, before: set[int], want: int, t0: float) -> float:
    """Poll the kernel until a new inode listens and ``want`` listeners exist; seconds."""
    deadline = t0 + RECOVER_TIMEOUT_S
    while True:
        now = kernel.listening_inodes(port)
        t = time.perf_counter()
        if len(now) == want and not now.keys() <= before:
            return t - t0
        if t > deadline:
            raise TrialFailed(
                f"port {port}: no replacement within {RECOVER_TIMEOUT_S:g}s "
                f"({len(now)}/{want} listening)"
            )
        time.sleep(POLL_S)


def wait_rp_stable(bench: Bench, index: int) -> None:
    """Until the supervisor has forgiven ``index`` (its next death is replaced at once)."""
    reset = bench.config.backoff_reset
    reset = DEFAULT_BACKOFF_RESET_S if reset is None else reset
    since = bench.rp_since[index]
    fallback = since + reset + 1.5
    deadline = since + reset + 15
    while True:
        now = time.perf_counter()
        failures = bench.slot_failures(index)
        if now - since >= bench.config.gap_s and (
            failures == 0 or (failures is None and now >= fallback)
        ):
            return
        if now > deadline:
            raise TrialFailed(f"replica {index} still has {failures} failures on record")
        time.sleep(0.05)


def wait_dk_stable(bench: Bench, container_id: str) -> None:
    delay = bench.dk_since[container_id] + DOCKER_STABLE_S - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def dk_stable(bench: Bench, container_id: str) -> bool:
    """Whether the container has run long enough for Docker's delay to be at its floor."""
    return time.perf_counter() >= bench.dk_since[container_id] + DOCKER_STABLE_S


def rp_trial(bench: Bench, index: int, method: str) -> Trial:
    """Kill reuseport replica ``index`` by ``method`` once it is forgiven; time its
    replacement."""
    wait_rp_stable(bench, index)
    cid = bench.rp_container(index)
    listener = bench.listener_of(bench.rp_port, cid)
    before = set(kernel.listening_inodes(bench.rp_port))
    wall0 = time.time()
    t0 = time.perf_counter()
    if method == SIGKILL:
        os.kill(listener.pids[0], signal.SIGKILL)
    elif method == DOCKER_KILL:
        bench.client.api.kill(cid)
    else:
        bench.client.api.remove_container(cid, force=True)
    seconds = wait_replaced(bench.rp_port, before, bench.replicas, t0)
    done = time.time()
    bench.rp_since[index] = time.perf_counter()
    trial = Trial(REUSEPORT, method, f"replica {index}", seconds * 1000, None, None, wall0, done)
    new = [x for x in kernel.listeners(bench.rp_port) if x.inode not in before]
    if new and new[0].container_id:
        with contextlib.suppress(docker.errors.APIError):
            attrs = bench.client.api.inspect_container(new[0].container_id)
            started = docker_time(attrs["State"].get("StartedAt"))
            if started is not None:
                trial.kill_to_start_ms = (started - wall0) * 1000
    return trial


def dk_trial(bench: Bench, container: Container) -> Trial:
    """SIGKILL the listening process of a Docker-policy container once it has run 10.5 s;
    time its restart."""
    wait_dk_stable(bench, container.id)
    listener = bench.listener_of(bench.dk_port, container.id)
    before = set(kernel.listening_inodes(bench.dk_port))
    wall0 = time.time()
    t0 = time.perf_counter()
    os.kill(listener.pids[0], signal.SIGKILL)
    seconds = wait_replaced(bench.dk_port, before, bench.replicas, t0)
    done = time.time()
    bench.dk_since[container.id] = time.perf_counter()
    target = container.name or container.id[:12]
    trial = Trial(DOCKER_POLICY, SIGKILL, target, seconds * 1000, None, None, wall0, done)
    with contextlib.suppress(docker.errors.APIError):
        state = bench.client.api.inspect_container(container.id)["State"]
        started = docker_time(state.get("StartedAt"))
        finished = docker_time(state.get("FinishedAt"))
        if started is not None:
            trial.kill_to_start_ms = (started - wall0) * 1000
            if finished is not None:
                trial.exit_to_start_ms = (started - finished) * 1000
    return trial

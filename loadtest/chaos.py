"""Chaos under load: kill a replica every few seconds while locust keeps requesting.

Setup (both on the same image, started before the load, by ``loadtest.harness``'s ``Bench``;
each death -> replacement-listening figure is a ``loadtest.harness.latency`` trial, measured
exactly as ``benchmarks/replace_latency.py`` measures it):

* reuseport: ``up -d`` N replicas on ``port`` (service ``bench-chaos-<pid>``);
* Docker policy: N ``--restart always --init`` containers on the next free port, labelled
  ``io.reuseport.bench=1`` and removed by label at the end.

Load: locust (subprocess, ``loadtest/locustfile.py``) with BOTH user classes in ONE run,
half ``KeepAliveUser`` and half ``NewConnectionUser``, at a constant rate per user: the
keep-alive users show what a kill costs the clients whose connection was on the dead
replica, the new-connection users what it costs a request that the kernel queued on it.

Kills: after a warm-up, every ``kill_every_s`` one replica, rotating over the indices and
alternating ``docker kill`` (SDK) and SIGKILL of its listening host process (``os.kill``).
Each kill is timed like ``replace_latency``: t0 right before the kill, then sock_diag is
polled every 2 ms until a LISTEN inode that was not there before exists AND N listen again.

Backoff: rotating gives each index N * kill_every_s seconds between its deaths; on top of
that the service runs with ``--backoff-reset 2`` and every kill first waits until the
supervisor has forgiven that index (0 failures on record). So every kill is the "lone crash
after a stable period" case, the same case the Docker side measures (a container is only
killed after running >= 10.5 s, when Docker's restart delay is back at its 100 ms floor).
Crash-loop backoff is a deliberate delay, not replacement speed, and is excluded on both
sides alike.

Docker-policy trials run halfway between two kills, under the same load, rotating over its
containers; one whose container has not run 10.5 s yet is skipped and made up after the
load (``docker_policy_ms.n_under_load`` says how many were measured under load).

Failures: the locustfile switches off geventhttpclient's silent re-send of a GET whose
connection broke (it would hide exactly these failures) and records each failed request with
its start and end time and, for a keep-alive user, the replica its connection was on. A
failure counts as "in flight on the killed replica" if it ended between a kill and 1 s after
the replacement listened AND (when known) its connection was on the killed replica; it is
further split into sent before the kill (truly in flight) and sent after it (on a connection
to the dead replica). Every other failure, by locust's own count (its ``--json`` output: the
``_stats.csv`` is rewritten periodically and came out short of the last second), is
"other". Throughput is counted per
wall-clock second by the locustfile (``_stats_history.csv`` has whole-second timestamps and
a rolling rate, too coarse to show a dip); the CSVs are still in ``workdir/chaos_*``.

Try it alone: ``.venv/bin/python -m loadtest.chaos --duration 12 --kill-every 3`` (prints
the JSON; set REUSEPORT_STATE_DIR to keep the service state out of /var/lib/reuseport).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from loadtest import locustrun
from loadtest.harness import jsonable
from loadtest.harness.bench import Bench, BenchConfig, log
from loadtest.harness.latency import DOCKER_KILL, SIGKILL, dk_stable, dk_trial, rp_trial
from loadtest.harness.results import (
    ChaosResult,
    ChaosSecond,
    DockerPolicySummary,
    KillFigures,
    Summary,
)
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport.store import default_state_dir

WARMUP_S = 3.0  # after every user runs, before the first kill: the load is steady
TAIL_S = 3.0  # load after the last replacement, so its effect (if any) is on the chart
ATTRIBUTION_S = 1.0  # after a replacement listens, late failures still count for that kill
BACKOFF_RESET_S = 2.0


@dataclass
class Kill:
    wall: float  # time.time() right before the kill
    done_wall: float  # time.time() when the replacement listened
    method: str
    replica: int
    replacement_ms: float


@dataclass
class _Run:
    """Everything one chaos run measured, before it is summarised."""

    duration_s: float
    kill_every_s: float
    users: int
    t0: float = 0.0  # wall clock: every locust user running (the load start)
    t_end: float = 0.0  # wall clock: locust told to stop
    kills: list[Kill] = field(default_factory=list)
    docker_ms: list[float] = field(default_factory=list)
    docker_under_load: int = 0
    locust_stats: list[dict[str, Any]] = field(default_factory=list)
    recorded: dict[str, Any] = field(default_factory=dict)  # the locustfile's JSON
    restarts: int | None = None
    left: list[str] = field(default_factory=list)


def run_chaos(
    image: str,
    replicas: int,
    port: int,
    duration_s: float,
    kill_every_s: float,
    users: int,
    workdir: Path,
    progress: Callable[[str], None] = print,
) -> ChaosResult:
    """Kill a replica every ``kill_every_s`` for ``duration_s`` under locust load; figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    client = docker.from_env(timeout=60)
    config = BenchConfig(
        name=f"bench-chaos-{os.getpid()}",
        state_dir=default_state_dir(),
        image=image,
        replicas=replicas,
        first_port=port,
        backoff_reset=BACKOFF_RESET_S,
    )
    bench = Bench(config, client)
    run = _Run(duration_s, kill_every_s, users)
    locust: subprocess.Popen[bytes] | None = None
    with sigterm_as_interrupt():
        try:
            bench.check_images()
            bench.cleanup_stale()
            bench.take_ports()
            progress(
                f"chaos: {replicas} replicas of {image} on :{bench.rp_port} (reuseport), "
                f"{replicas} --restart always containers on :{bench.dk_port}"
            )
            bench.start_docker_policy()
            bench.start_reuseport()
            files = locustrun.LocustFiles(workdir, "chaos")
            locust = locustrun.start(
                bench.rp_port, users, duration_s, files, margin_s=WARMUP_S + TAIL_S
            )
            run.t0 = locustrun.wait_ready(locust, files)
            progress(f"chaos: load on ({users} users); killing a replica every {kill_every_s:g} s")
            _kill_loop(bench, run, progress)
            _sleep_until(run.kills[-1].done_wall + TAIL_S)
            run.t_end = time.time()
            locustrun.stop(locust)
            run.locust_stats = json.loads(files.stdout.read_text() or "[]")
            run.recorded = json.loads(files.replicas.read_text())
            run.docker_under_load = len(run.docker_ms)
            _top_up_docker(bench, run, progress)
            run.restarts = bench.cli.restarts(bench.name)
        finally:
            with signals_held():
                if locust is not None:
                    locustrun.stop(locust)
                run.left = bench.cleanup()
            if run.left:
                progress(f"chaos: LEFT BEHIND: {', '.join(run.left)}")
            client.close()
    return _result(bench, run)


# --------------------------------------------------------------------------- kills


def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


def _kill_loop(bench: Bench, run: _Run, progress: Callable[[str], None]) -> None:
    count = max(1, int(run.duration_s // run.kill_every_s))
    first = run.t0 + WARMUP_S
    for k in range(count):
        _sleep_until(first + k * run.kill_every_s)
        # Rotate indices; alternate the two deaths (docker kill first).
        method = DOCKER_KILL if k % 2 == 0 else SIGKILL
        kill = _kill_replica(bench, k % bench.replicas + 1, method)
        run.kills.append(kill)
        progress(
            f"chaos: t={kill.wall - run.t0:5.1f}s {method:17} replica {kill.replica}: "
            f"replacement listening in {kill.replacement_ms:.0f} ms"
        )
        # Docker's policy, halfway to the next kill: same machine, same load.
        _sleep_until(first + (k + 0.5) * run.kill_every_s)
        container = bench.dk_containers[len(run.docker_ms) % bench.replicas]
        if dk_stable(bench, container.id):
            trial = dk_trial(bench, container)
            run.docker_ms.append(trial.latency_ms)
            progress(f"chaos: docker --restart always, SIGKILL: {trial.latency_ms:.0f} ms")


def _kill_replica(bench: Bench, index: int, method: str) -> Kill:
    # Only a replica the supervisor has forgiven (rp_trial waits): replaced at once.
    trial = rp_trial(bench, index, method)
    return Kill(trial.kill_wall, trial.done_wall, method, index, trial.latency_ms)


def _top_up_docker(bench: Bench, run: _Run, progress: Callable[[str], None]) -> None:
    """Docker-policy trials skipped under load (no container stable yet): now, unloaded."""
    missing = len(run.kills) - len(run.docker_ms)
    for k in range(missing):
        container = min(bench.dk_containers, key=lambda c: bench.dk_since[c.id])
        trial = dk_trial(bench, container)  # waits until it has run 10.5 s
        run.docker_ms.append(trial.latency_ms)
        progress(
            f"chaos: docker --restart always, SIGKILL (after the load, {k + 1}/{missing}): "
            f"{trial.latency_ms:.0f} ms"
        )


# --------------------------------------------------------------------------- figures


def _summary(samples: list[float]) -> Summary:
    if not samples:
        return Summary()
    return Summary(round(statistics.median(samples), 1), round(max(samples), 1), len(samples))


def _attribute(failures: list[dict[str, Any]], kills: list[Kill]) -> list[Kill | None]:
    """The kill each recorded failure belongs to, or None (an "other" failure)."""
    owners: list[Kill | None] = []
    for failure in failures:
        owner = None
        for kill in kills:
            if kill.wall <= failure["t"] <= kill.done_wall + ATTRIBUTION_S and (
                failure.get("replica") in (None, str(kill.replica))
            ):
                owner = kill
                break
        owners.append(owner)
    return owners


def _throughput(run: _Run) -> list[ChaosSecond]:
    """Whole wall-clock seconds inside the load window only: partial ones would look like dips."""
    per_second: dict[str, list[int]] = run.recorded.get("per_second", {})
    points = []
    for second in range(math.ceil(run.t0), math.floor(run.t_end)):
        ok, failed = per_second.get(str(second), [0, 0])
        points.append(ChaosSecond(round(second - run.t0, 2), ok, failed))
    return points


def _result(bench: Bench, run: _Run) -> ChaosResult:
    requests = sum(int(e.get("num_requests", 0)) for e in run.locust_stats)
    failed = sum(int(e.get("num_failures", 0)) for e in run.locust_stats)
    failures = run.recorded.get("failures", [])
    owners = _attribute(failures, run.kills)
    in_flight = sum(owner is not None for owner in owners)
    # Sent before the death (truly in flight) or after it on a connection to the dead
    # replica (a client that retries idempotent requests on a broken connection hides those).
    sent_before = sum(
        owner is not None and (f.get("start") or 0) < owner.wall
        for f, owner in zip(failures, owners, strict=True)
    )
    per_kill = Counter(id(owner) for owner in owners if owner is not None)
    docker_summary = _summary(run.docker_ms)
    return ChaosResult(
        duration_s=run.duration_s,
        kill_every_s=run.kill_every_s,
        users=run.users,
        replicas=bench.replicas,
        user_classes=list(locustrun.USER_CLASSES),
        user_rps=locustrun.USER_RPS,
        port=bench.rp_port,
        docker_policy_port=bench.dk_port,
        backoff_reset_s=BACKOFF_RESET_S,
        kills=[
            KillFigures(
                t_s=round(k.wall - run.t0, 2),
                method=k.method,
                replica=k.replica,
                replacement_ms=round(k.replacement_ms, 1),
                failures=per_kill.get(id(k), 0),
            )
            for k in run.kills
        ],
        replacement_ms=_summary([k.replacement_ms for k in run.kills]),
        replacement_ms_by_method={
            method: _summary([k.replacement_ms for k in run.kills if k.method == method])
            for method in (DOCKER_KILL, SIGKILL)
        },
        docker_policy_ms=DockerPolicySummary(
            docker_summary.median, docker_summary.max, docker_summary.n, run.docker_under_load
        ),
        requests=requests,
        failures=failed,
        failures_in_flight_on_killed=in_flight,
        failures_on_killed_sent_before_kill=sent_before,
        failures_on_killed_sent_after_kill=in_flight - sent_before,
        # Locust's count minus the attributed ones: a failure the locustfile did not record
        # (it keeps at most 50,000) cannot be excused.
        failures_other=failed - in_flight,
        failures_by_error=run.recorded.get("failures_by_error", {}),
        throughput=_throughput(run),
        shares=run.recorded.get("shares", {}),
        restarts_counted=run.restarts,
        left_behind=run.left,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="chaos under locust load (one part of loadtest)")
    parser.add_argument("--image", default="reuseport-demo:latest")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--port", type=int, default=20080)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        result = run_chaos(
            args.image,
            args.replicas,
            args.port,
            args.duration,
            args.kill_every,
            args.users,
            workdir,
            progress=log,
        )
    print(json.dumps(jsonable.to_json(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

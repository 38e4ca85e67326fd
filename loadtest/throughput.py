"""Throughput and latency of every setup with wrk, the per-replica share of new
connections, and the slow-request mix by --balance policy (``loadtest.slowmix``).

All setups run at once; each repeat measures them one after the other in a rotated order,
so drift of the machine (thermal, page cache, noisy neighbours) hits every setup alike,
and the report takes medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from loadtest import balanced, shares, slowmix, steercost, wrk
from loadtest.harness import jsonable
from loadtest.harness.results import (
    SetupFigures,
    ShareFigures,
    SlowMixResult,
    ThroughputResult,
)
from loadtest.setups import NAMES, Setup, ensure_packages, running_setups
from reuseport.projectfile import ServiceEntry

PAUSE_S = 1.0  # lets TIME_WAIT sockets and the previous run's backlog settle between runs
WARMUP_S = 1.0  # first connections, upstream keep-alive pools, page faults: not measured
# The proxies balance round-robin by design; steered is the tool's own round-robin.
SHARE_SETUPS = ("reuseport", "steered", "manual")


def _measure(setup: Setup, connections: int, duration_s: float) -> wrk.WrkResult:
    urls = setup.urls()
    if len(urls) > 1:
        return wrk.run_wrk_split(urls, connections, duration_s)
    return wrk.run_wrk(urls[0], connections, duration_s, threads=2)


def _summary(description: str, results: list[wrk.WrkResult]) -> SetupFigures:
    return SetupFigures(
        description=description,
        rps=round(statistics.median(r.rps for r in results), 1),
        p50_ms=round(statistics.median(r.p50_ms for r in results), 3),
        p99_ms=round(statistics.median(r.p99_ms for r in results), 3),
        errors=sum(r.errors for r in results),
        runs=list(results),
    )


def _shares(
    running: dict[str, Setup], replicas: int, counts: tuple[int, ...]
) -> dict[str, dict[str, ShareFigures]]:
    found: dict[str, dict[str, ShareFigures]] = {}
    for count in counts:
        found[str(count)] = {}
        for name in SHARE_SETUPS:
            if name in running:
                per = shares.connection_shares(running[name].port, count)
                found[str(count)][name] = ShareFigures(
                    per_replica=dict(sorted(per.items(), key=lambda kv: int(kv[0]))),
                    max_over_min=shares.max_over_min(per, replicas),
                )
                time.sleep(PAUSE_S)
    return found


def run_throughput(
    image: str,
    replicas: int,
    base_port: int,
    duration_s: float,
    repeats: int,
    connections: int,
    share_connections: tuple[int, ...] = (64, 1024),
    progress: Callable[[str], None] = print,
    project: ServiceEntry | None = None,
) -> ThroughputResult:
    """wrk against every setup (alternating repeats), the kernel's shares and the paired
    steering cost; with the demo image (no ``project``) also the slow mix, which needs the
    demo's ``/slow``, and the CPU-limited balance setup."""
    runs: dict[str, list[wrk.WrkResult]] = {name: [] for name in NAMES}
    demo = project is None
    names = (*NAMES, *slowmix.EXTRA_SETUPS) if demo else NAMES
    with running_setups(image, replicas, base_port, names, project=project) as running:
        progress("throughput: " + ", ".join(f"{n} :{s.port}" for n, s in running.items()))
        for name in NAMES:
            _measure(running[name], connections, WARMUP_S)
        for repeat in range(repeats):
            shift = repeat % len(NAMES)
            for name in NAMES[shift:] + NAMES[:shift]:
                result = _measure(running[name], connections, duration_s)
                runs[name].append(result)
                progress(
                    f"throughput {repeat + 1}/{repeats} {name}: {result.rps:,.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"{result.errors} errors"
                )
                time.sleep(PAUSE_S)
        measured_shares = _shares(running, replicas, share_connections)
        mix_runs = slowmix.measure(running, duration_s, repeats, progress) if demo else None
        pairs = steercost.PAIRS if repeats > 1 else 1
        cost = steercost.measure(running, connections, duration_s, pairs, progress)
        descriptions = {name: setup.description for name, setup in running.items()}
    # Started alone (the setups above are gone): replicas with a CPU quota.
    balance = (
        balanced.measure(image, replicas, base_port, duration_s, repeats, progress)
        if demo
        else None
    )
    return ThroughputResult(
        replicas=replicas,
        connections=connections,
        duration_s=duration_s,
        repeats=repeats,
        tool=wrk.version(),
        setups={name: _summary(descriptions[name], runs[name]) for name in NAMES},
        shares=measured_shares,
        slow_mix=None
        if mix_runs is None
        else SlowMixResult(
            slow_fraction=slowmix.SLOW_FRACTION,
            slow_s=slowmix.SLOW_S,
            connections=slowmix.CONNECTIONS,
            duration_s=duration_s,
            repeats=min(repeats, slowmix.MAX_REPEATS),
            setups={n: _summary(descriptions[n], found) for n, found in mix_runs.items()},
        ),
        steer_cost=cost,
        balance=balance,
    )


if __name__ == "__main__":
    # A standalone run of just this part: `.venv/bin/python -m loadtest.throughput -d 2 -r 1`
    parser = argparse.ArgumentParser(prog="loadtest.throughput")
    parser.add_argument("-d", "--duration", type=float, default=2)
    parser.add_argument("-r", "--repeats", type=int, default=1)
    parser.add_argument("-n", "--replicas", type=int, default=4)
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("--base-port", type=int, default=21000)
    parser.add_argument("--image", default="reuseport-demo:latest")
    args = parser.parse_args()
    ensure_packages(["wrk", "nginx", "haproxy"])
    figures = run_throughput(
        args.image,
        args.replicas,
        args.base_port,
        args.duration,
        args.repeats,
        args.connections,
        progress=lambda line: print(line, file=sys.stderr, flush=True),  # stdout: JSON only
    )
    print(json.dumps(jsonable.to_json(figures), indent=1))

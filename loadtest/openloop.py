"""Latency at equal offered load: each setup at the same fixed request rates (open loop).

The throughput part compares setups at saturation, where reuseport serves 2.5-2.7x the
load of a proxy and so its percentiles are those of a much busier server. Here h2load
offers every setup the same rates: fractions (25 %, 50 %, 75 %) of the proxy's (nginx's)
closed-loop maximum, measured first by wrk in this run or taken from the throughput part
of the same invocation. Each rate step runs every setup once, in an order rotated per
step, each started alone on the machine (nothing else running) and torn down after, so
no idle setup shares the CPU. h2load's warm-up second (not measured) opens the
connections and fills nginx's upstream keep-alive pool; see loadtest.h2load for what
open loop means here and how falling behind shows.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence

from loadtest import h2load, wrk
from loadtest.harness.results import LatencyResult, OpenLoopFigures, RateStep, ThroughputResult
from loadtest.latencyreport import SHOWN
from loadtest.setups import NAMES, ensure_packages, running_setups
from reuseport.projectfile import ServiceEntry

FULL_FRACTIONS = (0.25, 0.5, 0.75)
SMOKE_FRACTIONS = (0.25,)
PROXY = "nginx"
WARMUP_S = 1.0
PAUSE_S = 1.0  # TIME_WAIT and the previous setup's teardown settle


def ensure_h2load() -> None:
    """Debian's nghttp2-client, which ships h2load (ensure_packages checks by binary name)."""
    if shutil.which("h2load") is None:
        ensure_packages(["nghttp2-client"])


def latency_setups(available: Sequence[str] = NAMES) -> list[str]:
    """The compared setups that ``available`` (loadtest.setups.NAMES) offers, in order."""
    return [name for name in SHOWN if name in available]


def rotated(names: Sequence[str], step: int) -> list[str]:
    """``names`` starting at ``step`` (mod len): each step leads with another setup."""
    shift = step % len(names) if names else 0
    return list(names[shift:]) + list(names[:shift])


def figures(offered_rps: float, result: h2load.ClientResult, tolerance: float) -> OpenLoopFigures:
    return OpenLoopFigures(
        achieved_rps=round(result.rps, 1),
        p50_ms=round(result.p50_ms, 3),
        p99_ms=round(result.p99_ms, 3),
        responses=result.responses,
        errors=result.errors,
        held=h2load.held(offered_rps, result.rps, tolerance),
    )


def proxy_max_of(throughput: ThroughputResult | None) -> tuple[float, str] | None:
    """The proxy's req/s from the throughput part of this run, if it ran and measured it."""
    figures = throughput.setups.get(PROXY) if throughput else None
    if throughput is None or figures is None or not figures.rps:
        return None
    return figures.rps, (
        f"the throughput part: wrk, {throughput.connections} connections, median of "
        f"{throughput.repeats} x {throughput.duration_s:g} s"
    )


def proxy_max_rps(
    image: str,
    replicas: int,
    base_port: int,
    connections: int,
    duration_s: float,
    project: ServiceEntry | None = None,
) -> float:
    """The proxy's closed-loop maximum req/s: wrk against it alone, after a warm-up."""
    with running_setups(image, replicas, base_port, [PROXY], project=project) as running:
        url = running[PROXY].urls()[0]
        wrk.run_wrk(url, connections, WARMUP_S)
        return wrk.run_wrk(url, connections, duration_s).rps


def _measure_alone(
    image: str,
    replicas: int,
    base_port: int,
    name: str,
    rate: float,
    connections: int,
    duration_s: float,
    project: ServiceEntry | None,
) -> tuple[str, h2load.ClientResult]:
    with running_setups(image, replicas, base_port, [name], project=project) as running:
        url = running[name].urls()[0]
        return running[name].description, h2load.run_h2load(url, rate, connections, duration_s)


def run_latency(
    image: str,
    replicas: int,
    base_port: int,
    duration_s: float,
    connections: int,
    fractions: Sequence[float],
    proxy_max: tuple[float, str] | None,
    max_duration_s: float,
    progress: Callable[[str], None] = print,
    project: ServiceEntry | None = None,
) -> LatencyResult:
    """Every compared setup at every fraction of the proxy's maximum; ``proxy_max`` is
    (req/s, how it was measured) when known already, else wrk measures it for
    ``max_duration_s``."""
    if proxy_max is None:
        rps = proxy_max_rps(image, replicas, base_port, connections, max_duration_s, project)
        proxy_max = (rps, f"wrk, {connections} connections, {max_duration_s:g} s, {PROXY} alone")
    max_rps, source = proxy_max
    progress(f"latency: {PROXY} maximum {max_rps:,.0f} req/s ({source})")
    names = latency_setups()
    result = LatencyResult(
        replicas=replicas,
        connections=connections,
        duration_s=duration_s,
        tool=h2load.version(),
        proxy=PROXY,
        proxy_max_rps=round(max_rps, 1),
        proxy_max_source=source,
        tolerance=h2load.HELD_TOLERANCE,
    )
    for index, fraction in enumerate(fractions):
        offered = round(max_rps * fraction)
        step = RateStep(fraction=fraction, offered_rps=offered, order=rotated(names, index))
        for name in step.order:
            description, measured = _measure_alone(
                image, replicas, base_port, name, offered, connections, duration_s, project
            )
            result.descriptions[name] = description
            step.setups[name] = figures(offered, measured, result.tolerance)
            behind = "" if step.setups[name].held else " (h2load FELL BEHIND: not open loop)"
            progress(
                f"latency {fraction:.0%} = {offered:,} req/s {name}: achieved "
                f"{measured.rps:,.0f}{behind}, p50 {measured.p50_ms:.2f} ms, "
                f"p99 {measured.p99_ms:.2f} ms, {measured.errors} errors"
            )
            time.sleep(PAUSE_S)
        result.steps.append(step)
    return result

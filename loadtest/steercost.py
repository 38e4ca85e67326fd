"""What steering costs at saturation: hash ("reuseport") and steered (``--balance
round-robin``) alone, wrk keep-alive, in pairs of runs next to each other.

The throughput part's rotation puts seven setups between two runs of one, and on this
2-core machine (wrk on the same cores) one run's req/s varies by 10-20 %: a ratio of two
medians of 5 runs moved between 0.90 and 1.03 from one full run to the next. Here each
pair's steered/hash ratio compares runs one second apart, the pairs alternate which goes
first (hash-steered, steered-hash, ...) so neither always gets the warmer or cooler slot,
and the report takes the median of the pairs' ratios. Each supervisor's CPU during its
setup's runs is recorded too: between its passes a steered supervisor reads the port's
listeners every ``STEER_POLL_S`` (a queue makes a pass at once), the one cost steering adds
at saturation besides the balance itself, since the eBPF program only runs on a new
connection and keep-alive connections open once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import docker

from loadtest import wrk
from loadtest.cost import cpu_seconds, supervisor_processes
from loadtest.harness.steerfigures import SteerCostResult
from loadtest.setups import Setup

HASH, STEERED = "reuseport", "steered"
PAIRS = 12  # 24 runs: about 4.5 minutes of a full run's 10-s runs (6 pairs left the
# median 0.95-1.06 from one run to the next: each pair's ratio varies by +-15 % here)
PAUSE_S = 1.0


def pair_order(pair: int) -> tuple[str, str]:
    """Hash first in even pairs, steered first in odd ones."""
    return (HASH, STEERED) if pair % 2 == 0 else (STEERED, HASH)


def measure(
    running: Mapping[str, Setup],
    connections: int,
    duration_s: float,
    pairs: int,
    progress: Callable[[str], None],
) -> SteerCostResult:
    client = docker.from_env(timeout=60)
    try:
        supervisors = {n: supervisor_processes(client, running[n].service) for n in pair_order(0)}
    finally:
        client.close()
    found = SteerCostResult(connections=connections, duration_s=duration_s, pairs=pairs)
    for pair in range(pairs):
        for name in pair_order(pair):
            before, t0 = cpu_seconds(supervisors[name]), time.monotonic()
            url = running[name].urls()[0]
            result = wrk.run_wrk(url, connections, duration_s, threads=2)
            cpu = 100 * (cpu_seconds(supervisors[name]) - before) / (time.monotonic() - t0)
            found.order.append(name)
            found.runs.setdefault(name, []).append(result)
            found.supervisor_cpu.setdefault(name, []).append(round(cpu, 2))
            progress(
                f"steering cost {pair + 1}/{pairs} {name}: {result.rps:,.0f} req/s, "
                f"p99 {result.p99_ms:.2f} ms, supervisor {cpu:.2f} % of a core"
            )
            time.sleep(PAUSE_S)
    return found

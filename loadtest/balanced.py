"""A setup where the balance decides: few long-lived connections, each sending at a fixed
rate, over replicas that each have a CPU quota (``up --cpus``, as production containers).

On this 2-core machine an unlimited replica takes whatever CPU the others leave, so the
kernel's scheduler evens out an uneven spread of connections and the policy hardly shows
(the throughput rows). With a quota a replica cannot borrow: the one that holds more
connections than its share gets more requests than its quota serves, falls behind and
is throttled (CFS: idle until the next 100-ms period), while the others idle. The
kernel's 4-tuple hash puts ``CONNECTIONS`` = 8 connections 2/2/2/2 over 4 replicas in only
3.8 % of draws (most often one replica gets 3 or 4); round-robin always does.

The offered rate is ``LOAD`` of the replicas' closed-loop maximum (wrk, the same
connections, the best of both setups): 0.6 of a replica's quota under an even spread,
0.9 with 3 connections, 1.2 with 4. h2load offers it (open loop, see ``loadtest.h2load``);
each run opens new connections (a new hash draw); hash and steered alternate which runs
first, and the report takes medians.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loadtest import h2load, wrk
from loadtest.harness.steerfigures import BalanceResult
from loadtest.setups import running_setups

SETUPS = ("reuseport", "steered")  # --balance hash, round-robin
CPUS = 0.1  # each replica's --cpus: 4 replicas leave most of the machine to the clients
CONNECTIONS = 4
LOAD = 0.8
PAUSE_S = 1.0


def measure(
    image: str,
    replicas: int,
    base_port: int,
    duration_s: float,
    repeats: int,
    progress: Callable[[str], None],
) -> BalanceResult:
    up_options = ("--cpus", f"{CPUS:g}")
    with running_setups(image, replicas, base_port, SETUPS, up_options) as running:
        urls = {name: running[name].urls()[0] for name in SETUPS}
        capacity = 0.0
        for name in SETUPS:
            wrk.run_wrk(urls[name], CONNECTIONS, 1.0)  # warm-up, not measured
            closed = wrk.run_wrk(urls[name], CONNECTIONS, duration_s)
            progress(f"balance: {name} closed loop {closed.rps:,.0f} req/s")
            capacity = max(capacity, closed.rps)
            time.sleep(PAUSE_S)
        offered = round(LOAD * capacity)
        found = BalanceResult(
            replicas=replicas,
            cpus=CPUS,
            connections=CONNECTIONS,
            capacity_rps=round(capacity, 1),
            load=LOAD,
            offered_rps=offered,
            duration_s=duration_s,
        )
        for repeat in range(repeats):
            for name in SETUPS if repeat % 2 == 0 else SETUPS[::-1]:
                result = h2load.run_h2load(urls[name], offered, CONNECTIONS, duration_s)
                found.runs.setdefault(name, []).append(result)
                progress(
                    f"balance {repeat + 1}/{repeats} {name}: {result.rps:,.0f} of {offered:,} "
                    f"req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"{result.errors} errors"
                )
                time.sleep(PAUSE_S)
    return found

"""Rollout under new-connection-per-request overload: v1 -> v2 of the service while wrk
opens a new connection for every request (``Connection: close``, 128 connections: more new
connections per second than the replicas accept at ease), with net.ipv4.tcp_migrate_req=0,
once with ``--balance hash`` and once steered (the default), failed requests side by side.

With the kernel's hash a draining replica keeps getting its share of new connections until
it closes its listener, and what is queued then is reset (tcp_migrate_req=0). Steered, the
supervisor takes it out of the map first and stops it once its queue is empty, so the
setting should not matter: the expectation is 0 failed requests.

The caller (``loadtest.rolling``) restores the host setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loadtest import wrk
from loadtest.harness.bench import Bench
from loadtest.harness.overloadresult import OverloadRun
from reuseport import host

BALANCES = ("hash", "round-robin")  # today's kernel hash, then the steered default
CONNECTIONS = 128
THREADS = 2
WARMUP_S = 2.0
TAIL_S = 2.0
MIN_READY_S = 0.5
WRK_TIMEOUT_S = 5


def run_one(
    balance: str,
    bench: Bench,
    image_to: str,
    port: int,
    progress: Callable[[str], None],
) -> OverloadRun:
    """One row: the bench's service on ``port`` with ``balance``, rolled out to ``image_to``
    under wrk. Taking it down again (``bench.cleanup``) is the caller's, as for every run."""
    host.TCP_MIGRATE_REQ.write_text("0\n")
    bench.start_reuseport(port, extra=("--balance", balance))
    if balance != "hash":
        bench.wait_steered(bench.name, balance)
    url = f"http://127.0.0.1:{port}/"
    load = wrk.start_until_interrupted(url, CONNECTIONS, THREADS, WRK_TIMEOUT_S, "close")
    try:
        time.sleep(WARMUP_S)
        completed, seconds = bench.rollout(image_to, MIN_READY_S)
        time.sleep(TAIL_S)
        output = wrk.interrupt(load)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    figures = wrk.parse(output)
    errors = wrk.error_counts(output)
    run = OverloadRun(
        balance=balance,
        tcp_migrate_req=0,
        rollout_ok=completed,
        rollout_s=round(seconds, 2),
        requests=figures.requests,
        rps=round(figures.rps, 1),
        failures=sum(errors.values()),
        errors=errors,
    )
    progress(
        f"rollout under overload, --balance {balance}, tcp_migrate_req=0: "
        f"{'completed' if run.rollout_ok else 'FAILED'} in {seconds:.1f} s, "
        f"{run.failures} failed of {run.requests:,} ({run.rps:,.0f} req/s; "
        + ", ".join(f"{k} {v}" for k, v in errors.items())
        + ")"
    )
    return run

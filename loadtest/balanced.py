"""A setup where the balance decides: few long-lived connections, each sending at a fixed
rate, over replicas that each have a CPU quota (``up --cpus``, as production containers).

On this 2-core machine an unlimited replica takes whatever CPU the others leave, so the
kernel's scheduler evens out an uneven spread of connections and the policy hardly shows
(the throughput rows). With a quota a replica cannot borrow: the one that holds more
connections than its share gets more requests than its quota serves, falls behind and
is throttled (CFS: idle until the next 100-ms period), while the others idle. The
kernel's 4-tuple hash puts ``CONNECTIONS`` = 4 connections 1/1/1/1 over 4 replicas in only
9.4 % of draws (4!/4^4; most often one replica gets 2 or more); round-robin always does.

The offered rate is ``LOAD`` of the replicas' closed-loop maximum (wrk, the same
connections, the best of both setups). ``loadtest.openclient --connections`` offers it (a
subprocess): each connection sends at rate/``CONNECTIONS`` on its own schedule, one
request at a time, and every latency counts from the request's SCHEDULED send time, so a
connection stuck behind an overloaded replica records the waiting of every request it
could not send yet (coordinated omission corrected, as wrk2; h2load, which times each
request from its actual send, showed only the fast replicas' latencies). Requests due in
the run but never sent count as not served, in the p99 with the run's end minus their
scheduled time (a lower bound). The client is Python (a few thousand requests/s on this
machine: 4,000 req/s held against an unquota'd local server), hence the small quota: the
offered rate stays well within what it keeps up with. Measured: at ``LOAD`` 0.8 of wrk's
closed-loop maximum even steered delivered only ~60 % (--cpus 0.015 and 0.03): requests
spaced out in time each wake an idle replica, which costs the quota more than wrk's
back-to-back requests, so the closed-loop maximum overstates what the replicas serve
open loop. At 0.4 steered delivered 99.6 % (--cpus 0.015, 6-s runs). Each run opens new
connections (a new hash draw); hash and steered alternate which runs first, and the report
takes medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest import openclient, wrk
from loadtest.h2load import percentile
from loadtest.harness import jsonable
from loadtest.harness.errors import SetupError
from loadtest.harness.steerfigures import BalanceResult, ScheduledRun
from loadtest.setups import running_setups

SETUPS = ("reuseport", "steered")  # --balance hash, round-robin
CPUS = 0.015  # each replica's --cpus: ~2,300 req/s closed loop, within the client's reach
CONNECTIONS = 4
LOAD = 0.4  # of wrk's closed-loop max: steered delivers ~99.6 % of it (see the doc)
PAUSE_S = 1.0
TIMEOUT_S = 5.0  # per request, from its send
REPO = Path(__file__).resolve().parent.parent


def scheduled_run(data: dict[str, Any]) -> ScheduledRun:
    """The figures of ``loadtest.openclient --connections``'s output ``data``: latencies
    from the scheduled send time; a request not sent counts as run end - scheduled (a lower
    bound), a failed one as the timeout (at least that long since its send)."""
    duration_s, timeout_s = float(data["duration_s"]), float(data["timeout_s"])
    latencies: list[float] = []
    served = not_sent = errors = 0
    for scheduled_s, latency_s, error in data["requests"]:
        if not error:
            served += 1
            latencies.append(float(latency_s))
        elif error == openclient.NOT_SENT:
            not_sent += 1
            latencies.append(max(0.0, duration_s - float(scheduled_s)))
        else:
            errors += 1
            latencies.append(timeout_s)
    latencies.sort()
    return ScheduledRun(
        offered_rps=float(data["rate"]),
        rps=round(served / duration_s, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 3) if latencies else 0.0,
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3) if latencies else 0.0,
        scheduled=len(latencies),
        served=served,
        not_sent=not_sent,
        errors=errors,
        duration_s=duration_s,
    )


def run_client(port: int, rate: float, duration_s: float) -> ScheduledRun:
    """One run of the keep-alive open-loop client (a subprocess: its own GIL)."""
    with tempfile.TemporaryDirectory(prefix="balanced-") as tmp:
        out = Path(tmp) / "requests.json"
        command = [
            sys.executable, "-m", "loadtest.openclient", "--port", str(port),
            "--rate", f"{rate:g}", "--duration", f"{duration_s:g}",
            "--timeout", f"{TIMEOUT_S:g}", "--connections", str(CONNECTIONS), "--out", str(out),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            subprocess.run(
                command, env=env, cwd=REPO, check=True, timeout=duration_s + TIMEOUT_S + 30
            )
            data = json.loads(out.read_text())
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise SetupError(f"balance: the open-loop client: {type(exc).__name__}: {exc}") from exc
    return scheduled_run(data)


def measure(
    image: str,
    replicas: int,
    base_port: int,
    duration_s: float,
    repeats: int,
    progress: Callable[[str], None],
    cpus: float = CPUS,
    load: float = LOAD,
) -> BalanceResult:
    up_options = ("--cpus", f"{cpus:g}")
    with running_setups(image, replicas, base_port, SETUPS, up_options) as running:
        urls = {name: running[name].urls()[0] for name in SETUPS}
        capacity = 0.0
        for name in SETUPS:
            wrk.run_wrk(urls[name], CONNECTIONS, 1.0)  # warm-up, not measured
            closed = wrk.run_wrk(urls[name], CONNECTIONS, duration_s)
            progress(f"balance: {name} closed loop {closed.rps:,.0f} req/s")
            capacity = max(capacity, closed.rps)
            time.sleep(PAUSE_S)
        offered = round(load * capacity)
        found = BalanceResult(
            replicas=replicas,
            cpus=cpus,
            connections=CONNECTIONS,
            capacity_rps=round(capacity, 1),
            load=load,
            offered_rps=offered,
            duration_s=duration_s,
        )
        for repeat in range(repeats):
            for name in SETUPS if repeat % 2 == 0 else SETUPS[::-1]:
                result = run_client(running[name].port, offered, duration_s)
                found.runs.setdefault(name, []).append(result)
                progress(
                    f"balance {repeat + 1}/{repeats} {name}: {result.rps:,.0f} of {offered:,} "
                    f"req/s delivered, from the scheduled send: p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms; {result.not_sent} not sent, "
                    f"{result.errors} errors"
                )
                time.sleep(PAUSE_S)
    return found


if __name__ == "__main__":
    # A standalone run of just this part: `.venv/bin/python -m loadtest.balanced -d 10 -r 3`
    parser = argparse.ArgumentParser(prog="loadtest.balanced")
    parser.add_argument("-d", "--duration", type=float, default=10)
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("-n", "--replicas", type=int, default=4)
    parser.add_argument("--cpus", type=float, default=CPUS)
    parser.add_argument("--load", type=float, default=LOAD, help="offered / closed-loop max")
    parser.add_argument("--base-port", type=int, default=21000)
    parser.add_argument("--image", default="reuseport-demo:latest")
    args = parser.parse_args()
    figures = measure(
        args.image,
        args.replicas,
        args.base_port,
        args.duration,
        args.repeats,
        lambda line: print(line, file=sys.stderr, flush=True),  # stdout: JSON only
        args.cpus,
        args.load,
    )
    print(json.dumps(jsonable.to_json(figures), indent=1))

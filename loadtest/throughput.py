"""Throughput and latency of every setup with wrk, repeated with the setups alternating
(so drift of the machine hits all alike), reported as medians; plus the kernel's
per-replica share of new connections."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from loadtest import setups as setups_mod
from loadtest import shares, wrk

ALL = ("reuseport", "manual", "nginx", "haproxy", "limit", "single")
PAUSE_S = 1.0


def run_throughput(
    image: str,
    replicas: int,
    base_port: int,
    duration_s: float,
    repeats: int,
    connections: int,
    share_connections: tuple[int, ...] = (64, 1024),
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    runs: dict[str, list[wrk.WrkResult]] = {name: [] for name in ALL}
    with setups_mod.running_setups(image, replicas, base_port, ALL) as running:
        descriptions = {name: s.description for name, s in running.items()}
        for repeat in range(repeats):
            order = list(ALL[repeat % len(ALL) :] + ALL[: repeat % len(ALL)])  # rotate
            for name in order:
                setup = running[name]
                if len(setup.urls) > 1:
                    result = wrk.run_wrk_split(setup.urls, connections, duration_s)
                else:
                    result = wrk.run_wrk(setup.urls[0], connections, duration_s)
                runs[name].append(result)
                progress(
                    f"throughput {repeat + 1}/{repeats} {name}: {result.rps:,.0f} req/s, "
                    f"p99 {result.p99_ms:.2f} ms, {result.errors} errors"
                )
                time.sleep(PAUSE_S)
        measured_shares = {}
        for count in share_connections:
            measured_shares[str(count)] = {}
            for name in ("reuseport", "manual"):
                per = shares.connection_shares(running[name].port, count)
                spread = max(per.values()) / max(1, min(per.values())) if per else None
                measured_shares[str(count)][name] = {
                    "per_replica": per,
                    "max_over_min": round(spread, 2) if spread else None,
                }
    return {
        "replicas": replicas,
        "connections": connections,
        "duration_s": duration_s,
        "repeats": repeats,
        "tool": wrk.version(),
        "setups": {
            name: {
                "description": descriptions[name],
                "rps": round(statistics.median(r.rps for r in results), 1),
                "p50_ms": round(statistics.median(r.p50_ms for r in results), 3),
                "p99_ms": round(statistics.median(r.p99_ms for r in results), 3),
                "errors": sum(r.errors for r in results),
                "runs": [asdict(r) for r in results],
            }
            for name, results in runs.items()
        },
        "shares": measured_shares,
    }


if __name__ == "__main__":
    print(
        json.dumps(
            run_throughput(
                "reuseport-demo:latest",
                4,
                21500,
                float(sys.argv[1]) if len(sys.argv) > 1 else 2,
                1,
                64,
            ),
            indent=1,
        )
    )

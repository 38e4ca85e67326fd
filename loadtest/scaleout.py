"""Scale-out: ``reuseport up --replicas N -d`` from nothing until every replica listens.

The figure is the wall time of the whole command as a user runs it (CLI start, supervisor
container, N replica containers, app start-up): ``up -d`` returns only once the kernel
shows all N listening, so its return is the end. ``reuseport ps --json`` and the kernel are
then asked again to make sure no replica was counted that does not listen. The service
(``bench-scaleout-<pid>``) is removed with ``reuseport down`` in ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import docker

from loadtest.harness import jsonable
from loadtest.harness.bench import Bench, BenchConfig, free_ports
from loadtest.harness.errors import SetupError
from loadtest.harness.results import ScaleoutResult
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport.store import default_state_dir

READY_TIMEOUT_S = 120.0


def run_scaleout(
    image: str, replicas: int, port: int, progress: Callable[[str], None] = print
) -> ScaleoutResult:
    """Seconds from ``up --replicas N`` to all N listening (nothing running before)."""
    config = BenchConfig(
        name=f"bench-scaleout-{os.getpid()}",
        state_dir=default_state_dir(),
        image=image,
        replicas=replicas,
        ready_timeout_s=READY_TIMEOUT_S,
    )
    client = docker.from_env(timeout=60)
    bench = Bench(config, client, progress=lambda line: progress(f"scale-out: {line}"))
    with sigterm_as_interrupt():
        try:
            bench.cleanup_stale()  # services an earlier, killed run left (its pid is gone)
            port = free_ports(port, 1)[0]
            # `up -d` returns once ps and the kernel show all N listening (else SetupError).
            seconds = bench.start_reuseport(port)
            progress(f"scale-out: {replicas} replicas listening after {seconds:.2f} s")
        finally:
            with signals_held():
                left = bench.cleanup()
            if left:
                progress(f"scale-out: LEFT BEHIND: {', '.join(left)}")
            client.close()
    return ScaleoutResult(replicas=replicas, seconds=round(seconds, 2), port=port)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    try:
        result = run_scaleout("reuseport-demo:latest", count, 20180)
    except (SetupError, subprocess.SubprocessError) as exc:
        sys.exit(f"scale-out failed: {exc}")
    print(json.dumps(jsonable.to_json(result)))

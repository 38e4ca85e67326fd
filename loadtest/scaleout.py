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
import time
from collections.abc import Callable
from typing import Any

import docker

from benchmarks import replace_latency as rl
from loadtest.chaos import signals_ignored, sigterm_as_interrupt
from reuseport import labels as rp_labels
from reuseport.kernel import sockets as kernel

READY_TIMEOUT_S = 120.0


def run_scaleout(
    image: str, replicas: int, port: int, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Seconds from ``up --replicas N`` to all N listening (nothing running before)."""
    name = f"bench-scaleout-{os.getpid()}"
    _down_stale(progress)
    port = rl.free_ports(port, 1)[0]
    up = ["up", image, "-n", str(replicas), "-p", str(port), "--name", name, "-d"]
    up += ["--ready-timeout", f"{READY_TIMEOUT_S:g}"]
    progress(f"scale-out: reuseport {' '.join(up)}")
    with sigterm_as_interrupt():
        try:
            t0 = time.perf_counter()
            rl.cli(*up, timeout=READY_TIMEOUT_S + 60)
            seconds = time.perf_counter() - t0
            rows = json.loads(rl.cli("ps", name, "--json", timeout=60).stdout)
            in_ps = sum(1 for r in rows if r.get("listening"))
            in_kernel = len(kernel.listening_inodes(port))
            if in_ps != replicas or in_kernel != replicas:
                raise rl.SetupError(
                    f"`up` returned but ps shows {in_ps}/{replicas} listening, "
                    f"the kernel {in_kernel}/{replicas}"
                )
            progress(f"scale-out: {replicas} replicas listening after {seconds:.2f} s")
        finally:
            with signals_ignored():
                rl.cli("down", name, timeout=120, check=False)
    return {"replicas": replicas, "seconds": round(seconds, 2), "port": port}


def _down_stale(progress: Callable[[str], None]) -> None:
    """Remove scale-out services an earlier, killed run left (its pid is gone)."""
    client = docker.from_env(timeout=60)
    try:
        found = client.api.containers(all=True, filters={"label": rp_labels.filters()})
        names = {c["Labels"].get(rp_labels.SERVICE, "") for c in found}
    finally:
        client.close()
    for name in sorted(n for n in names if n.startswith("bench-scaleout-")):
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and not rl.pid_alive(int(pid)):
            progress(f"scale-out: removing {name} left by an earlier run")
            rl.cli("down", name, timeout=120, check=False)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    try:
        print(json.dumps(run_scaleout("reuseport-demo:latest", count, 20180)))
    except (rl.SetupError, subprocess.SubprocessError) as exc:
        sys.exit(f"scale-out failed: {exc}")

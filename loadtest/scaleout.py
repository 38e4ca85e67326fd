"""Scale-out: ``reuseport up --replicas N -d`` from nothing until every replica listens,
against the same N containers started by N parallel ``docker run -d``.

The figure is the wall time of the whole command as a user runs it (CLI start, supervisor
container, N replica containers, app start-up): ``up -d`` returns only once the kernel
shows all N listening, so its return is the end. ``reuseport ps --json`` and the kernel are
then asked again to make sure no replica was counted that does not listen. The baseline is
what a user would type by hand: N ``docker run -d --network host --init`` of the same image
at once, from the first call until the kernel shows N listeners. The two alternate for
``rounds`` rounds (warm image either way, nothing else of theirs running) and the best of
each is kept: on two cores one run varies by a few tenths of a second. The service
(``bench-scaleout-<pid>``) is removed with ``reuseport down`` after each round.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import docker

from loadtest.harness import jsonable
from loadtest.harness.bench import (
    BENCH_LABEL,
    RUN_LABEL,
    Bench,
    BenchConfig,
    free_ports,
    wait_listening,
)
from loadtest.harness.errors import SetupError
from loadtest.harness.results import ScaleoutResult
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport.store import default_state_dir

READY_TIMEOUT_S = 120.0


def run_scaleout(
    image: str,
    replicas: int,
    port: int,
    progress: Callable[[str], None] = print,
    baseline: bool = True,
    rounds: int = 2,
) -> ScaleoutResult:
    """Seconds from ``up --replicas N`` to all N listening (nothing running before) and,
    with ``baseline``, from N parallel ``docker run`` to all N listening; best of
    ``rounds`` each."""
    config = BenchConfig(
        name=f"bench-scaleout-{os.getpid()}",
        state_dir=default_state_dir(),
        image=image,
        replicas=replicas,
        ready_timeout_s=READY_TIMEOUT_S,
    )
    client = docker.from_env(timeout=60)
    bench = Bench(config, client, progress=lambda line: progress(f"scale-out: {line}"))
    by_hand: list[float] = []
    by_up: list[float] = []
    with sigterm_as_interrupt():
        try:
            bench.cleanup_stale()  # services an earlier, killed run left (its pid is gone)
            port, hand_port = free_ports(port, 2)
            for _ in range(max(1, rounds)):
                if baseline:
                    by_hand.append(parallel_docker_run(bench, hand_port))
                # `up -d` returns once ps and the kernel show all N listening (else SetupError).
                by_up.append(bench.start_reuseport(port))
                progress(f"scale-out: {replicas} replicas listening after {by_up[-1]:.2f} s")
                with signals_held():
                    bench.cleanup()  # each run starts from nothing, alone on the machine
        finally:
            with signals_held():
                left = bench.cleanup()
            if left:
                progress(f"scale-out: LEFT BEHIND: {', '.join(left)}")
            client.close()
    seconds = min(by_up)
    docker_run = min(by_hand) if by_hand else None
    return ScaleoutResult(
        replicas=replicas,
        seconds=round(seconds, 2),
        port=port,
        rounds=len(by_up),
        docker_run_seconds=round(docker_run, 2) if docker_run else None,
        ratio=round(seconds / docker_run, 2) if docker_run else None,
    )


def parallel_docker_run(bench: Bench, port: int) -> float:
    """Seconds from N parallel ``docker run -d`` (as reuseport runs a replica: host
    network, docker-init, PORT and REPLICA) to N listeners on ``port``; then removes them."""
    count = bench.replicas
    if shutil.which("docker") is None:
        raise SetupError("the docker CLI is missing (the scale-out baseline runs it)")

    def docker_run(index: int) -> None:
        command = ["docker", "run", "-d", "--network", "host", "--init"]
        command += ["-e", f"PORT={port}", "-e", f"REPLICA={index}"]
        command += ["--label", f"{BENCH_LABEL}=1", "--label", f"{RUN_LABEL}={bench.name}"]
        done = subprocess.run(
            [*command, bench.config.image], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise SetupError(f"`docker run` failed: {done.stderr.strip()}")

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(docker_run, range(1, count + 1)))
        wait_listening(port, count, READY_TIMEOUT_S)
        seconds = time.perf_counter() - t0
        bench.log(f"{count} parallel `docker run`: all listening after {seconds:.2f} s")
        return seconds
    finally:
        with signals_held():
            for c in bench.client.containers.list(
                ignore_removed=True, all=True, filters={"label": f"{RUN_LABEL}={bench.name}"}
            ):
                c.remove(force=True)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    try:
        result = run_scaleout("reuseport-demo:latest", count, 20180, rounds=3)
    except (SetupError, subprocess.SubprocessError) as exc:
        sys.exit(f"scale-out failed: {exc}")
    print(json.dumps(jsonable.to_json(result)))

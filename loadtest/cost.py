"""Cost: what the detached supervisor costs while nothing happens, and what `up` costs.

* Idle: one service under a detached supervisor (``up -d``), scaled to each replica count
  in turn (``reuseport scale``); once all listen and a few seconds have passed, the CPU
  time of the supervisor container's processes (docker-init and the supervisor, all their
  threads; psutil from the host) over ``sample_s``, as % of one core, and their RSS
  together. The status file's rewrites during the sample are counted too.
* Start-up: the scale-out part (``up -n N -d`` against N parallel ``docker run``), run
  here unless the scale-out part ran already.

Targets (issue 9): <= 0.5 % of a core at 32 replicas, RSS <= 60 MB, start-up <= 1.15x.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import docker
import psutil

from loadtest import scaleout
from loadtest.harness.bench import Bench, BenchConfig, free_ports, wait_listening
from loadtest.harness.errors import SetupError
from loadtest.harness.results import CostResult, IdleFigures, ScaleoutResult
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport import labels
from reuseport.store import default_state_dir

FULL_COUNTS = (4, 32, 128)
SMOKE_COUNTS = (4, 16)
FULL_SAMPLE_S = 30.0
SMOKE_SAMPLE_S = 5.0
SETTLE_S = 3.0  # after all listen: let the supervisor's start-up polling end
READY_TIMEOUT_S = 300.0  # 128 replicas on 2 cores take a while
CPU_TARGET_PERCENT, CPU_TARGET_REPLICAS = 0.5, 32
RSS_TARGET_MB = 60.0
STARTUP_TARGET_RATIO = 1.15


def run_cost(
    image: str,
    counts: Sequence[int],
    sample_s: float,
    startup_replicas: int,
    port: int,
    progress: Callable[[str], None] = print,
    startup: ScaleoutResult | None = None,
) -> CostResult:
    """The idle figures at each of ``counts``; the start-up is ``startup`` when the
    scale-out part measured it already in this run, else measured here."""
    result = CostResult(
        cpu_target_percent=CPU_TARGET_PERCENT,
        cpu_target_replicas=CPU_TARGET_REPLICAS,
        rss_target_mb=RSS_TARGET_MB,
        startup_target_ratio=STARTUP_TARGET_RATIO,
    )
    if startup is None or startup.docker_run_seconds is None:
        startup = scaleout.run_scaleout(image, startup_replicas, port, progress)
    result.startup = startup
    progress(
        f"cost: up -n {startup.replicas} -d {startup.seconds:.2f} s, parallel docker run "
        f"{startup.docker_run_seconds} s (ratio {startup.ratio})"
    )
    result.idle = run_idle(image, counts, sample_s, port + 20, progress)
    return result


def run_idle(
    image: str,
    counts: Sequence[int],
    sample_s: float,
    port: int,
    progress: Callable[[str], None] = print,
) -> list[IdleFigures]:
    """The idle supervisor at each of ``counts`` replicas (ascending), one service scaled."""
    config = BenchConfig(
        name=f"bench-cost-{os.getpid()}",
        state_dir=default_state_dir(),
        image=image,
        replicas=counts[0],
        ready_timeout_s=READY_TIMEOUT_S,
    )
    client = docker.from_env(timeout=60)
    bench = Bench(config, client, progress=lambda line: progress(f"cost: {line}"))
    found: list[IdleFigures] = []
    with sigterm_as_interrupt():
        try:
            bench.cleanup_stale()
            port = free_ports(port, 1)[0]
            bench.start_reuseport(port)
            for count in counts:
                if count != counts[0]:
                    scale_to(bench, count, port)
                time.sleep(SETTLE_S)
                figures = sample_idle(
                    supervisor_processes(client, bench.name),
                    bench.store.root / f"{bench.name}.status.json",
                    count,
                    sample_s,
                )
                progress(
                    f"cost: {count} replicas: supervisor {figures.cpu_percent:.2f} % of a core, "
                    f"RSS {figures.rss_mb:.1f} MiB, {figures.status_writes} status writes "
                    f"in {sample_s:g} s"
                )
                found.append(figures)
        finally:
            with signals_held():
                left = bench.cleanup()
            if left:
                progress(f"cost: LEFT BEHIND: {', '.join(left)}")
            client.close()
    return found


def scale_to(bench: Bench, count: int, port: int) -> None:
    bench.log(f"reuseport scale {bench.name} {count}")
    bench.cli.run(
        "scale", bench.name, str(count), "--timeout", f"{READY_TIMEOUT_S:g}",
        timeout=READY_TIMEOUT_S + 60,
    )  # fmt: skip
    wait_listening(port, count, 30.0)


def supervisor_processes(client: docker.DockerClient, service: str) -> list[psutil.Process]:
    """The processes of the service's running supervisor container (host pids)."""
    found = client.api.containers(
        filters={"label": labels.filters(service, labels.ROLE_SUPERVISOR)}
    )
    if len(found) != 1:
        raise SetupError(f"{service}: expected one running supervisor container, got {len(found)}")
    pid = int(client.api.inspect_container(found[0]["Id"])["State"]["Pid"])
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def sample_idle(
    procs: list[psutil.Process], status_file: Path, replicas: int, sample_s: float
) -> IdleFigures:
    """CPU over ``sample_s`` (% of one core) and RSS of ``procs``; the status file's
    rewrites are counted by polling its inode and mtime."""
    cpu0, t0 = cpu_seconds(procs), time.monotonic()
    writes, last = 0, _stamp(status_file)
    while time.monotonic() - t0 < sample_s:
        time.sleep(0.05)
        stamp = _stamp(status_file)
        if stamp != last:
            writes, last = writes + 1, stamp
    cpu1, t1 = cpu_seconds(procs), time.monotonic()
    rss = sum(p.memory_info().rss for p in procs)
    return IdleFigures(
        replicas=replicas,
        cpu_percent=round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        rss_mb=round(rss / 2**20, 1),
        sample_s=round(t1 - t0, 1),
        status_writes=writes,
    )


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        times = proc.cpu_times()  # every thread of the process
        total += times.user + times.system
    return total


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns

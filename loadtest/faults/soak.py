"""Soak: churn under load for ``duration_s`` (a replica killed every ``every_s``, rotating
the method: ``docker kill``, SIGKILL from the host), with the detached supervisor's
resources read from the host (psutil on its container's process tree: docker-init and the
supervisor) at the start, after the warm-up kills (the first WARMUP_SHARE of the soak, at
least WARMUP_KILLS: connection pools and worker threads open on first use) and at the end,
each in a quiet moment under load: resident memory, open file descriptors, threads and
CPU% over 1 s. They must stay flat after the warm-up: the report gives end / warm.
"""

from __future__ import annotations

import os
import random
import signal
import time

import psutil

from loadtest.faults.common import FaultContext, Scenario, container_gone, sleep_until
from loadtest.harness.results import FaultScenario, ResourceSample, SoakFigures

QUIET_S = 2.0  # after the last reconvergence, before the end sample
WARMUP_SHARE = 0.25
WARMUP_KILLS = 3
SEED = 11


def supervisor_resources(pid: int) -> ResourceSample:
    """The process tree rooted at ``pid`` (the container's main process)."""
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    for process in tree:
        process.cpu_percent(None)  # starts the window
    time.sleep(1.0)
    cpu = sum(p.cpu_percent(None) for p in tree)
    return ResourceSample(
        rss_mb=round(sum(p.memory_info().rss for p in tree) / 2**20, 2),
        open_fds=sum(p.num_fds() for p in tree),
        threads=sum(p.num_threads() for p in tree),
        cpu_percent=round(cpu, 1),
    )


def _ratio(end: float, start: float) -> float | None:
    return round(end / start, 3) if start else None


def run_soak(ctx: FaultContext, duration_s: float, every_s: float) -> FaultScenario:
    rng = random.Random(SEED)
    with ctx.scenario(
        "soak",
        "soak",
        f"a replica killed every {every_s:g} s for {duration_s:g} s; the supervisor's "
        "RSS, fds, threads and CPU at the start and the end",
        up_extra=("--backoff-reset", "2"),
    ) as scenario:
        pid = int(scenario.supervisor()["State"]["Pid"])
        start = supervisor_resources(pid)
        began = time.time()
        number = 0
        warm: ResourceSample | None = None
        while time.time() - began < duration_s:
            _churn(scenario, number, rng.randint(1, ctx.replicas))
            number += 1
            warmed = time.time() - began >= WARMUP_SHARE * duration_s
            if warm is None and number >= WARMUP_KILLS and warmed:
                time.sleep(QUIET_S)
                warm = supervisor_resources(pid)
            sleep_until(began + number * every_s)
        time.sleep(QUIET_S)
        end = supervisor_resources(pid)
        warm = warm or start
        if int(scenario.supervisor()["State"]["Pid"]) != pid:
            scenario.note("the supervisor restarted during the soak")
        scenario.result.soak = SoakFigures(
            duration_s=round(time.time() - began, 1),
            start=start,
            warm=warm,
            end=end,
            ratio={
                "rss_mb": _ratio(end.rss_mb, warm.rss_mb),
                "open_fds": _ratio(end.open_fds, warm.open_fds),
                "threads": _ratio(end.threads, warm.threads),
                "cpu_percent": _ratio(end.cpu_percent, warm.cpu_percent),
            },
        )
        ctx.progress(f"faults: soak: {number} kills; supervisor {start} -> {warm} -> {end}")
        scenario.result.app_restarts = None  # every replacement is of a killed replica
    return scenario.result


def _churn(scenario: Scenario, number: int, index: int) -> None:
    bench = scenario.bench
    cid = bench.rp_container(index)
    if number % 2 == 0:
        fault = scenario.fault("docker kill", index)
        scenario.ctx.client.api.kill(cid)
    else:
        pid = bench.listener_of(bench.rp_port, cid).pids[0]
        fault = scenario.fault("SIGKILL from the host", index)
        os.kill(pid, signal.SIGKILL)
    scenario.reconverge(fault, container_gone(cid))

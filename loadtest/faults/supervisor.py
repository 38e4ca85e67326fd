"""The detached supervisor SIGKILLed under load, from the host: its container's main
process (``docker inspect``'s State.Pid, docker-init) dies, the container exits and its
restart policy (unless-stopped) starts a fresh supervisor, which must adopt the running
replicas without restarting any.

Three scenarios, each on its own service:

* ``count`` kills in a row, each once the previous supervisor's successor published a
  status (Docker's restart delay doubles for a container that ran < 10 s: it shows in the
  reconvergence times);
* one kill during a rollout (``rollout --image reuseport-demo:v2``, killed once the first
  new replica runs; the rollout command must still succeed);
* one kill right after ``scale N+1 --no-wait``.

App restarts: replicas of the service that are gone afterwards although they were not
part of the change (all of them for a plain kill, the old ones for a scale), plus
containers started beyond what the change needs (N for the rollout, 1 for the scale). A
container the killed supervisor created but never started ran no app: it is not counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from loadtest.faults.common import MAX_SURGE, FaultContext, Scenario, Settled
from loadtest.harness.errors import SetupError
from loadtest.harness.results import FaultScenario

KILL = "supervisor SIGKILL"
ROLLOUT_IMAGE = "reuseport-demo:v2"
ROLLOUT_TIMEOUT_S = 120.0


def run_supervisor_faults(ctx: FaultContext, count: int) -> list[FaultScenario]:
    return [_in_a_row(ctx, count), _during_rollout(ctx), _during_scale(ctx)]


def _kill(scenario: Scenario, kind: str = KILL) -> Settled:
    """SIGKILL of the supervisor container's main process; settled once a different
    supervisor process published a status."""
    inspected = scenario.supervisor()
    pid = int(inspected["State"]["Pid"])
    if not pid:
        raise SetupError(f"{scenario.name}: the supervisor is not running")
    old = scenario.status()
    old_pid = old.pid if old is not None else None
    scenario.fault(kind, None)
    os.kill(pid, signal.SIGKILL)
    return lambda status: status.pid is not None and status.pid != old_pid


def _in_a_row(ctx: FaultContext, count: int) -> FaultScenario:
    with ctx.scenario(
        "supervisor kill",
        "supervisor",
        f"{count} SIGKILLs of the detached supervisor in a row, each once its successor published",
    ) as scenario:
        before = scenario.replica_ids()
        for number in range(1, count + 1):
            settled = _kill(scenario)
            took = scenario.reconverge(scenario.faults[-1], settled)
            ctx.progress(f"faults: supervisor kill {number}/{count}: back in {took} s")
        scenario.result.app_restarts = len(before.keys() - scenario.replica_ids().keys())
    return scenario.result


def _during_rollout(ctx: FaultContext) -> FaultScenario:
    with ctx.scenario(
        "supervisor kill during rollout",
        "supervisor",
        f"SIGKILL of the supervisor during `rollout --image {ROLLOUT_IMAGE}`",
    ) as scenario:
        before = scenario.replica_ids()
        rollout = _background(
            scenario, "rollout", scenario.name, "--image", ROLLOUT_IMAGE, "--min-ready", "0.5"
        )
        _wait_new_replica(scenario, before)
        settled = _kill(scenario, f"{KILL} (rollout)")
        try:
            code = rollout.wait(timeout=ROLLOUT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rollout.kill()
            code = rollout.wait()
        scenario.note(f"rollout exited {code}")
        scenario.reconverge(scenario.faults[-1], settled)
        images = {r.get("image") for r in scenario.ps_rows()}
        scenario.note(f"images after: {', '.join(sorted(str(i) for i in images))}")
        extra = scenario.watcher.started if scenario.watcher else []
        scenario.result.app_restarts = max(0, len(extra) - ctx.replicas)
    return scenario.result


def _during_scale(ctx: FaultContext) -> FaultScenario:
    want = ctx.replicas + 1
    with ctx.scenario(
        "supervisor kill during scale",
        "supervisor",
        f"SIGKILL of the supervisor right after `scale {want} --no-wait`",
    ) as scenario:
        scenario.result.running_bound = want + MAX_SURGE
        before = scenario.replica_ids()
        scenario.bench.cli.run("scale", scenario.name, str(want), "--no-wait", timeout=60)
        settled = _kill(scenario, f"{KILL} (scale)")
        scenario.reconverge(scenario.faults[-1], settled, desired=want)
        gone = len(before.keys() - scenario.replica_ids().keys())
        started = len(scenario.watcher.started) if scenario.watcher else 0
        scenario.result.app_restarts = gone + max(0, started - 1)
    return scenario.result


def _background(scenario: Scenario, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "reuseport", *args],
        env=scenario.bench.cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_new_replica(scenario: Scenario, before: dict[str, int], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scenario.replica_ids().keys() - before.keys():
            return
        time.sleep(0.02)
    raise SetupError(f"{scenario.name}: the rollout started no new replica in {timeout_s:g} s")

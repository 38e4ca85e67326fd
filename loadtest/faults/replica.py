"""Random replica faults under load: K faults, each a random kind on a random replica, each
followed by reconvergence before the next.

Kinds (``KINDS``): SIGKILL of the replica's listening process from the host, ``docker
kill``, ``docker rm -f``, ``docker stop`` (graceful: the app drains), ``docker pause`` (the
supervisor unpauses a paused replica by rule; if it is still paused once the wait is over
it is unpaused here and that is noted), and an OOM kill.

OOM: ``up`` has no memory flag (none is added for this), so the kernel's OOM killer is
made to act on a running replica: ``docker update --memory 96m --memory-swap 96m`` on its
container, ``oom_score_adj`` 1000 for the app process (so the killer picks it), then a
process ``docker exec``ed into the container allocates until the cgroup is full. The app
dies of the OOM kill and the container with it (Docker reports ``OOMKilled``; how many were
confirmed is a note).

The service runs with ``--backoff-reset 2`` so a replica faulted twice within a few
seconds is not held back by crash-loop backoff (a deliberate delay, not reconvergence).
The smoke run injects each kind once, in random order; the full run ``count`` of them.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time

import docker.errors

from loadtest.faults.common import Fault, FaultContext, Scenario, container_gone
from loadtest.harness.results import FaultScenario

SIGKILL = "SIGKILL from the host"
DOCKER_KILL = "docker kill"
DOCKER_RM = "docker rm -f"
DOCKER_STOP = "docker stop"
DOCKER_PAUSE = "docker pause"
OOM = "OOM kill"
KINDS = (SIGKILL, DOCKER_KILL, DOCKER_RM, DOCKER_STOP, DOCKER_PAUSE, OOM)
STOP_TIMEOUT_S = 3
PAUSE_WAIT_S = 15.0  # after this, a replica still paused is unpaused here (and noted)
OOM_LIMIT = "96m"
OOM_WAIT_S = 20.0
GAP_S = 0.3  # after a reconvergence, before the next fault
SEED = 9
# Allocates and touches 8 MiB at a time until the cgroup's OOM killer acts.
ALLOCATE = "b = []\nwhile True:\n    b.append(b'\\1' * (8 << 20))"


def run_replica_faults(ctx: FaultContext, count: int) -> FaultScenario:
    rng = random.Random(SEED)
    if ctx.smoke:
        kinds = list(KINDS)
        rng.shuffle(kinds)
    else:
        kinds = [rng.choice(KINDS) for _ in range(count)]
    with ctx.scenario(
        "replica faults",
        "replica",
        f"{len(kinds)} random faults ({', '.join(KINDS)}) on random replicas, each followed "
        "by reconvergence",
        up_extra=("--backoff-reset", "2", "--stop-timeout", str(STOP_TIMEOUT_S)),
    ) as scenario:
        oom_confirmed = oom_tried = 0
        for number, kind in enumerate(kinds, 1):
            index = rng.randint(1, ctx.replicas)
            if kind == OOM:
                oom_tried += 1
                oom_confirmed += _oom(scenario, index)
            else:
                _one(scenario, kind, index)
            fault = scenario.faults[-1]
            ctx.progress(
                f"faults: replica faults {number}/{len(kinds)}: {kind} of replica {index}: "
                f"reconverged in {_s(fault)}"
            )
            time.sleep(GAP_S)
        if oom_tried:
            scenario.note(f"OOM: Docker reported OOMKilled for {oom_confirmed} of {oom_tried}")
        # Every replacement is of a faulted replica: the tool restarted nothing else.
        scenario.result.app_restarts = None
    return scenario.result


def _s(fault: Fault) -> str:
    return "never" if fault.done_wall is None else f"{fault.done_wall - fault.since:.2f} s"


def _one(scenario: Scenario, kind: str, index: int) -> None:
    bench = scenario.bench
    cid = bench.rp_container(index)
    container = scenario.ctx.client.containers.get(cid)
    pid = bench.listener_of(bench.rp_port, cid).pids[0] if kind == SIGKILL else 0
    fault = scenario.fault(kind, index)
    if kind == SIGKILL:
        os.kill(pid, signal.SIGKILL)
    elif kind == DOCKER_KILL:
        container.kill()
    elif kind == DOCKER_RM:
        container.remove(force=True)
    elif kind == DOCKER_STOP:
        container.stop(timeout=STOP_TIMEOUT_S)
    elif kind == DOCKER_PAUSE:
        container.pause()
        _reconverge_paused(scenario, fault, cid)
        return
    scenario.reconverge(fault, container_gone(cid))


def _paused(scenario: Scenario, cid: str) -> bool:
    try:
        return bool(scenario.ctx.client.api.inspect_container(cid)["State"].get("Paused"))
    except docker.errors.NotFound:
        return False


def _reconverge_paused(scenario: Scenario, fault: Fault, cid: str) -> None:
    scenario.reconverge(fault, lambda _status: not _paused(scenario, cid), timeout_s=PAUSE_WAIT_S)
    if _paused(scenario, cid):
        scenario.note("a paused replica was still paused after the wait: unpaused by the bench")
        with contextlib.suppress(docker.errors.APIError):
            scenario.ctx.client.api.unpause(cid)
        scenario.reconverge(fault)


def _oom(scenario: Scenario, index: int) -> int:
    """An OOM kill of replica ``index``'s app (see the module doc); 1 if Docker said so."""
    bench = scenario.bench
    cid = bench.rp_container(index)
    pid = bench.listener_of(bench.rp_port, cid).pids[0]
    client = scenario.ctx.client
    client.api.update_container(cid, mem_limit=OOM_LIMIT, memswap_limit=OOM_LIMIT)
    with open(f"/proc/{pid}/oom_score_adj", "w") as adj:
        adj.write("1000\n")
    fault = scenario.fault(OOM, index)
    client.containers.get(cid).exec_run(["python3", "-c", ALLOCATE], detach=True)
    oom_killed = False
    deadline = time.monotonic() + OOM_WAIT_S
    while time.monotonic() < deadline:
        try:
            state = client.api.inspect_container(cid)["State"]
        except docker.errors.NotFound:
            break  # already removed by the supervisor
        oom_killed = oom_killed or bool(state.get("OOMKilled"))
        if not state.get("Running"):
            break
        time.sleep(0.02)
    scenario.reconverge(fault, container_gone(cid))
    return int(oom_killed)

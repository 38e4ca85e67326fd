"""State-file faults under load: the service's spec file (``NAME.spec.json`` in the state
directory) replaced by a corrupt one, a truncated one, and one of a newer schema version
than this reuseport reads.

Each on its own service: the bad file is written (atomically, mode 0600, as the store
writes), then ``ps --json`` is read until its ``problem`` names it; the service must keep
running meanwhile (the same replica containers for ``HOLD_S``). Then the original file is
put back; the problem must clear and supervision must resume: a ``docker kill`` of replica
1 is replaced (that replacement is the only one expected). The reconvergence figure is from
the restore to a converged status without a problem. App restarts: replica containers gone
other than the killed one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from loadtest.faults.common import FaultContext, Scenario, container_gone
from loadtest.harness.results import FaultScenario
from reuseport.store import SCHEMA_VERSION, VERSION_KEY

PROBLEM_TIMEOUT_S = 20.0
HOLD_S = 3.0


def _corrupt(original: bytes) -> bytes:
    return b"{this is not json" + original[:20]


def _truncated(original: bytes) -> bytes:
    return original[: len(original) // 2]


def _newer(original: bytes) -> bytes:
    data = json.loads(original)
    data[VERSION_KEY] = SCHEMA_VERSION + 1
    return json.dumps(data).encode()


BAD_FILES: dict[str, Callable[[bytes], bytes]] = {
    "corrupt": _corrupt,
    "truncated": _truncated,
    f"schema_version {SCHEMA_VERSION + 1}": _newer,
}


def run_statefile_faults(ctx: FaultContext) -> list[FaultScenario]:
    return [_one(ctx, kind, make) for kind, make in BAD_FILES.items()]


def _write(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".bench-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)


def _one(ctx: FaultContext, kind: str, make: Callable[[bytes], bytes]) -> FaultScenario:
    with ctx.scenario(
        f"spec file {kind}",
        "state file",
        f"the spec file replaced by a {kind} one, then restored",
    ) as scenario:
        path = scenario.bench.store.root / f"{scenario.name}.spec.json"
        original = path.read_bytes()
        scenario.undo.append(lambda: _write(path, original))
        before = scenario.replica_ids()
        fault = scenario.fault(f"spec file {kind}", None)
        _write(path, make(original))
        scenario.result.problem = _wait_problem(scenario)
        time.sleep(HOLD_S)
        during = scenario.replica_ids()
        _write(path, original)
        fault.since = time.time()
        scenario.reconverge(fault)
        victim = next(cid for cid, index in scenario.replica_ids().items() if index == 1)
        kill = scenario.fault("docker kill after the restore", 1)
        scenario.ctx.client.api.kill(victim)
        scenario.reconverge(kill, container_gone(victim))
        after = scenario.replica_ids()
        changed = len(before.keys() - during.keys())
        changed += len((before.keys() - {victim}) - after.keys())
        scenario.result.app_restarts = changed
        if scenario.result.problem is None:
            scenario.note("ps --json never showed a problem")
    return scenario.result


def _wait_problem(scenario: Scenario) -> str | None:
    deadline = time.monotonic() + PROBLEM_TIMEOUT_S
    while time.monotonic() < deadline:
        for row in scenario.ps_rows():
            if row.get("problem"):
                return str(row["problem"])
        time.sleep(0.2)
    return None

"""What every fault scenario shares: its own service (``Bench``) under its own locust run,
a watcher of the replica containers, the faults it injects and the figures it reports.

A scenario is a context manager (:meth:`FaultContext.scenario`): on entry ``up -d`` of N
replicas, the watcher and locust (both user classes, a 5 s network timeout so a request
stuck on a stopped replica fails inside the run); the body injects faults, each followed
by :meth:`Scenario.reconverge`; on exit locust stops, the figures are computed and the
service is removed (``down`` and a label sweep) whatever happened.

* Running replicas: the watcher lists the service's running replica containers every 50 ms
  (the most at once must never exceed desired + max surge), and counts their creations from
  the engine's events (all of them; a hot loop shows as many per second).
* Reconvergence: the status file is read every 50 ms until a pass that ended after the
  fault shows the service converged (desired replicas, all ready, current template, no
  ``problem``) and the fault's own condition holds (the killed container is gone, the
  paused one runs again, a new supervisor published); then ``ps --json`` must agree (every
  row ready, as many as desired), else polling goes on. The time is the status file's.
* Failures: a failed request belongs to a fault when it ended between the fault and 1 s
  after its reconvergence and its connection was on the faulted replica (or is unknown: a
  new connection per request). Every other failure, by locust's own count, is "other".
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from loadtest import locustrun
from loadtest.harness.bench import Bench, BenchConfig
from loadtest.harness.errors import SetupError
from loadtest.harness.results import FaultFigures, FaultScenario
from loadtest.harness.signals import signals_held
from reuseport import labels
from reuseport.status import ServiceStatus

MAX_SURGE = 1  # the tool's default --max-surge; a failing replica's successor uses it too
NETWORK_TIMEOUT_S = 5.0
WARMUP_S = 1.0
ATTRIBUTION_S = 1.0
SAMPLE_S = 0.05
CONVERGE_TIMEOUT_S = 60.0
LOCUST_LIMIT_S = 1800.0  # only bounds a locust whose parent died; it is stopped by SIGTERM

Settled = Callable[[ServiceStatus], bool]


@dataclass
class Fault:
    wall: float  # time.time() right before the fault
    kind: str
    replica: int | None  # the replica deliberately faulted (None: the tool's own fault)
    since: float = 0.0  # reconvergence is measured from here (the fault, or its repair)
    done_wall: float | None = None  # when the status file showed it reconverged


class Watcher:
    """Running replica containers every 50 ms, and creations from the engine's events."""

    def __init__(self, service: str) -> None:
        self.filters = {"label": labels.filters(service, labels.ROLE_REPLICA)}
        self.list_client = docker.from_env(timeout=30)
        self.event_client = docker.from_env(timeout=30)
        self.running_max = 0
        self.created: list[float] = []  # time.time() of each replica container creation
        # ... and of each start: a container created by a supervisor killed before it
        # started it never ran the app (its successor removes it and creates another).
        self.started: list[float] = []
        self.done = threading.Event()
        self.stream: Any = self.event_client.api.events(
            decode=True,
            filters={**self.filters, "type": "container", "event": ["create", "start"]},
        )
        self.threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._events, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _sample(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(docker.errors.APIError, OSError):
                running = len(self.list_client.api.containers(filters=self.filters))
                self.running_max = max(self.running_max, running)
            self.done.wait(SAMPLE_S)

    def _events(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when stop() closes it
            for event in self.stream:
                happened = self.started if event.get("Action") == "start" else self.created
                happened.append(time.time())

    def stop(self) -> None:
        self.done.set()
        with contextlib.suppress(Exception):
            self.stream.close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.list_client.close()
        self.event_client.close()

    def max_per_second(self) -> int:
        """The most creations in any 1 s window."""
        times = sorted(self.created)
        best = 0
        for i, start in enumerate(times):
            best = max(best, sum(1 for t in times[i:] if t < start + 1.0))
        return best


@dataclass
class FaultContext:
    """What every scenario of one run shares."""

    client: docker.DockerClient
    image: str
    replicas: int
    users: int
    first_port: int
    state_dir: Path
    workdir: Path
    progress: Callable[[str], None]
    smoke: bool
    left_behind: list[str] = field(default_factory=list)
    count: int = 0

    @contextlib.contextmanager
    def scenario(
        self,
        name: str,
        group: str,
        description: str,
        up_extra: tuple[str, ...] = (),
        image: str | None = None,
    ) -> Iterator[Scenario]:
        self.count += 1
        config = BenchConfig(
            name=f"bench-fault{self.count}-{os.getpid()}",
            state_dir=self.state_dir,
            image=image or self.image,
            replicas=self.replicas,
            first_port=self.first_port,
        )
        bench = Bench(config, self.client, self.progress)
        scenario = Scenario(self, bench, FaultScenario(name=name, group=group))
        scenario.result.description = description
        scenario.result.running_bound = self.replicas + MAX_SURGE
        try:
            bench.cleanup_stale()
            bench.take_ports()
            bench.start_reuseport(extra=up_extra)
            scenario.start_load()
            self.progress(f"faults: {name}: {description}")
            yield scenario
            scenario.finish()
        finally:
            with signals_held():
                scenario.stop_load()
                for undo in reversed(scenario.undo):
                    with contextlib.suppress(Exception):  # every undo runs; left-overs are listed
                        undo()
                left = bench.cleanup()
            self.left_behind += left
            if left:
                self.progress(f"faults: {name}: LEFT BEHIND: {', '.join(left)}")


class Scenario:
    def __init__(self, ctx: FaultContext, bench: Bench, result: FaultScenario) -> None:
        self.ctx = ctx
        self.bench = bench
        self.name = bench.name
        self.result = result
        self.faults: list[Fault] = []
        self.undo: list[Callable[[], None]] = []  # run at exit, last first
        self.locust: subprocess.Popen[bytes] | None = None
        self.watcher: Watcher | None = None
        self.files = locustrun.LocustFiles(ctx.workdir, f"faults_{result.name}")
        self.t0 = 0.0

    # -- load ----------------------------------------------------------------------------

    def start_load(self) -> None:
        self.watcher = Watcher(self.name)
        self.locust = locustrun.start(
            self.bench.rp_port,
            self.ctx.users,
            LOCUST_LIMIT_S,
            self.files,
            network_timeout_s=NETWORK_TIMEOUT_S,
        )
        self.t0 = locustrun.wait_ready(self.locust, self.files)
        time.sleep(WARMUP_S)

    def stop_load(self) -> None:
        if self.locust is not None:
            locustrun.stop(self.locust)
        if self.watcher is not None and not self.watcher.done.is_set():
            self.watcher.stop()

    # -- the service ---------------------------------------------------------------------

    def status(self) -> ServiceStatus | None:
        return ServiceStatus.from_json(self.bench.store.load_status(self.name))

    def replica_ids(self) -> dict[str, int]:
        """Running replica container id -> index."""
        return self.bench.rp_containers()

    def supervisor(self) -> dict[str, Any]:
        """The detached supervisor container's ``docker inspect``."""
        found = self.ctx.client.api.containers(
            all=True, filters={"label": labels.filters(self.name, labels.ROLE_SUPERVISOR)}
        )
        if len(found) != 1:
            raise SetupError(f"{self.name}: {len(found)} supervisor containers, expected 1")
        inspected: dict[str, Any] = self.ctx.client.api.inspect_container(found[0]["Id"])
        return inspected

    def ps_rows(self) -> list[dict[str, Any]]:
        """``ps --json`` rows ([] when it fails: its stderr is a note)."""
        proc = self.bench.cli.run("ps", self.name, "--json", timeout=60, check=False)
        if proc.returncode != 0:
            self.note(f"ps exited {proc.returncode}: {proc.stderr.strip()[:200]}")
            return []
        rows: list[dict[str, Any]] = json.loads(proc.stdout)
        return [r for r in rows if r.get("state") != "foreign"]

    def note(self, text: str) -> None:
        if text not in self.result.notes:
            self.result.notes.append(text)

    # -- faults --------------------------------------------------------------------------

    def fault(self, kind: str, replica: int | None) -> Fault:
        now = time.time()
        fault = Fault(now, kind, replica, since=now)
        self.faults.append(fault)
        return fault

    def reconverge(
        self,
        fault: Fault,
        settled: Settled = lambda _status: True,
        desired: int | None = None,
        timeout_s: float = CONVERGE_TIMEOUT_S,
    ) -> float | None:
        """Seconds from ``fault.since`` until the service is converged again (see the
        module doc); None after ``timeout_s``."""
        want = desired if desired is not None else self.bench.replicas
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            if (
                status is not None
                and status.at > fault.since
                and status.desired == want
                and status.converged()
                and not status.problem
                and settled(status)
            ):
                at = status.at
                rows = self.ps_rows()
                if len(rows) == want and all(r.get("ready") for r in rows):
                    fault.done_wall = at
                    return round(at - fault.since, 3)
            time.sleep(SAMPLE_S)
        self.ctx.progress(f"faults: {self.result.name}: {fault.kind}: NOT reconverged")
        return None

    # -- figures -------------------------------------------------------------------------

    def _owner(self, failure: dict[str, Any]) -> Fault | None:
        for fault in self.faults:
            if fault.replica is None:
                continue
            end = (fault.done_wall or time.time()) + ATTRIBUTION_S
            if fault.wall <= failure["t"] <= end and failure.get("replica") in (
                None,
                str(fault.replica),
            ):
                return fault
        return None

    def finish(self) -> None:
        """Stop the load and fill in the figures."""
        self.stop_load()
        stats = json.loads(self.files.stdout.read_text() or "[]")
        recorded = json.loads(self.files.replicas.read_text())
        owners = [self._owner(f) for f in recorded.get("failures", [])]
        result = self.result
        result.requests = sum(int(e.get("num_requests", 0)) for e in stats)
        result.failures = sum(int(e.get("num_failures", 0)) for e in stats)
        result.failures_on_faulted = sum(owner is not None for owner in owners)
        result.failures_other = result.failures - result.failures_on_faulted
        result.failures_by_error = recorded.get("failures_by_error", {})
        assert self.watcher is not None
        result.running_max = self.watcher.running_max
        result.creations = len(self.watcher.created)
        result.creations_max_per_s = self.watcher.max_per_second()
        result.faults = [
            FaultFigures(
                t_s=round(f.wall - self.t0, 2),
                kind=f.kind,
                replica=f.replica,
                reconverge_s=None if f.done_wall is None else round(f.done_wall - f.since, 3),
                failures=sum(owner is f for owner in owners),
            )
            for f in self.faults
        ]
        times = [f.reconverge_s for f in result.faults]
        result.converged = bool(times) and all(t is not None for t in times)
        result.reconverge_s = max((t for t in times if t is not None), default=None)
        self.ctx.progress(
            f"faults: {result.name}: {result.requests:,} requests, {result.failures_on_faulted} "
            f"failed on faulted replicas, {result.failures_other} other; running max "
            f"{result.running_max} (bound {result.running_bound}); reconverge max "
            f"{result.reconverge_s} s; app restarts {result.app_restarts}"
        )


def container_gone(container_id: str) -> Settled:
    """Settled once the status no longer lists the container as running."""
    short = container_id[:12]
    return lambda status: all(r.short_id != short or not r.running for r in status.replicas)


def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)

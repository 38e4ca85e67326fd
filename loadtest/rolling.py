"""Rollout under load: v1 -> v2 with locust running, for each client kind alone (a new
connection per request; keep-alive), once with net.ipv4.tcp_migrate_req=1 and once with 0,
so the failed-request counts side by side say what the setting is worth; then the same
rollout under new-connection-per-request overload (wrk, tcp_migrate_req=0) with the
kernel's hash and steered (loadtest.overload).

The host setting is restored to what it was before, whatever happens.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker

from loadtest import locustrun, overload
from loadtest.harness.bench import Bench, BenchConfig, free_ports
from loadtest.harness.overloadresult import OverloadRun
from loadtest.harness.results import RolloutResult, RolloutRun
from loadtest.harness.signals import signals_held
from reuseport import host, labels

WARMUP_S = 2.0
TAIL_S = 2.0
MIN_READY_S = 0.5
CLIENTS = ("NewConnectionUser", "KeepAliveUser")


class _Counter(threading.Thread):
    """Samples the number of running replica containers while the rollout runs."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.client = docker.from_env()
        self.filters = {"label": labels.filters(name, labels.ROLE_REPLICA)}
        self.counts: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.counts.append(len(self.client.api.containers(filters=self.filters)))
            self.done.wait(0.05)

    def stop(self) -> list[int]:
        self.done.set()
        self.join()
        self.client.close()
        return self.counts


def _one(
    migrate: int,
    clients: str,
    bench: Bench,
    image_to: str,
    port: int,
    users: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> RolloutRun:
    host.TCP_MIGRATE_REQ.write_text(f"{migrate}\n")
    name = bench.name
    locust = None
    try:
        bench.start_reuseport(port)
        files = locustrun.LocustFiles(workdir, f"rollout_{clients}_migrate{migrate}")
        locust = locustrun.start(port, users, 60, files, user_classes=(clients,))
        locustrun.wait_ready(locust, files)
        time.sleep(WARMUP_S)
        counter = _Counter(name)
        counter.start()
        completed, seconds = bench.rollout(image_to, MIN_READY_S)
        counts = counter.stop()
        time.sleep(TAIL_S)
        locustrun.stop(locust)
        stats = json.loads(files.stdout.read_text() or "[]")
        recorded = json.loads(files.replicas.read_text())
        progress(
            f"rollout with {clients} clients, tcp_migrate_req={migrate}: "
            f"{'completed' if completed else 'FAILED'} in {seconds:.1f} s"
        )
        return RolloutRun(
            clients=clients,
            tcp_migrate_req=migrate,
            rollout_ok=completed,
            rollout_s=round(seconds, 2),
            requests=sum(int(e.get("num_requests", 0)) for e in stats),
            failures=sum(int(e.get("num_failures", 0)) for e in stats),
            failures_by_error=recorded.get("failures_by_error", {}),
            running_min=min(counts, default=0),
            running_max=max(counts, default=0),
        )
    finally:
        with signals_held():
            if locust is not None:
                locustrun.stop(locust)
            _clean(bench, progress)


def _clean(bench: Bench, progress: Callable[[str], None]) -> None:
    left = bench.cleanup()
    if left:
        progress(f"rollout: LEFT BEHIND: {', '.join(left)}")


def _overload(
    bench: Bench, image_to: str, port: int, progress: Callable[[str], None]
) -> list[OverloadRun]:
    """The overload rows (loadtest.overload): --balance hash, then steered."""
    runs = []
    for balance in overload.BALANCES:
        try:
            runs.append(overload.run_one(balance, bench, image_to, port, progress))
        finally:
            with signals_held():
                _clean(bench, progress)
    return runs


def run_rollout(
    image_from: str,
    image_to: str,
    replicas: int,
    port: int,
    users: int,
    workdir: Path,
    progress: Callable[[str], None] = print,
    overload_rows: bool = True,
) -> RolloutResult:
    before = host.tcp_migrate_req()
    if before is None:
        return RolloutResult(skipped="this kernel has no net.ipv4.tcp_migrate_req")
    (port,) = free_ports(port, 1)
    runs = []
    overloaded: list[OverloadRun] = []
    client = docker.from_env(timeout=60)
    with tempfile.TemporaryDirectory(prefix="reuseport-rolling-") as state:
        config = BenchConfig(
            name=f"bench-rollout-{os.getpid()}",
            state_dir=Path(state),
            image=image_from,
            replicas=replicas,
        )
        bench = Bench(config, client, progress=lambda line: None)  # its steps: not news here
        try:
            # Each client kind alone: keep-alive clients meet the drain on their open
            # connections, new-connection clients meet it in the closing listener's queue.
            for clients in CLIENTS:
                for migrate in (1, 0):
                    runs.append(
                        _one(migrate, clients, bench, image_to, port, users, workdir, progress)
                    )
            if overload_rows:
                overloaded = _overload(bench, image_to, port, progress)
        finally:
            host.TCP_MIGRATE_REQ.write_text(f"{before}\n")  # as it was
            client.close()
    return RolloutResult(
        replicas=replicas,
        from_image=image_from,
        to_image=image_to,
        users=users,
        min_ready_s=MIN_READY_S,
        max_surge=1,
        max_unavailable=0,
        runs=runs,
        overload=overloaded,
    )

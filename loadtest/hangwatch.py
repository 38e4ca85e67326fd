"""The hang part's victim and what it watches after the SIGSTOP: the port (sock_diag) every
20 ms, the stopped process, and on the Docker side the container's health status; and the
figures of one setup from that and locust's records."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from loadtest.harness.bench import Bench
from loadtest.harness.results import HangFigures, HangSecond
from reuseport.kernel import sockets as kernel

POLL_S = 0.02
HEALTH_POLL_S = 0.1  # an API round trip; Docker changes the status at most once a check


@dataclass(frozen=True)
class Victim:
    """The replica that is stopped: its container, listening host process and socket."""

    container_id: str
    pid: int
    inode: int


@dataclass
class Watch:
    """What the kernel (and Docker) showed after the SIGSTOP; seconds since it, or None."""

    successor_listening_s: float | None = None
    stopped_listener_gone_s: float | None = None
    stopped_process_gone_s: float | None = None
    unhealthy_s: float | None = None
    listening_min: int = 0
    listening_max: int = 0
    stopped_accept_queue_max: int = 0


def find_victim(bench: Bench, setup: str, index: int) -> Victim:
    """Replica ``index``'s listening host process, from the kernel (its container's socket)."""
    if setup == "docker":
        port = bench.dk_port
        cid = bench.dk_containers[index - 1].id
    else:  # one of the tool's setups, on the bench's reuseport service
        port = bench.rp_port
        cid = bench.rp_container(index)
    listener = bench.listener_of(port, cid)
    return Victim(cid, listener.pids[0], listener.inode)


def stop_and_watch(
    bench: Bench,
    setup: str,
    index: int,
    port: int,
    duration_s: float,
    announce: Callable[[Victim], None],
    health: Callable[[Victim], Callable[[], str]] | None = None,
) -> tuple[float, Watch]:
    """SIGSTOP replica ``index`` (found from the kernel), ``announce`` it, and watch the
    port for ``duration_s``: the wall-clock time of the SIGSTOP and what was seen."""
    victim = find_victim(bench, setup, index)
    before = set(kernel.listening_inodes(port))
    stop_wall = time.time()
    t0 = time.perf_counter()
    os.kill(victim.pid, signal.SIGSTOP)
    announce(victim)
    watch = watch_port(port, victim, before, t0, duration_s, health(victim) if health else None)
    return stop_wall, watch


def _process_gone(pid: int) -> bool:
    """Exited or a zombie (a stopped process is neither: state T)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith(("Z", "X"))


def watch_port(
    port: int,
    victim: Victim,
    before: set[int],
    t0: float,
    duration_s: float,
    health: Callable[[], str] | None,
) -> Watch:
    """Poll the port (sock_diag) every POLL_S until ``duration_s`` after ``t0``."""
    watch = Watch(listening_min=len(before), listening_max=len(before))
    next_health = t0
    while (now := time.perf_counter()) < t0 + duration_s:
        sockets = kernel.listening_inodes(port)
        since = time.perf_counter() - t0
        watch.listening_min = min(watch.listening_min, len(sockets))
        watch.listening_max = max(watch.listening_max, len(sockets))
        if watch.successor_listening_s is None and sockets.keys() - before:
            watch.successor_listening_s = since
        if victim.inode in sockets:
            queue = sockets[victim.inode][3]
            watch.stopped_accept_queue_max = max(watch.stopped_accept_queue_max, queue)
        elif watch.stopped_listener_gone_s is None:
            watch.stopped_listener_gone_s = since
        if watch.stopped_process_gone_s is None and _process_gone(victim.pid):
            watch.stopped_process_gone_s = since
        if health is not None and watch.unhealthy_s is None and now >= next_health:
            with contextlib.suppress(docker.errors.APIError):
                if health() == "unhealthy":
                    watch.unhealthy_s = time.perf_counter() - t0
            next_health = now + HEALTH_POLL_S
        time.sleep(POLL_S)
    return watch


def _round2(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def figures(
    description: str,
    port: int,
    stats: list[dict[str, Any]],
    recorded: dict[str, Any],
    watch: Watch,
    stop_wall: float,
    load_start: float,
    end_wall: float,
) -> HangFigures:
    """One setup's figures: locust's ``stats`` and the locustfile's ``recorded`` records,
    the ``watch``, and the wall-clock moments of the SIGSTOP, the load start and end."""
    slow = recorded.get("slow_over_1s", {})
    failures = recorded.get("failures", [])
    per_second = recorded.get("per_second", {})
    # Whole wall-clock seconds of the load only (partial ones would look like dips), placed
    # relative to the SIGSTOP so both setups line up on one chart.
    throughput = [
        HangSecond(round(int(second) - stop_wall, 2), counts[0], counts[1])
        for second, counts in sorted(per_second.items(), key=lambda kv: int(kv[0]))
        if load_start <= int(second) and int(second) + 1 <= end_wall
    ]
    return HangFigures(
        description=description,
        port=port,
        requests=sum(int(e.get("num_requests", 0)) for e in stats),
        ok=sum(sum(c.values()) for c in recorded.get("shares", {}).values()),
        slow=sum(slow.values()),
        slow_by_user_class=slow,
        # Locust's own count: the locustfile keeps at most 50,000 failure records.
        failures=sum(int(e.get("num_failures", 0)) for e in stats),
        failures_by_error=recorded.get("failures_by_error", {}),
        failures_by_user_class=dict(Counter(f.get("kind", "?") for f in failures)),
        successor_listening_s=_round2(watch.successor_listening_s),
        stopped_listener_gone_s=_round2(watch.stopped_listener_gone_s),
        stopped_process_gone_s=_round2(watch.stopped_process_gone_s),
        unhealthy_s=_round2(watch.unhealthy_s),
        listening_min=watch.listening_min,
        listening_max=watch.listening_max,
        stopped_accept_queue_max=watch.stopped_accept_queue_max,
        throughput=throughput,
    )

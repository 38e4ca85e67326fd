"""Swarm convergence: reuseport's Swarm engine (with its node agents) next to plain Swarm
running the very same service definition without them, on a real two-node swarm on this
machine (``loadtest.harness.twonode``).

    .venv/bin/python -m loadtest.swarmconverge [--rounds 3] [--update-readme]

Per event, the seconds from the fault until the affected node's kernel again shows the
wanted number of listeners on the port, none of them the faulted process (measured from
the kernels, the same for both setups), median of ``--rounds``:

- a task's process SIGKILLed on node 2 (Swarm's restart policy heals both setups);
- a task's process SIGSTOPped on node 2 while clients keep connecting to node 2 (hung:
  plain Swarm, with no app health check, never notices; the agent ends it once its accept
  queue has not moved for the hang window, 2 s here);
- node 2 drained (Swarm moves its task; 2 tasks, one per node before).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker
import httpx

from loadtest.harness.cli import ReuseportCli
from loadtest.harness.twonode import NODE2_ADDR, TwoNodes, two_node_swarm
from reuseport.options import build_spec
from reuseport.swarm.engine import SwarmEngine

REPO = Path(__file__).resolve().parent.parent
IMAGES = ["reuseport-demo:latest", "reuseport:latest"]
HANG_WINDOW_S = 2.0
GIVE_UP_S = 30.0  # a fault not healed by then counts as never
EVENTS = ("task killed", "task hung (SIGSTOP)", "node drained")
SETUPS = ("reuseport", "plain")


@dataclass
class ConvergeResult:
    rounds: int
    hang_window_s: float
    give_up_s: float
    seconds: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)

    def median(self, event: str, setup: str) -> float | None:
        found = self.seconds[event][setup]
        if not found or any(s is None for s in found):
            return None
        return statistics.median(s for s in found if s is not None)


def _heal_time(nodes: TwoNodes, port: int, node: int, want: int, gone: int | None) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_S:
        pids = nodes.listeners(port, node)
        if len(pids) == want and (gone is None or gone not in pids):
            return round(time.monotonic() - started, 2)
        time.sleep(0.05)
    return None


def _wait(what: str, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _measure(nodes: TwoNodes, port: int, replicas_on_2: int) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    victim = nodes.listeners(port, 2)[0]
    os.kill(victim, signal.SIGKILL)
    found["task killed"] = _heal_time(nodes, port, 2, replicas_on_2, victim)
    _wait("node 2 whole", lambda: len(nodes.listeners(port, 2)) == replicas_on_2)
    victim = nodes.listeners(port, 2)[0]
    # A hang shows only under traffic (connections left in its accept queue): clients keep
    # coming to node 2, as an L4 balancer in front would send them.
    with _clients(NODE2_ADDR, port):
        os.kill(victim, signal.SIGSTOP)
        found["task hung (SIGSTOP)"] = _heal_time(nodes, port, 2, replicas_on_2, victim)
    # Plain Swarm's hung task is still there: ended, so the next round starts whole (the
    # agent's is gone already).
    with contextlib.suppress(ProcessLookupError):
        os.kill(victim, signal.SIGKILL)
    _wait("node 2 whole", lambda: len(nodes.listeners(port, 2)) == replicas_on_2, 60)
    return found


@contextlib.contextmanager
def _clients(host: str, port: int, per_second: float = 50) -> Iterator[None]:
    """New connections to ``host:port`` from a thread, ``per_second``, until exit."""
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=1.0, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while not stop.wait(1 / per_second):
                with contextlib.suppress(httpx.HTTPError):
                    c.get(f"http://{host}:{port}/", headers={"Connection": "close"})

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def _drain(nodes: TwoNodes, port: int) -> float | None:
    node2 = nodes.node1.nodes.get(nodes.node2_id)
    node2.update(dict(node2.attrs["Spec"], Availability="drain"))
    took = _heal_time(nodes, port, 1, 2, None)
    node2.reload()
    node2.update(dict(node2.attrs["Spec"], Availability="active"))
    return took


def _spread(nodes: TwoNodes, port: int, on1: int, on2: int | None) -> Callable[[], bool]:
    """Whether node 1 shows ``on1`` listeners on ``port`` and node 2 ``on2`` (None: any)."""
    return lambda: (
        len(nodes.listeners(port, 1)) == on1
        and (on2 is None or len(nodes.listeners(port, 2)) == on2)
    )


def run(rounds: int, progress: Callable[[str], None]) -> ConvergeResult:
    result = ConvergeResult(rounds, HANG_WINDOW_S, GIVE_UP_S)
    result.seconds = {event: {setup: [] for setup in SETUPS} for event in EVENTS}
    client = docker.from_env(timeout=120)
    cli = ReuseportCli(Path(tempfile.mkdtemp(prefix="reuseport-swarmconverge-")))
    try:
        with two_node_swarm(client, IMAGES) as nodes:
            engine = SwarmEngine(client)
            for setup in SETUPS:
                _one_setup(setup, nodes, engine, cli, result, progress)
    finally:
        client.close()
    return result


def _one_setup(
    setup: str,
    nodes: TwoNodes,
    engine: SwarmEngine,
    cli: ReuseportCli,
    result: ConvergeResult,
    progress: Callable[[str], None],
) -> None:
    name, port = f"bench-swarm-{setup}-{os.getpid()}", 18950 + SETUPS.index(setup)
    spec = build_spec(
        image=IMAGES[0],
        name=name,
        engine="swarm",
        replicas=2,
        port=port,
        hang_window=HANG_WINDOW_S,
    )
    if setup == "reuseport":
        cli.run(
            "up",
            IMAGES[0],
            "--engine",
            "swarm",
            "--name",
            name,
            "-p",
            str(port),
            "-n",
            "2",
            "--hang-window",
            f"{HANG_WINDOW_S:g}",
            timeout=240,
        )
    else:  # the same Swarm service, no agent: what Swarm does alone
        engine.create(spec)
    try:
        _wait("1 + 1 listening", _spread(nodes, port, 1, 1))
        for round_ in range(result.rounds):
            for event, seconds in _measure(nodes, port, 1).items():
                result.seconds[event][setup].append(seconds)
            result.seconds["node drained"][setup].append(_drain(nodes, port))
            # Swarm does not move tasks back to a reactivated node: down to one task and
            # up to two again puts the second on node 2 (the emptier node).
            engine.update(spec.with_replicas(1))
            _wait("one task", _spread(nodes, port, 1, None))
            engine.update(spec)
            _wait("1 + 1 again", _spread(nodes, port, 1, 1))
            progress(
                f"swarm {setup} round {round_ + 1}/{result.rounds}: "
                + ", ".join(f"{e} {result.seconds[e][setup][-1]}" for e in EVENTS)
            )
    finally:
        if setup == "reuseport":
            cli.run("down", name, timeout=240, check=False)
        else:
            engine.remove(name)
            _wait("plain removed", lambda: not engine.task_containers(name), 120)


def table(result: ConvergeResult) -> str:
    lines = [
        "| event | reuseport (node agents) | plain Swarm, same service | plain ÷ reuseport |",
        "|---|---:|---:|---:|",
    ]
    for event in EVENTS:
        ours, plain = result.median(event, "reuseport"), result.median(event, "plain")
        show = lambda s: f"{s:.2f} s" if s is not None else f"not in {result.give_up_s:g} s"  # noqa: E731
        ratio = f"{plain / ours:.1f}x" if ours and plain else ("-" if ours is None else "never")
        lines.append(f"| {event} | {show(ours)} | {show(plain)} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.swarmconverge", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "results")
    args = parser.parse_args(argv)
    result = run(args.rounds, lambda line: print(line, file=sys.stderr, flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "swarm.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    shown = table(result)
    print(shown)
    if args.update_readme:
        readme = REPO / "README.md"
        text = readme.read_text()
        start, end = "<!-- swarm:start -->", "<!-- swarm:end -->"
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        body = (
            f"Measured {stamp} with `.venv/bin/python -m loadtest.swarmconverge --rounds "
            f"{args.rounds} --update-readme` (median of {args.rounds}; hang window "
            f"{HANG_WINDOW_S:g} s):\n\n{shown}\n"
        )
        readme.write_text(f"{head}{start}\n{body}{end}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

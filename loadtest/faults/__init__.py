"""The fault suite (``loadtest/run --only faults``): faults of replicas, of the supervisor,
of the state files and of start-up, and a soak, each scenario under locust load on the
shared port with its own service (see ``common`` for what every scenario measures).

Groups, one module each: ``replica`` (K random replica faults), ``supervisor`` (the
detached supervisor SIGKILLed, in a row, during a rollout, during a scale), ``statefile``
(corrupt, truncated, newer-version spec file), ``startup`` (crash loop, never listens,
hung replica whose successor crashes) and ``soak`` (churn, the supervisor's resources).

``net.ipv4.tcp_migrate_req`` is 1 for the whole part (queued connections of a replica that
closes its listener move to a sibling, as recommended) and put back afterwards.

Try it alone: ``.venv/bin/python -m loadtest.faults --smoke`` (prints the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker

from loadtest import locustrun
from loadtest.faults.common import MAX_SURGE, NETWORK_TIMEOUT_S, FaultContext
from loadtest.faults.replica import run_replica_faults
from loadtest.faults.soak import run_soak
from loadtest.faults.startup import run_startup_faults
from loadtest.faults.statefile import run_statefile_faults
from loadtest.faults.supervisor import run_supervisor_faults
from loadtest.harness import jsonable
from loadtest.harness.bench import log
from loadtest.harness.errors import SetupError
from loadtest.harness.results import FaultsResult
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport import host
from reuseport.store import default_state_dir

GROUPS = ("replica", "supervisor", "statefile", "startup", "soak")


def _set_migrate_req(value: int) -> None:
    try:
        host.TCP_MIGRATE_REQ.write_text(f"{value}\n")
    except OSError as exc:
        raise SetupError(f"cannot set net.ipv4.tcp_migrate_req={value}: {exc.strerror}") from exc


def run_faults(
    image: str,
    replicas: int,
    port: int,
    users: int,
    workdir: Path,
    smoke: bool,
    random_faults: int,
    soak_s: float,
    supervisor_kills: int,
    groups: tuple[str, ...] = GROUPS,
    progress: Callable[[str], None] = print,
) -> FaultsResult:
    if smoke:  # a few seconds per scenario: the shape, not the figures
        random_faults, soak_s, supervisor_kills = 6, 8.0, 2
    result = FaultsResult(
        replicas=replicas,
        max_surge=MAX_SURGE,
        users=users,
        user_classes=list(locustrun.USER_CLASSES),
        user_rps=locustrun.USER_RPS,
        network_timeout_s=NETWORK_TIMEOUT_S,
        random_faults=random_faults,
        soak_s=soak_s,
    )
    before = host.tcp_migrate_req()
    if before is None:
        return FaultsResult(skipped="this kernel has no net.ipv4.tcp_migrate_req")
    result.tcp_migrate_req_before = before
    workdir.mkdir(parents=True, exist_ok=True)
    client = docker.from_env(timeout=60)
    ctx = FaultContext(
        client, image, replicas, users, port, default_state_dir(), workdir, progress, smoke
    )
    with sigterm_as_interrupt():
        try:
            _set_migrate_req(1)
            if "replica" in groups:
                result.scenarios.append(run_replica_faults(ctx, random_faults))
            if "supervisor" in groups:
                result.scenarios += run_supervisor_faults(ctx, supervisor_kills)
            if "statefile" in groups:
                result.scenarios += run_statefile_faults(ctx)
            if "startup" in groups:
                result.scenarios += run_startup_faults(ctx)
            if "soak" in groups:
                result.scenarios.append(run_soak(ctx, soak_s, 2.0 if smoke else 3.0))
        finally:
            with signals_held():
                _set_migrate_req(before)
            client.close()
    result.tcp_migrate_req_restored = host.tcp_migrate_req() == before
    result.left_behind = ctx.left_behind
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the fault suite (one part of loadtest)")
    parser.add_argument("--image", default="reuseport-demo:latest")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--faults", type=int, default=100, help="random replica faults (100)")
    parser.add_argument("--soak", type=float, default=120.0, help="soak seconds (120)")
    parser.add_argument("--supervisor-kills", type=int, default=10)
    parser.add_argument("--groups", default=",".join(GROUPS))
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        result = run_faults(
            args.image,
            args.replicas,
            args.port,
            args.users,
            workdir,
            args.smoke,
            args.faults,
            args.soak,
            args.supervisor_kills,
            tuple(args.groups.split(",")),
            progress=log,
        )
    print(json.dumps(jsonable.to_json(result), indent=2))
    return 1 if result.left_behind else 0


if __name__ == "__main__":
    sys.exit(main())

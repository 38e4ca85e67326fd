"""Commands that change a running service: scale, rollout, down."""

from __future__ import annotations

from typing import Annotated

import typer

from reuseport import engine as engines
from reuseport import rollout as rollouts
from reuseport import service
from reuseport.cli import project, swarm_commands
from reuseport.cli._common import (
    MigrateReq,
    ProjectFileOpt,
    StateDir,
    app,
    drain_check,
    err,
    say,
    store_at,
)
from reuseport.errors import InvalidSpec
from reuseport.options import DEFAULT_ROLLOUT_TIMEOUT_S, positive_seconds
from reuseport.policies import RolloutPolicy
from reuseport.spec import parse_env, validate_name, validate_replicas


@app.command()
def scale(
    name: Annotated[str, typer.Argument(help="Service to scale.")],
    replicas: Annotated[int, typer.Argument(help="New desired number of replicas (1-256).")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the supervisor converged.")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for convergence.")
    ] = 60.0,
    tcp_migrate_req: MigrateReq = False,
    state_dir: StateDir = None,
) -> None:
    """Change the desired replica count of a running service; its supervisor converges.

    Scaling down drains the surplus replicas (highest indices) gracefully, in parallel.
    """
    validate_replicas(replicas)
    store = store_at(state_dir)
    if swarm_commands.is_swarm(store, validate_name(name)):
        swarm_commands.scale(name, replicas, store, wait, timeout)
        return
    engine = engines.connect()
    before = store.load_spec(validate_name(name))
    if before is not None and replicas < before.replicas:
        drain_check(tcp_migrate_req)
    spec = service.scale(validate_name(name), replicas, engine, store)
    if not wait:
        say(f"{name}: desired replicas set to {replicas}")
        return
    with err.status(f"scaling {name} to {replicas}") as status:
        view = service.wait_converged(
            spec.name,
            engine,
            store,
            timeout,
            lambda s: status.update(f"{s.ready}/{replicas} replicas of {name} ready"),
        )
    say(f"{name}: {view.ready}/{replicas} replicas ready on port {spec.port}")


@app.command()
def rollout(
    name: Annotated[str, typer.Argument(help="Service to roll out.")],
    image: Annotated[str | None, typer.Option("--image", help="New image (local).")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VAL to add or change; repeatable.")
    ] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Return to the previous revision.")] = False,
    max_surge: Annotated[
        int, typer.Option("--max-surge", help="Replicas allowed above the desired count.")
    ] = 1,
    max_unavailable: Annotated[
        int, typer.Option("--max-unavailable", help="Replicas allowed to be missing.")
    ] = 0,
    min_ready: Annotated[
        float,
        typer.Option("--min-ready", help="Seconds a new replica must listen before it counts."),
    ] = 0.0,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds before an unfinished rollout is rolled back."),
    ] = DEFAULT_ROLLOUT_TIMEOUT_S,
    tcp_migrate_req: MigrateReq = False,
    state_dir: StateDir = None,
) -> None:
    """Replace every replica with one of a new image/env, with zero downtime.

    Per batch: start new replicas beside the old ones on the same port, wait until the
    kernel shows them listening (and --min-ready passed), then drain an old one (SIGTERM:
    it closes its listener first and finishes in-flight requests). A new replica that dies,
    or a rollout that does not finish within --timeout, is rolled back automatically.
    """
    store = store_at(state_dir)
    name = validate_name(name)
    current = store.load_spec(name)
    if current is None:
        raise service.ServiceNotFound(f"no service named {name!r} is up (see `reuseport ps`)")
    target = rollouts.target_spec(
        current,
        rollouts.history(store, name),
        image=image,
        env=parse_env(env) if env else None,
        policy=RolloutPolicy(max_surge, max_unavailable, min_ready),
        undo=undo,
    )
    positive_seconds("timeout", timeout)
    if current.engine == "swarm":
        swarm_commands.rollout(target, store, timeout)
        return
    engine = engines.connect()
    service.require_supervisor(engine, store, name)
    with err.status(f"rolling {name} out to {target.image}") as status:
        outcome = rollouts.rollout(
            target,
            engine,
            store,
            timeout_s=timeout,
            progress=lambda p: status.update(
                f"rolling {name} out to {target.image}: {p.updated}/{p.desired} new listening, "
                f"{p.outdated} old left"
            ),
            checked=lambda: drain_check(tcp_migrate_req),
        )
    say(
        f"{name}: revision {outcome.revision} ({outcome.image}) rolled out to "
        f"{target.replicas} replicas in {outcome.seconds:.1f}s"
    )


@app.command()
def down(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="NAME",
            help="Service to stop and remove. With a project file: the names of its services "
            "(default: all).",
            show_default=False,
        ),
    ] = None,
    file: ProjectFileOpt = None,
    state_dir: StateDir = None,
) -> None:
    """Stop supervising, then stop every replica gracefully (in parallel) and remove it.

    With a project file (-f FILE, or ./reuseport.toml when no NAME is given) every service
    in it (or each NAME) is taken down; one that is not up is said and skipped."""
    path = project.found(file, use_cwd=not targets)
    if path is not None:
        project.down(path, targets or [], state_dir=state_dir)
        return
    if not targets:
        raise InvalidSpec("missing NAME (or a project file: -f FILE, or ./reuseport.toml here)")
    if len(targets) > 1:
        raise InvalidSpec("down takes one NAME (several go with a project file: -f FILE)")
    name = targets[0]
    store = store_at(state_dir)
    if swarm_commands.is_swarm(store, validate_name(name)):
        swarm_commands.down(name, store)
        return
    engine = engines.connect()
    with err.status(f"taking {name} down"):
        count = service.down(validate_name(name), engine, store, notify=say)
    say(f"{name}: stopped and removed {count} replicas")

"""`up` and the detached supervisor's own command, `supervise`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.live import Live

from reuseport import detached, service
from reuseport import engine as engines
from reuseport.cli import project, swarm_commands
from reuseport.cli._common import (
    ProjectFileOpt,
    StateDir,
    app,
    err,
    out,
    say,
    stop_on_signals,
    store_at,
)
from reuseport.errors import InvalidSpec, ReuseportError
from reuseport.options import DEFAULT_READY_TIMEOUT_S, build_spec, positive_seconds
from reuseport.render import service_table
from reuseport.spec import DEFAULT_BALANCE, parse_env, validate_name
from reuseport.status import ServiceStatus
from reuseport.store import StateStore
from reuseport.supervisor import EngineLost, Supervisor


@app.command()
def up(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGE|NAME",
            help="Local image to run (never pulled). With a project file: the names of its "
            "services to apply (default: all).",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option("--replicas", "-n", help="Number of replicas (1-256).")
    ] = 2,
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port every replica binds.")] = 8080,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Service name (default: the image's repository name)."),
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VAL for the app; repeatable.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="UID[:GID] (or name) the replicas run as.")
    ] = None,
    cpus: Annotated[
        float | None,
        typer.Option("--cpus", help="CPU limit of each replica, in CPUs (like docker run --cpus)."),
    ] = None,
    stop_timeout: Annotated[
        int, typer.Option("--stop-timeout", help="Seconds between SIGTERM and SIGKILL.")
    ] = 10,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="Return once all replicas listen; a supervisor container keeps supervising.",
        ),
    ] = False,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for every replica to listen.")
    ] = DEFAULT_READY_TIMEOUT_S,
    backoff_initial: Annotated[
        float,
        typer.Option(
            "--backoff-initial", help="First crash-loop delay in seconds (doubles per failure)."
        ),
    ] = 0.5,
    backoff_max: Annotated[
        float, typer.Option("--backoff-max", help="Longest crash-loop delay in seconds.")
    ] = 30.0,
    backoff_reset: Annotated[
        float,
        typer.Option(
            "--backoff-reset",
            help="Seconds of listening after which a replica's failures are forgiven.",
        ),
    ] = 10.0,
    hang_window: Annotated[
        float,
        typer.Option(
            "--hang-window",
            help="Seconds a replica may leave connections waiting in its accept queue without "
            "taking any before it is replaced as hung (read from the kernel; 0 = off).",
        ),
    ] = 5.0,
    health_port_base: Annotated[
        int | None,
        typer.Option(
            "--health-port-base",
            help="App-level check: replica i gets env HEALTH_PORT=B+i (a port of its own) and "
            "GET --health-path there must answer < 400.",
        ),
    ] = None,
    health_path: Annotated[
        str, typer.Option("--health-path", help="Path checked on HEALTH_PORT.")
    ] = "/healthz",
    health_cmd: Annotated[
        str | None,
        typer.Option(
            "--health-cmd", help="App-level check: a /bin/sh command run inside each replica."
        ),
    ] = None,
    health_interval: Annotated[
        float, typer.Option("--health-interval", help="Seconds between checks of a replica.")
    ] = 2.0,
    health_timeout: Annotated[
        float | None,
        typer.Option(
            "--health-timeout",
            help="Seconds before a check counts as failed (default 1, at most the interval).",
        ),
    ] = None,
    health_retries: Annotated[
        int,
        typer.Option(
            "--health-retries", help="Failed checks in a row before the replica is replaced."
        ),
    ] = 3,
    start_timeout: Annotated[
        float,
        typer.Option(
            "--start-timeout",
            help="Seconds a running replica may take to listen before it is replaced "
            "(under crash-loop backoff); with a health check, also the time its failed checks "
            "do not count until it passes one.",
        ),
    ] = 60.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (from the supervisor; off by default).",
        ),
    ] = None,
    metrics_addr: Annotated[
        str, typer.Option("--metrics-addr", help="Address the metrics server binds.")
    ] = "127.0.0.1",
    balance: Annotated[
        str,
        typer.Option(
            "--balance",
            help="How new connections are spread: round-robin or least-conn (an eBPF program "
            "over the ready replicas only; needs CAP_SYS_ADMIN, falls back to hash with one "
            "line saying so) or hash (the kernel's 4-tuple hash, over every listener).",
        ),
    ] = DEFAULT_BALANCE,
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            help="Who runs the replicas: docker (this machine, under reuseport's supervisor) "
            "or swarm (a Docker Swarm service in the host network; this engine must be a "
            "swarm manager).",
        ),
    ] = "docker",
    max_per_node: Annotated[
        int | None,
        typer.Option("--max-per-node", help="With --engine swarm: at most this many per node."),
    ] = None,
    file: ProjectFileOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="With a project file: print the plan, change nothing."),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Launch N replicas on one port, prove each listens, and supervise them.

    In the foreground (default) a live table shows the replicas until Ctrl-C or SIGTERM,
    which stops every replica gracefully and removes it. With --detach a supervisor
    container takes over and `ps`, `logs`, `scale` and `down` work from any shell.
    Running `up` again with the same spec adopts the running replicas without restarts.

    A replica that is hung (its accept queue holds connections it does not take) or fails
    its health check is replaced: the successor listens before the failing one is stopped.

    With a project file (-f FILE, or ./reuseport.toml when no IMAGE is given) every service
    in it (or each NAME) is made to match the file, detached: created when not up, scaled
    when only its replica count differs, rolled out (zero downtime, the file's rollout
    policy) when its image, env, user or cpus differ, its settings updated in place when
    only supervisor settings differ; an unchanged service restarts nothing and a port
    change is refused. The plan is printed first; --dry-run stops there.
    """
    path = project.found(file, use_cwd=not targets)
    if path is not None:
        project.refuse_flags(ctx)
        project.up(path, targets or [], dry_run=dry_run, state_dir=state_dir)
        return
    if dry_run:
        raise InvalidSpec("--dry-run needs a project file (-f FILE, or ./reuseport.toml here)")
    if not targets:
        raise InvalidSpec("missing IMAGE (or a project file: -f FILE, or ./reuseport.toml here)")
    if len(targets) > 1:
        raise InvalidSpec(
            f"unexpected extra arguments {' '.join(targets[1:])!r}: service names go with a "
            "project file (-f FILE)"
        )
    image = targets[0]
    spec = build_spec(
        name=name,
        image=image,
        replicas=replicas,
        port=port,
        env=parse_env(env or []),
        user=user,
        cpus=cpus,
        stop_timeout=stop_timeout,
        balance=balance,
        hang_window=hang_window,
        start_timeout=start_timeout,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        backoff_reset=backoff_reset,
        health_port_base=health_port_base,
        health_path=health_path,
        health_cmd=health_cmd,
        health_interval=health_interval,
        health_timeout=health_timeout,
        health_retries=health_retries,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        engine=engine_name,
        max_per_node=max_per_node,
    )
    positive_seconds("ready-timeout", ready_timeout)
    store = store_at(state_dir)
    if spec.engine == "swarm":
        # Swarm keeps the service running: `up` returns once every task listens.
        swarm_commands.up(spec, store, ready_timeout)
        return
    engine = engines.connect()
    stop = stop_on_signals()
    with err.status(
        f"starting {spec.replicas} replicas of {spec.image} on port {spec.port}"
    ) as progress_line:

        def progress(status: ServiceStatus) -> None:
            progress_line.update(
                f"{status.ready}/{spec.replicas} replicas ready on port {spec.port}"
            )
            if stop.is_set():
                raise KeyboardInterrupt

        started = service.start(
            spec,
            engine,
            store,
            detach=detach,
            ready_timeout_s=ready_timeout,
            notify=say,
            progress=progress,
        )
    adopted = f" ({len(started.adopted)} adopted)" if started.adopted else ""
    # Which balance is in force, said once (the fallback to the hash said why already).
    balance = started.supervisor.status.balance if started.supervisor else ""
    balanced = f", balance: {balance}" if balance else ""
    say(
        f"{spec.name}: {spec.replicas}/{spec.replicas} replicas ready on port {spec.port}"
        f"{adopted}{balanced}"
    )
    if detach:
        say(
            f"supervising in the background; see `reuseport ps {spec.name}`, "
            f"stop with `reuseport down {spec.name}`"
        )
        return
    assert started.supervisor is not None  # only a detached `up` hands over to another
    _supervise_foreground(started.supervisor, store, stop.wait)


def _supervise_foreground(
    supervisor: Supervisor, store: StateStore, stop: Callable[[float], bool]
) -> None:
    stop_metrics = _serve_metrics(supervisor, say)
    live = Live(console=out, auto_refresh=False, transient=False) if out.is_terminal else None

    def show(status: ServiceStatus) -> None:
        if live is not None:
            live.update(service_table(status, time.time()), refresh=True)

    name = supervisor.spec.name
    if live is not None:
        live.start()
    try:
        count = service.supervise_foreground(supervisor, store, stop, show, say)
    finally:
        if live is not None:
            live.stop()
        stop_metrics()
    if count is None:
        say(f"{name} was taken down elsewhere; exiting")
    else:
        say(f"{name}: stopped and removed {count} replicas")


def _serve_metrics(supervisor: Supervisor, say: Callable[[str], None]) -> Callable[[], None]:
    spec = supervisor.spec
    if spec.metrics_port is None:
        return lambda: None
    from reuseport import metrics  # prometheus_client only when asked for

    try:
        stop = metrics.start(supervisor, spec.metrics_port, spec.metrics_addr)
    except ReuseportError as exc:  # supervising matters more than its metrics
        say(f"metrics are off: {exc}")
        return lambda: None
    say(f"metrics on http://{spec.metrics_addr}:{spec.metrics_port}/metrics")
    return stop


@app.command(hidden=True)
def supervise(
    name: Annotated[str, typer.Argument(help="Service to supervise.")],
    state_dir: StateDir = None,
) -> None:
    """Supervise a service in the background (run by the supervisor container)."""
    store = store_at(state_dir)
    name = validate_name(name)
    stop = stop_on_signals()

    def log(message: str) -> None:
        print(message, flush=True)

    supervisor = detached.detached_supervisor(name, engines.connect(), store, stop.wait, log)
    if supervisor is None:
        return
    stop_metrics = _serve_metrics(supervisor, log)
    # Stopping this supervisor never stops replicas: `down` does that, and a restarted
    # supervisor adopts them.
    try:
        log(f"supervisor exiting: {detached.supervise_detached(supervisor, stop.wait)}")
    except EngineLost as exc:
        log(f"supervisor exiting: {exc}")
        sys.exit(exc.exit_code)
    finally:
        stop_metrics()
        supervisor.release()


@app.command(hidden=True)
def agent(
    local: str = typer.Option(
        "", "--local", metavar="LAUNCHER", help="Run as the node agent of this launcher."
    ),
) -> None:
    """The Swarm node agent: without --local, the launcher that the reuseport-agent global
    service runs on every node (it starts the node agent proper: see swarm.launcher)."""
    from reuseport.swarm import agentloop, launcher
    from reuseport.swarm.nodeengine import NodeEngine

    stop = stop_on_signals()
    engine = NodeEngine.from_env()

    def write(line: str) -> None:
        print(line, flush=True)

    if local:
        agentloop.run(engine, stop.wait, write, alive=lambda: engine.container_running(local))
        return
    if agentloop.own_identity(engine, stop.wait, write) is None:
        return
    sys.exit(launcher.launch(engine, os.environ.get("REUSEPORT_TASK_ID", ""), stop.wait, write))

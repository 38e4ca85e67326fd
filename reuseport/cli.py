"""The command line: parse, call the core, print. Nothing else happens here.

Every failure surfaces as one line on stderr (``reuseport: error: ...``) and an exit code
from the error tree; set REUSEPORT_DEBUG=1 to see a traceback for an unexpected one.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from typer.exceptions import TyperException

from reuseport import __version__, host, service
from reuseport import logs as logs_mod
from reuseport import rollout as rollouts
from reuseport.engine import connect
from reuseport.errors import InvalidSpec, ReuseportError
from reuseport.render import service_table, views_json
from reuseport.spec import (
    BackoffPolicy,
    HealthPolicy,
    RolloutPolicy,
    ServiceSpec,
    default_name,
    parse_env,
    validate_name,
    validate_replicas,
)
from reuseport.store import StateStore
from reuseport.supervisor import Snapshot, Supervisor
from reuseport.view import ServiceView, replica_rows

app = typer.Typer(
    name="reuseport",
    help="Run N replicas of a server container on ONE port: each binds it with SO_REUSEPORT "
    "in the host network namespace and the kernel balances connections. No reverse proxy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Piped output is read by people and scripts alike: do not squeeze tables into 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="REUSEPORT_STATE_DIR",
        hidden=True,
        help="Where desired state lives (default /var/lib/reuseport).",
    ),
]


def _store(state_dir: Path | None) -> StateStore:
    return StateStore(state_dir)


def _say(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", markup=True)


@app.command()
def up(
    image: Annotated[str, typer.Argument(help="Local image to run (never pulled).")],
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
    ] = 60.0,
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
        float, typer.Option("--health-timeout", help="Seconds before a check counts as failed.")
    ] = 1.0,
    health_retries: Annotated[
        int,
        typer.Option(
            "--health-retries", help="Failed checks in a row before the replica is replaced."
        ),
    ] = 3,
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
    state_dir: StateDir = None,
) -> None:
    """Launch N replicas on one port, prove each listens, and supervise them.

    In the foreground (default) a live table shows the replicas until Ctrl-C or SIGTERM,
    which stops every replica gracefully and removes it. With --detach a supervisor
    container takes over and `ps`, `logs`, `scale` and `down` work from any shell.
    Running `up` again with the same spec adopts the running replicas without restarts.

    A replica that is hung (its accept queue holds connections it does not take) or fails
    its health check is replaced: the successor listens before the failing one is stopped.
    """
    spec = ServiceSpec(
        name=validate_name(name) if name else default_name(image),
        image=image,
        replicas=replicas,
        port=port,
        env=parse_env(env or []),
        user=user,
        stop_timeout=stop_timeout,
        backoff=BackoffPolicy(backoff_initial, backoff_max, backoff_reset),
        health=HealthPolicy(
            hang_window=hang_window,
            port_base=health_port_base,
            path=health_path,
            cmd=health_cmd,
            interval=health_interval,
            timeout=health_timeout,
            retries=health_retries,
        ),
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
    )
    if ready_timeout <= 0:
        raise InvalidSpec(f"--ready-timeout must be > 0, got {ready_timeout:g}")
    store = _store(state_dir)
    engine = connect()
    events: queue.Queue[str] = queue.Queue()
    stop = _stop_on_signals()
    with err.status(
        f"starting {spec.replicas} replicas of {spec.image} on port {spec.port}"
    ) as status:

        def progress(snapshot: Snapshot) -> None:
            status.update(
                f"{snapshot.ready}/{spec.replicas} replicas listening on port {spec.port}"
            )
            if stop.is_set():
                raise KeyboardInterrupt

        started = service.start(
            spec,
            engine,
            store,
            detach=detach,
            ready_timeout_s=ready_timeout,
            notify=events.put,
            progress=progress,
        )
    adopted = f" ({len(started.adopted)} adopted)" if started.adopted else ""
    _say(
        f"{spec.name}: {spec.replicas}/{spec.replicas} replicas listening "
        f"on port {spec.port}{adopted}"
    )
    if detach:
        _say(
            f"supervising in the background; see `reuseport ps {spec.name}`, "
            f"stop with `reuseport down {spec.name}`"
        )
        return
    assert started.supervisor is not None  # only a detached `up` hands over to another
    _supervise_foreground(started.supervisor, store, events, stop)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _supervise_foreground(
    supervisor: Supervisor, store: StateStore, events: queue.Queue[str], stop: threading.Event
) -> None:
    supervisor.notify = events.put
    stop_metrics = _serve_metrics(supervisor, events.put)
    outcome: list[str] = []
    crash: list[BaseException] = []

    def supervise_until_stopped() -> None:
        try:
            outcome.append(supervisor.run())
        except Exception as exc:  # noqa: BLE001 - reported below, after the replicas are down
            crash.append(exc)

    runner = threading.Thread(target=supervise_until_stopped, name="supervisor", daemon=True)
    runner.start()
    live = Live(console=out, auto_refresh=False, transient=False) if out.is_terminal else None
    try:
        if live:
            live.start()
        while not stop.is_set() and runner.is_alive():
            while not events.empty():
                _say(events.get_nowait())
            if live:
                live.update(service_table(_live_view(supervisor)), refresh=True)
            stop.wait(0.5)
    finally:
        if live:
            live.stop()
    supervisor.stop()
    runner.join(timeout=10)
    stop_metrics()
    while not events.empty():
        _say(events.get_nowait())
    if outcome == ["removed"]:
        _say(f"{supervisor.spec.name} was taken down elsewhere; exiting")
        return
    name = supervisor.spec.name
    with err.status(
        f"stopping the replicas of {name} (SIGTERM, SIGKILL after {supervisor.spec.stop_timeout}s)"
    ):
        count = len(supervisor.engine.replicas(name))
        supervisor.drain()
        store.forget(name)
    _say(f"{name}: stopped and removed {count} replicas")
    if crash:
        raise ReuseportError(f"supervision of {name} failed: {type(crash[0]).__name__}: {crash[0]}")


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


def _live_view(supervisor: Supervisor) -> ServiceView:
    snap = supervisor.snapshot
    now = time.time()
    slots = {
        str(i): {
            "restarts": s.restarts,
            "last_error": s.last_error,
            "retry_at": now + snap.waiting[i] if i in snap.waiting else None,
        }
        for i, s in supervisor.book.slots.items()
    }
    rows = replica_rows(
        snap.spec.name,
        snap.spec.image,
        snap.replicas,
        snap.listening,
        slots,
        snap.spec.replicas,
        now,
        snap.port,
        snap.failing,
        set(snap.listening) - snap.ready_ids,
    )
    return ServiceView(
        snap.spec.name,
        snap.spec.port,
        snap.spec.replicas,
        tuple(rows),
        f"foreground (pid {os.getpid()})",
        snap.port.foreign if snap.port else (),
        dict(supervisor.replacements),
    )


@app.command(hidden=True)
def supervise(
    name: Annotated[str, typer.Argument(help="Service to supervise.")],
    state_dir: StateDir = None,
) -> None:
    """Supervise a service in the background (run by the supervisor container)."""
    store = _store(state_dir)
    spec = store.load_spec(validate_name(name))
    if spec is None:
        raise ReuseportError(f"no desired state for {name!r} in {store.root}")
    engine = connect()
    supervisor = Supervisor(
        spec, engine, store, mode="detached", notify=lambda m: print(m, flush=True)
    )
    stop = _stop_on_signals()

    def stop_when_signalled() -> None:
        stop.wait()
        supervisor.stop()

    threading.Thread(target=stop_when_signalled, daemon=True).start()
    print(f"supervising {name}: {spec.replicas} replicas on port {spec.port}", flush=True)
    stop_metrics = _serve_metrics(supervisor, lambda m: print(m, flush=True))
    # Stopping this supervisor never stops replicas: `down` does that, and a restarted
    # supervisor adopts them.
    try:
        print(f"supervisor exiting: {supervisor.run()}", flush=True)
    finally:
        stop_metrics()


@app.command()
def ps(
    name: Annotated[str | None, typer.Argument(help="Service (default: all).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of replica objects.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """List replicas: state, whether the kernel shows them listening, pid, restarts, uptime."""
    store = _store(state_dir)
    engine = connect()
    names = [validate_name(name)] if name else service.service_names(engine, store)
    views = [service.service_view(n, engine, store) for n in names]
    if name and not views[0].rows and views[0].desired is None:
        raise service.ServiceNotFound(f"no service named {name!r}")
    if as_json:
        print(views_json(views))
        return
    if not views:
        err.print("no services (start one with `reuseport up IMAGE`)")
    for view in views:
        out.print(service_table(view))


@app.command()
def top(
    name: Annotated[str, typer.Argument(help="Service to watch.")],
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 1.0,
    state_dir: StateDir = None,
) -> None:
    """A live view of `ps NAME` from the kernel, refreshed every second until Ctrl-C:
    per replica its connections, accept queue / backlog and share; foreign listeners."""
    if interval <= 0:
        raise InvalidSpec(f"--interval must be > 0, got {interval:g}")
    store = _store(state_dir)
    engine = connect()
    view = service.service_view(validate_name(name), engine, store)
    if not view.rows and view.desired is None:
        raise service.ServiceNotFound(f"no service named {name!r}")
    stop = _stop_on_signals()
    with Live(service_table(view), console=out, auto_refresh=False) as live:
        while not stop.wait(interval):
            live.update(service_table(service.service_view(name, engine, store)), refresh=True)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Service whose replicas' logs to show.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming, including replacements.")
    ] = False,
    tail: Annotated[
        str, typer.Option("--tail", help="Lines per replica from the end, or 'all'.")
    ] = "all",
) -> None:
    """All replicas' logs merged, each line prefixed with its replica."""
    if tail != "all" and not tail.isdigit():
        raise InvalidSpec(f"--tail must be a number or 'all', got {tail!r}")
    engine = connect()
    logs_mod.show(
        engine,
        validate_name(name),
        follow=follow,
        tail=int(tail) if tail.isdigit() else "all",
        write=lambda line: print(line, flush=True),
    )


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
    store = _store(state_dir)
    engine = connect()
    before = store.load_spec(validate_name(name))
    if before is not None and replicas < before.replicas:
        _drain_check(tcp_migrate_req)
    spec = service.scale(validate_name(name), replicas, engine, store)
    if not wait:
        _say(f"{name}: desired replicas set to {replicas}")
        return
    with err.status(f"scaling {name} to {replicas}") as status:
        view = service.wait_converged(
            spec.name,
            engine,
            store,
            timeout,
            lambda v: status.update(f"{v.ready}/{replicas} replicas of {name} listening"),
        )
    _say(f"{name}: {view.ready}/{replicas} replicas listening on port {spec.port}")


MigrateReq = Annotated[
    bool,
    typer.Option(
        "--tcp-migrate-req",
        help="Set net.ipv4.tcp_migrate_req=1 (a host setting) so connections queued on a "
        "draining replica move to its siblings instead of being reset.",
    ),
]


def _drain_check(enable: bool) -> None:
    advice = host.drain_advice(enable)
    if advice:
        _say(advice)


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
    ] = 120.0,
    tcp_migrate_req: MigrateReq = False,
    state_dir: StateDir = None,
) -> None:
    """Replace every replica with one of a new image/env, with zero downtime.

    Per batch: start new replicas beside the old ones on the same port, wait until the
    kernel shows them listening (and --min-ready passed), then drain an old one (SIGTERM:
    it closes its listener first and finishes in-flight requests). A new replica that dies,
    or a rollout that does not finish within --timeout, is rolled back automatically.
    """
    store = _store(state_dir)
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
    if timeout <= 0:
        raise InvalidSpec(f"--timeout must be > 0, got {timeout:g}")
    engine = connect()
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
            checked=lambda: _drain_check(tcp_migrate_req),
        )
    _say(
        f"{name}: revision {outcome.revision} ({outcome.image}) rolled out to "
        f"{target.replicas} replicas in {outcome.seconds:.1f}s"
    )


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Service whose revisions to list.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    show_env: Annotated[
        bool, typer.Option("--show-env", help="Show env values (masked as digests by default).")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """List the service's revisions: image, environment, time and result."""
    revisions = rollouts.history(_store(state_dir), validate_name(name), reveal=show_env)
    if as_json:
        print(
            json.dumps([{k: v for k, v in r.items() if k != "spec"} for r in revisions], indent=2)
        )
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("REVISION", "IMAGE", "ENV", "TIME", "RESULT"):
        table.add_column(column)
    for r in revisions:
        env_text = " ".join(f"{k}={v}" for k, v in r.get("env", [])) or "-"
        table.add_row(str(r["revision"]), r["image"], env_text, r["time"], r["result"])
    out.print(table)


@app.command()
def down(
    name: Annotated[str, typer.Argument(help="Service to stop and remove.")],
    state_dir: StateDir = None,
) -> None:
    """Stop supervising, then stop every replica gracefully (in parallel) and remove it."""
    store = _store(state_dir)
    engine = connect()
    with err.status(f"taking {name} down"):
        count = service.down(validate_name(name), engine, store, notify=_say)
    _say(f"{name}: stopped and removed {count} replicas")


@app.command()
def doctor(
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", help="Also check who holds this TCP port, and as which uid."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check this host for `up`: engine, kernel, sysctls, the port's holders, uids.

    Prints a checklist with the exact fix for each problem. Exit code 1 when something
    would stop `up`; warnings alone exit 0.
    """
    from reuseport import doctor as checkup

    if port is not None and not 1 <= port <= 65535:
        raise InvalidSpec(f"port must be between 1 and 65535, got {port}")
    findings = checkup.diagnose(port, connect=connect)
    if as_json:
        print(json.dumps(checkup.as_json(findings), indent=2))
    else:
        out.print(checkup.checklist(findings))
    if checkup.blocking(findings):
        # Not typer.Exit: with standalone_mode=False click returns its code instead of exiting.
        sys.exit(1)


@app.command()
def version() -> None:
    """Print reuseport's version."""
    print(__version__)


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="reuseport", standalone_mode=False)
    except ReuseportError as exc:
        err.print(f"reuseport: error: {exc.message}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("reuseport: interrupted", markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors (typer vendors Click since 0.26)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(f"reuseport: error: {message}{hint}", markup=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:  # noqa: BLE001 - the edge: one line instead of a traceback
        if os.environ.get("REUSEPORT_DEBUG"):
            traceback.print_exc()
        err.print(
            f"reuseport: internal error: {type(exc).__name__}: {exc} "
            "(set REUSEPORT_DEBUG=1 for a traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(70)

"""Commands that read: ps, top, logs, history, doctor, version."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from reuseport import __version__, service
from reuseport import engine as engines
from reuseport import logs as logs_mod
from reuseport import rollout as rollouts
from reuseport.cli import project, swarm_commands
from reuseport.cli._common import (
    ProjectFileLong,
    ProjectFileOpt,
    StateDir,
    app,
    err,
    out,
    stop_on_signals,
    store_at,
)
from reuseport.errors import InvalidSpec
from reuseport.render import checklist, service_table, statuses_json
from reuseport.spec import validate_name
from reuseport.status import ServiceStatus
from reuseport.store import StateStore
from reuseport.swarm.render import swarm_rows, swarm_table


@app.command()
def ps(
    name: Annotated[
        str | None,
        typer.Argument(help="Service (default: the project file's services, else all)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of replica objects.")
    ] = False,
    file: ProjectFileOpt = None,
    state_dir: StateDir = None,
) -> None:
    """List replicas: state, whether the kernel shows them listening, pid, restarts, uptime.

    Without a NAME: the services of the project file (-f FILE, or ./reuseport.toml when it
    exists), else every service on this host."""
    store = store_at(state_dir)
    in_file = None if name else project.file_services(file)
    engine = engines.connect()
    if name:
        names = [validate_name(name)]
    else:
        names = in_file if in_file is not None else service.service_names(engine, store)
    on_swarm = [n for n in names if swarm_commands.is_swarm(store, n)]
    statuses = _statuses([n for n in names if n not in on_swarm], engine, store)
    if name and not on_swarm and not statuses[0].replicas and statuses[0].desired is None:
        raise service.ServiceNotFound(f"no service named {name!r}")
    swarm_views = swarm_commands.views(on_swarm, store) if on_swarm else []
    now = time.time()
    if as_json:
        rows = json.loads(statuses_json(statuses, now))
        rows += [row for seen in swarm_views for row in swarm_rows(seen)]
        print(json.dumps(rows, indent=2))
        return
    if not statuses and not swarm_views:
        err.print("no services (start one with `reuseport up IMAGE`)")
    for status in statuses:
        out.print(service_table(status, now))
    for seen in swarm_views:
        out.print(swarm_table(seen))


@app.command()
def top(
    name: Annotated[
        str | None,
        typer.Argument(help="Service to watch (default: the project file's services)."),
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 1.0,
    file: ProjectFileOpt = None,
    state_dir: StateDir = None,
) -> None:
    """A live view of `ps NAME` from the kernel, refreshed every second until Ctrl-C:
    per replica its connections, accept queue / backlog and share; foreign listeners.
    Without a NAME: every service of the project file (-f FILE, or ./reuseport.toml)."""
    if interval <= 0:
        raise InvalidSpec(f"--interval must be > 0, got {interval:g}")
    names = _named_or_from_file(name, file, "-f FILE")
    store = store_at(state_dir)
    engine = engines.connect()
    on_swarm = [n for n in names if swarm_commands.is_swarm(store, n)]
    names = [n for n in names if n not in on_swarm]

    def view() -> Group:
        now = time.time()
        tables = [service_table(s, now) for s in _statuses(names, engine, store)]
        swarm_tables = [swarm_table(v) for v in swarm_commands.views(on_swarm, store)]
        return Group(*tables, *swarm_tables)

    statuses_now = _statuses(names, engine, store)
    if name and names and not statuses_now[0].replicas and statuses_now[0].desired is None:
        raise service.ServiceNotFound(f"no service named {name!r}")
    stop = stop_on_signals()
    with Live(view(), console=out, auto_refresh=False) as live:
        while not stop.wait(interval):
            live.update(view(), refresh=True)


def _statuses(names: list[str], engine: engines.Engine, store: StateStore) -> list[ServiceStatus]:
    return [service.service_status(n, engine, store) for n in names]


def _named_or_from_file(name: str | None, file: Path | None, option: str) -> list[str]:
    """``[name]``, or the project file's services when no name is given."""
    if name:
        return [validate_name(name)]
    in_file = project.file_services(file)
    if in_file is None:
        raise InvalidSpec(f"missing NAME (or a project file: {option}, or ./reuseport.toml here)")
    return in_file


@app.command()
def logs(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Service whose replicas' logs to show (default: the project file's services)."
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming, including replacements.")
    ] = False,
    tail: Annotated[
        str, typer.Option("--tail", help="Lines per replica from the end, or 'all'.")
    ] = "all",
    file: ProjectFileLong = None,
) -> None:
    """All replicas' logs merged, each line prefixed with its replica. Without a NAME: the
    services of the project file (--file FILE, or ./reuseport.toml when it exists)."""
    if tail != "all" and not tail.isdigit():
        raise InvalidSpec(f"--tail must be a number or 'all', got {tail!r}")
    names = _named_or_from_file(name, file, "--file FILE")
    if len(names) == 1 and swarm_commands.is_swarm(store_at(None), names[0]):
        # Swarm merges its tasks' logs itself, each line prefixed with its task.
        swarm_commands.logs(names[0], follow, int(tail) if tail.isdigit() else "all")
        return
    engine = engines.connect()
    logs_mod.show(
        engine,
        names,
        follow=follow,
        tail=int(tail) if tail.isdigit() else "all",
        write=lambda line: print(line, flush=True),
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
    revisions = rollouts.history(store_at(state_dir), validate_name(name), reveal=show_env)
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
def doctor(
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", help="Also check who holds this TCP port, and as which uid."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            help="docker, or swarm: also the swarm, its nodes and the node agents' reports.",
        ),
    ] = "docker",
) -> None:
    """Check this host for `up`: engine, kernel, sysctls, the port's holders, uids.

    Prints a checklist with the exact fix for each problem. Exit code 1 when something
    would stop `up`; warnings alone exit 0.
    """
    from reuseport import doctor as checkup

    if port is not None and not 1 <= port <= 65535:
        raise InvalidSpec(f"port must be between 1 and 65535, got {port}")
    if engine_name not in ("docker", "swarm"):
        raise InvalidSpec(f"--engine must be docker or swarm, got {engine_name!r}")
    findings = checkup.diagnose(port, connect=engines.connect)
    if engine_name == "swarm" and not checkup.blocking(findings):
        from reuseport.swarm import doctor as swarm_doctor
        from reuseport.swarm.engine import SwarmEngine
        from reuseport.swarm.service import AGENT_IMAGE

        facts = swarm_doctor.read(SwarmEngine.from_env(), AGENT_IMAGE)
        findings += swarm_doctor.diagnose(facts)
    if as_json:
        print(json.dumps(checkup.as_json(findings), indent=2))
    else:
        out.print(checklist(findings))
    if checkup.blocking(findings):
        # Not typer.Exit: with standalone_mode=False click returns its code instead of exiting.
        sys.exit(1)


@app.command()
def version() -> None:
    """Print reuseport's version."""
    print(__version__)

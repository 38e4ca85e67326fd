"""What every command shares: the Typer app, the consoles, options and small helpers."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reuseport import host, projectfile
from reuseport.errors import ConfigFileError
from reuseport.projectfile import ProjectFile
from reuseport.store import StateStore

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

_FILE_HELP = f"Project file (default: ./{projectfile.DEFAULT_FILE} when there is one)."
# -f/--file FILE for commands that take a project file; `logs` has -f for --follow and
# takes ProjectFileLong.
ProjectFileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help=_FILE_HELP, dir_okay=False)
]
ProjectFileLong = Annotated[Path | None, typer.Option("--file", help=_FILE_HELP, dir_okay=False)]


def project_at(file: Path | None, required: bool = True) -> ProjectFile | None:
    """The project file given with -f (which must exist) or ./reuseport.toml, loaded and
    validated. None when there is none and not ``required``; ConfigFileError when required."""
    path = projectfile.find(file)
    if path is None:
        if not required:
            return None
        raise ConfigFileError(
            f"no {projectfile.DEFAULT_FILE} in {Path.cwd()} (give a project file with -f FILE)"
        )
    return projectfile.load(path)


def store_at(state_dir: Path | None) -> StateStore:
    return StateStore(state_dir)


def say(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", markup=True)


def stop_on_signals() -> threading.Event:
    """Set on SIGINT/SIGTERM: the command winds down instead of dying mid-way."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


MigrateReq = Annotated[
    bool,
    typer.Option(
        "--tcp-migrate-req",
        help="Set net.ipv4.tcp_migrate_req=1 (a host setting) so connections queued on a "
        "draining replica move to its siblings instead of being reset.",
    ),
]


def drain_check(enable: bool) -> None:
    advice = host.drain_advice(enable)
    if advice:
        say(advice)

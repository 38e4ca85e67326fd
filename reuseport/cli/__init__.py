"""The command line: parse, call the core, print. Nothing else happens here.

Every failure surfaces as one line on stderr (``reuseport: error: ...``) and an exit code
from the error tree; set REUSEPORT_DEBUG=1 to see a traceback for an unexpected one.
Commands live in ``run`` (up, supervise), ``inspect`` (ps, top, logs, history, doctor,
version), ``change`` (scale, rollout, down) and ``config``; ``_common`` holds the app
and helpers (the -f/--file project file option among them).
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from typer.exceptions import TyperException

from reuseport.cli import change, config, inspect, run  # noqa: F401 - registers the commands
from reuseport.cli._common import app, err
from reuseport.errors import ReuseportError

__all__ = ["app", "main"]


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

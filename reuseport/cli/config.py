"""`config`: a project file's effective configuration, or only whether it is valid."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from reuseport.cli._common import ProjectFileOpt, app, project_at
from reuseport.projectfile import ProjectFile, to_json, to_toml


@app.command()
def config(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAMES", help="Services to show (default: every one)."),
    ] = None,
    file: ProjectFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only validate: print one line, exit 2 if invalid.")
    ] = False,
    reveal: Annotated[
        bool,
        typer.Option("--reveal", help="Show env values (they may be secrets; default: digests)."),
    ] = False,
) -> None:
    """Print the effective configuration of a project file (reuseport.toml): every key of
    every service after interpolation and defaults, env files merged into env.

    Env values are shown as digests (sha256:...) unless --reveal. The TOML printed loads
    back to the same services (with --reveal).
    """
    project = project_at(file)
    assert project is not None  # required: a missing file is an error
    selected = ProjectFile(project.path, {e.name: e for e in project.select(names or [])})
    if check:
        count = len(selected.services)
        noun = "service" if count == 1 else "services"
        typer.echo(f"{project.path}: {count} {noun} OK: {', '.join(selected.services)}")
    elif as_json:
        typer.echo(json.dumps(to_json(selected, reveal), indent=2))
    else:
        typer.echo(to_toml(selected, reveal), nl=False)

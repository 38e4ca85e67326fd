"""`up`, `down`, `ps`, `logs` and `top` with a project file (reuseport.toml).

The commands keep their own modules; this one holds what they do with a file: find it,
print the plan per service, apply it (each service on its own: one that fails or is
refused does not stop the others, and the exit code says so at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from reuseport import engine as engines
from reuseport import projectapply, projectfile
from reuseport.cli._common import drain_check, err, out, project_at, say, store_at
from reuseport.errors import InvalidSpec
from reuseport.projectfile import ProjectFile
from reuseport.projectplan import ServicePlan

# What `up` accepts beside -f: everything else is the file's to say.
UP_WITH_FILE = frozenset({"targets", "file", "dry_run", "detach", "state_dir"})


def found(explicit: Path | None, use_cwd: bool = True) -> Path | None:
    """The project file: ``explicit`` (which must exist), else ./reuseport.toml when
    ``use_cwd`` and it exists, else None."""
    if explicit is None and not use_cwd:
        return None
    return projectfile.find(explicit)


def file_services(explicit: Path | None) -> list[str] | None:
    """The names of the file's services (for `ps`, `logs`, `top` without a name); None
    without a file."""
    loaded = project_at(explicit, required=False)
    return None if loaded is None else list(loaded.services)


def refuse_flags(ctx: typer.Context) -> None:
    """A file sets the options: a flag of `up IMAGE` given with one would be ignored."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name not in UP_WITH_FILE and _typed(ctx, param.name or "")
    ]
    if given:
        raise InvalidSpec(
            f"{', '.join(given)} cannot be used with a project file: set it in the file "
            "(flags configure `up IMAGE` only)"
        )


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter came from the command line (not a default, not the env)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def up(path: Path, names: Sequence[str], *, dry_run: bool, state_dir: Path | None) -> None:
    project = projectfile.load(path)
    entries = project.select(names)
    store = store_at(state_dir)
    engine = engines.connect()
    decided = projectapply.plans(entries, engine, store)
    mode = "dry run, nothing changes" if dry_run else "services run detached"
    out.print(f"{_shown(project)}: {len(entries)} services ({mode})", markup=False)
    for plan in decided:
        out.print(plan.describe(), markup=False, soft_wrap=True)
    if dry_run:
        _finish([projectapply.refusal(plan) for plan in decided])
        return
    if any(_drains(plan) for plan in decided):
        drain_check(False)
    outcomes = []
    for plan, entry in zip(decided, entries, strict=True):
        with err.status(f"{plan.name}: {plan.action}") as line:
            outcome = projectapply.apply(
                plan, entry, engine, store, notify=say, progress=line.update
            )
        outcomes.append(outcome)
        if plan.changes or outcome.error is not None:
            say(outcome.message)
    if any(plan.action == "create" for plan in decided):
        say(
            "supervising in the background; see `reuseport ps`, stop with "
            f"`reuseport down -f {_shown(project)}`"
        )
    _finish(outcomes)


def down(path: Path, names: Sequence[str], *, state_dir: Path | None) -> None:
    project = projectfile.load(path)
    entries = project.select(names)
    store = store_at(state_dir)
    engine = engines.connect()
    with err.status(f"taking down {len(entries)} services of {_shown(project)}"):
        outcomes = projectapply.down(entries, engine, store, notify=say)
    for outcome in outcomes:
        say(outcome.message)
    _finish(outcomes)


def _drains(plan: ServicePlan) -> bool:
    """Whether applying ``plan`` stops serving replicas (a rollout, a scale down)."""
    shrinks = plan.running is not None and plan.wanted.replicas < plan.running.replicas
    return plan.changes and (plan.template_changed or shrinks)


def _finish(outcomes: Sequence[projectapply.Outcome]) -> None:
    error = projectapply.failure(outcomes)
    if error is not None:
        raise error


def _shown(project: ProjectFile) -> str:
    try:
        return str(project.path.relative_to(Path.cwd()))
    except ValueError:
        return str(project.path)

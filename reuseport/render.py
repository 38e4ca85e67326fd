"""Rich renderings: the `ps` table, the live `up` table and the `doctor` checklist."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from reuseport.view import ServiceView, format_uptime

if TYPE_CHECKING:  # doctor is imported only when `doctor` runs
    from reuseport.doctor import Finding


def service_table(view: ServiceView) -> Group:
    port = f":{view.port}" if view.port else "port ?"
    desired = view.desired if view.desired is not None else "?"
    header = Text.assemble(
        (view.name, "bold"),
        f"  {port}  ",
        (f"{view.ready}/{desired} ready", "green" if view.ready == view.desired else "yellow"),
        f"  supervisor: {view.supervisor}",
        f"  connections: {view.connections}" if _counted(view) else "",
        (f"  replaced: {_replacements(view)}", "yellow") if view.replacements else "",
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    widths = {"CONTAINER": 12, "STATE": 7, "LISTENING": 9}
    for column in (
        "REPLICA",
        "CONTAINER",
        "STATE",
        "LISTENING",
        "PID",
        "CONNS",
        "QUEUE",
        "SHARE",
        "RESTARTS",
        "UPTIME",
        "IMAGE",
        "NOTE",
    ):
        table.add_column(column, min_width=widths.get(column), no_wrap=column != "NOTE")
    for row in view.rows:
        note = f"retry in {row.retry_in_s:.1f}s" if row.retry_in_s is not None else ""
        if row.last_error:
            note = f"{note}; {row.last_error}" if note else f"last: {row.last_error}"
        if row.awaiting_health:
            note = "waiting for its first passing health check"
        if row.failing:
            note = f"replacing: {row.failing}"
        table.add_row(
            str(row.replica),
            row.container_id or "-",
            Text(row.state, style="green" if row.state == "running" else "yellow"),
            Text("yes", style="green") if row.listening else Text("no", style="red"),
            str(row.pid) if row.pid else "-",
            _number(row.connections),
            _queue(row.accept_queue, row.backlog),
            f"{row.share:.0%}" if row.share is not None else "-",
            str(row.restarts),
            format_uptime(row.uptime_s),
            row.image,
            note,
        )
    parts: list[Text | Table] = [header, table]
    for foreign in view.foreign:
        parts.append(
            Text(
                f"! foreign listener on :{view.port}: {foreign.describe()} is not a replica; "
                "with SO_REUSEPORT and the same uid it takes a share of the connections",
                style="bold red",
            )
        )
    return Group(*parts)


def _counted(view: ServiceView) -> bool:
    return any(row.connections is not None for row in view.rows)


def _replacements(view: ServiceView) -> str:
    counts = sorted((view.replacements or {}).items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n} {kind}" for kind, n in counts)


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _queue(depth: int | None, backlog: int | None) -> Text:
    if depth is None:
        return Text("-")
    text = f"{depth}/{backlog}" if backlog else str(depth)
    return Text(text, style="red" if depth else "")


def views_json(views: Sequence[ServiceView]) -> str:
    """One object per replica, then one per foreign listener (``state: "foreign"``); the
    service-wide figures are repeated on each so a script can filter rows freely."""
    rows = []
    for view in views:
        service = {
            "desired": view.desired,
            "ready": view.ready,
            "port": view.port,
            "replacements": dict(view.replacements or {}),
            "foreign_listeners": len(view.foreign),
        }
        for row in view.rows:
            rows.append({**row.to_json(), **service})
        for foreign in view.foreign:
            rows.append(
                {
                    "service": view.name,
                    "replica": None,
                    "container_id": foreign.container_id[:12] if foreign.container_id else None,
                    "state": "foreign",
                    "listening": True,
                    "pid": foreign.pid,
                    "program": foreign.program,
                    "uid": foreign.uid,
                    "address": foreign.address,
                    "class": foreign.kind,
                    **service,
                }
            )
    return json.dumps(rows, indent=2)


# --------------------------------------------------------------------------- doctor

_MARKS: dict[str, tuple[str, str]] = {
    "ok": ("✓", "green"),
    "warn": ("!", "yellow"),
    "fail": ("✗", "red"),
}


def checklist(findings: Sequence[Finding]) -> Group:
    """`doctor`'s human checklist: one row per finding, its fix under it, then the verdict."""
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="bold")
    table.add_column()
    for finding in findings:
        mark, colour = _MARKS[finding.status]
        text = Text(finding.detail)  # Text, not markup: details quote `[...]` verbatim
        if finding.fix:
            text.append("\nfix: ").append(finding.fix, style="bold")
        table.add_row(Text(mark, style=colour), finding.check, text)
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    if failed:
        verdict = Text(f"{_count(failed, 'problem')} would stop `reuseport up`", style="red")
    else:
        verdict = Text("nothing stops `reuseport up`", style="green")
    if warned:
        verdict.append(f" ({_count(warned, 'warning')})", style="yellow")
    return Group(table, Text(""), verdict)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

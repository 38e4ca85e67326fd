"""Rich renderings of service statuses: the `ps` table, `top` and the live `up` table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from reuseport.judge import AWAITING_HEALTH, DRAINING
from reuseport.status import STALE_AFTER_S, ReplicaStatus, ServiceStatus, replica_json

if TYPE_CHECKING:  # doctor is imported only when `doctor` runs
    from reuseport.doctor import Finding


def service_table(status: ServiceStatus, now: float) -> Group:
    port = f":{status.port}" if status.port else "port ?"
    desired = status.desired if status.desired is not None else "?"
    ready = status.ready
    header = Text.assemble(
        (status.name, "bold"),
        f"  {port}  ",
        (f"{ready}/{desired} ready", "green" if ready == status.desired else "yellow"),
        f"  supervisor: {status.supervisor}",
        _freshness(status, now),
        f"  connections: {status.connections}" if status.counted else "",
        _balance(status),
        (f"  replaced: {_replacements(status)}", "yellow") if status.replacements else "",
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
        "STEERED",
        "RESTARTS",
        "UPTIME",
        "IMAGE",
        "NOTE",
    ):
        table.add_column(column, min_width=widths.get(column), no_wrap=column != "NOTE")
    for row in status.replicas:
        sockets = row.sockets
        uptime = now - row.started_at if row.running and row.started_at else None
        table.add_row(
            str(row.index),
            row.short_id or "-",
            Text(row.state, style="green" if row.state == "running" else "yellow"),
            Text("yes", style="green") if row.listening else Text("no", style="red"),
            str(row.pid) if row.pid else "-",
            str(sockets.connections) if sockets else "-",
            _queue(sockets.accept_queue, sockets.backlog) if sockets else Text("-"),
            f"{sockets.share:.0%}" if sockets else "-",
            _member(row),
            str(row.restarts),
            format_uptime(uptime),
            row.image,
            _note(row, now),
        )
    parts: list[Text | Table] = [header, table]
    if status.problem:
        parts.append(Text(f"! {status.problem}", style="bold red"))
    steered = any(row.member for row in status.replicas)
    for foreign in status.foreign:
        said = (
            "steering shuts it out: it gets no new connection"
            if steered
            else "with SO_REUSEPORT and the same uid it takes a share of the connections"
        )
        parts.append(
            Text(
                f"! foreign listener on :{status.port}: {foreign.describe()} is not a replica; "
                + said,
                style="yellow" if steered else "bold red",
            )
        )
    return Group(*parts)


def _balance(status: ServiceStatus) -> Text | str:
    if not status.balance:
        return ""
    if status.balance_note:
        return Text(f"  balance: {status.balance} ({status.balance_note})", style="yellow")
    return f"  balance: {status.balance}"


def _member(row: ReplicaStatus) -> Text:
    """In the steering map (takes new connections) or not and why; "-" when not steered."""
    if row.member is None:
        return Text("-")
    if row.member:
        return Text("in", style="green")
    return Text(f"out: {row.out_why}" if row.out_why else "out", style="yellow")


def _note(row: ReplicaStatus, now: float) -> str:
    if row.why:
        return f"replacing: {row.why}"
    if row.verdict == AWAITING_HEALTH:
        waiting = "waiting for its first passing health check"
        return f"{waiting}; last: {row.check_error}" if row.check_error else waiting
    if row.verdict == DRAINING:
        return "draining"
    note = f"retry in {max(0.0, row.retry_at - now):.1f}s" if row.retry_at is not None else ""
    if row.last_error:
        note = f"{note}; {row.last_error}" if note else f"last: {row.last_error}"
    return note


def _freshness(status: ServiceStatus, now: float) -> Text:
    """How old the supervisor's last pass is; stale said plainly."""
    if not status.mode:
        return Text("")
    age = status.age(now)
    if age > STALE_AFTER_S:
        return Text(f"  STALE: last pass {age:.0f}s ago", style="bold red")
    return Text(f"  (last pass {age:.1f}s ago)", style="dim")


def _replacements(status: ServiceStatus) -> str:
    counts = sorted(status.replacements.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n} {kind}" for kind, n in counts)


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _queue(depth: int | None, backlog: int | None) -> Text:
    if depth is None:
        return Text("-")
    text = f"{depth}/{backlog}" if backlog else str(depth)
    return Text(text, style="red" if depth else "")


def statuses_json(statuses: Sequence[ServiceStatus], now: float) -> str:
    """One object per replica, then one per foreign listener (``state: "foreign"``); the
    service-wide figures are repeated on each so a script can filter rows freely."""
    rows = []
    for status in statuses:
        service = {
            "desired": status.desired,
            "ready_replicas": status.ready,
            "port": status.port,
            "replacements": dict(status.replacements),
            "foreign_listeners": len(status.foreign),
            "supervisor": status.supervisor,
            "status_age_s": round(status.age(now), 1) if status.mode else None,
            "problem": status.problem,
        }
        for row in status.replicas:
            rows.append({**replica_json(status, row, now), **service})
        for foreign in status.foreign:
            rows.append(
                {
                    "service": status.name,
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

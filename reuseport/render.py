"""Rich renderings of service views: the `ps` table and the live `up` table."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from reuseport.view import ServiceView, format_uptime


def service_table(view: ServiceView) -> Group:
    port = f":{view.port}" if view.port else "port ?"
    desired = view.desired if view.desired is not None else "?"
    header = Text.assemble(
        (view.name, "bold"),
        f"  {port}  ",
        (f"{view.ready}/{desired} ready", "green" if view.ready == view.desired else "yellow"),
        f"  supervisor: {view.supervisor}",
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    widths = {"CONTAINER": 12, "STATE": 7, "LISTENING": 9}
    for column in (
        "REPLICA",
        "CONTAINER",
        "STATE",
        "LISTENING",
        "PID",
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
        table.add_row(
            str(row.replica),
            row.container_id or "-",
            Text(row.state, style="green" if row.state == "running" else "yellow"),
            Text("yes", style="green") if row.listening else Text("no", style="red"),
            str(row.pid) if row.pid else "-",
            str(row.restarts),
            format_uptime(row.uptime_s),
            row.image,
            note,
        )
    return Group(header, table)


def views_json(views: Sequence[ServiceView]) -> str:
    rows = []
    for view in views:
        for row in view.rows:
            rows.append(
                {**row.to_json(), "desired": view.desired, "ready": view.ready, "port": view.port}
            )
    return json.dumps(rows, indent=2)

"""`ps` of a Swarm-run service: its tasks grouped by node, with the kernel's word (read here
for this node, from the node agents for the others; "unchecked" where none is fresh) and
each agent's verdict."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from reuseport.swarm.service import SwarmView, TaskRow


def swarm_table(seen: SwarmView) -> Group:
    spec = seen.spec
    ready = seen.ready
    update = f"  update: {seen.update}" if seen.update else ""
    header = Text.assemble(
        (spec.name, "bold"),
        f"  :{spec.port}  ",
        (f"{ready}/{spec.replicas} ready", "green" if ready == spec.replicas else "yellow"),
        f"  engine: swarm{update}",
        f"  max per node: {spec.max_per_node}" if spec.max_per_node else "",
        f"  balance: {balance_text(seen)}",
    )
    parts: list[Text | Table] = [header]
    rows = sorted(seen.rows, key=lambda r: (r.node_name, r.task.node_id, r.task.slot))
    for _, on_node in groupby(rows, key=lambda r: r.task.node_id):
        listed = list(on_node)
        node = listed[0].node
        here = ", this node" if node and node.is_self else ""
        state = f", {node.state}, {node.availability}" if node else ""
        name = f"{listed[0].node_name} ({listed[0].task.node_id[:12]}{here}{state})"
        parts.append(Text(f"node {name}: {len(listed)} tasks", style="bold"))
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("SLOT", "TASK", "CONTAINER", "STATE", "LISTENING", "VERDICT", "PID"):
            table.add_column(column, no_wrap=True)
        steering = any(row.steered for row in listed)
        if steering:
            table.add_column("STEERED", no_wrap=True)
        table.add_column("CONNS", no_wrap=True)
        table.add_column("IMAGE", no_wrap=True)
        table.add_column("NOTE")
        for row in listed:
            task = row.task
            cells: list[str | Text] = [
                str(task.slot),
                task.id[:12],
                task.container_id[:12] or "-",
                Text(task.state, style="green" if task.running else "yellow"),
                _listening(row),
                _verdict(row.verdict),
                str(row.pid) if row.pid else "-",
            ]
            if steering:
                cells.append(_steered(row.steered))
            cells += [
                str(row.connections) if row.connections is not None else "-",
                task.image,
                row.reason or task.error or (task.message if not task.running else ""),
            ]
            table.add_row(*cells)
        parts.append(table)
    if not seen.rows:
        parts.append(Text("no tasks", style="yellow"))
    for problem in seen.agent_errors:
        parts.append(Text(f"! {problem}", style="bold red"))
    for failed in seen.failures:
        parts.append(Text(f"! slot {failed.slot}: {failed.error}", style="yellow"))
    steered = seen.spec.balance != "hash" and balance_text(seen) == seen.spec.balance
    share = (
        "steering shuts it out: it gets no new connection"
        if steered
        else "with SO_REUSEPORT and the same uid it takes a share of the connections"
    )
    described = [f"on {d}" for d in seen.remote_foreign]
    described += [f"here: {foreign.describe()}" for foreign in seen.foreign]
    for where in described:
        parts.append(
            Text(
                f"! foreign listener on :{spec.port} {where} is not a task; {share}",
                style="yellow" if steered else "bold red",
            )
        )
    return Group(*parts)


def balance_text(seen: SwarmView) -> str:
    """The balance in force, as the node agents report it (they steer per node)."""
    asked = seen.spec.balance
    if not seen.balances:
        return asked if asked == "hash" else f"{asked} (asked; no agent report yet)"
    policies = set(seen.balances.values())
    if policies == {asked}:
        return asked
    return ", ".join(f"{node[:12]} {policy}" for node, policy in sorted(seen.balances.items()))


def _steered(steered: str) -> Text:
    if not steered:
        return Text("-", style="dim")
    return Text(steered, style="green") if steered == "in" else Text(f"out: {steered}", "yellow")


def _verdict(verdict: str | None) -> Text:
    if verdict is None:
        return Text("-", style="dim")
    return Text(verdict, style="green" if verdict == "ready" else "yellow")


def _listening(row: TaskRow) -> Text:
    if row.listening is None:
        return Text("unchecked", style="dim") if row.task.running else Text("-")
    return Text("yes", style="green") if row.listening else Text("no", style="red")


def swarm_rows(seen: SwarmView) -> list[dict[str, Any]]:
    """`ps --json` rows, shaped like the docker engine's (``replica`` is the task slot)."""
    spec = seen.spec
    service = {
        "engine": "swarm",
        "desired": spec.replicas,
        "ready_replicas": seen.ready,
        "port": spec.port,
        "update": seen.update or None,
        "foreign_listeners": len(seen.foreign) + len(seen.remote_foreign),
        "balance": balance_text(seen),
    }
    return [
        {
            "service": spec.name,
            "replica": row.task.slot,
            "task_id": row.task.id,
            "node": row.node_name,
            "node_id": row.task.node_id,
            "container_id": row.task.container_id or None,
            "state": row.task.state,
            "listening": row.listening,  # null: on another node, not read
            "pid": row.pid or None,  # this node's tasks only: the listener's process
            "connections": row.connections,
            "image": row.task.image,
            "error": row.task.error or None,
            "verdict": row.verdict,  # the node agent's; null: no fresh finding
            "reason": row.reason or None,
            # In its node's steering map (null: that node runs the kernel's hash, or no
            # fresh finding), and why not.
            "member": (row.steered == "in") if row.steered else None,
            "out_why": row.steered if row.steered and row.steered != "in" else None,
            **service,
        }
        for row in seen.rows
    ]

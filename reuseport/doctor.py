"""`reuseport doctor`: what on this host would stop `up` or hurt a service, with the fix.

:func:`diagnose` only reads: the engine, ``/proc/sys`` and the kernel's socket tables. Each
source is a parameter so unit tests replay hosts without Docker or root. A ``fail``
finding is something `up` refuses or cannot get past; a ``warn`` one degrades a running
service (reset connections, dropped bursts) without stopping it.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from reuseport import host
from reuseport.engine import Engine, Replica
from reuseport.engine import connect as connect_engine
from reuseport.errors import ReuseportError
from reuseport.kernel import attribution, options, ports, processes
from reuseport.kernel.sockets import Listener
from reuseport.kernel.sockets import listeners as read_listeners

Status = Literal["ok", "warn", "fail"]

ENGINE_FIX = "scripts/ensure-docker (or systemctl start docker)"
SOMAXCONN_MIN = 1024
SOMAXCONN_FIX = "sysctl -w net.core.somaxconn=4096"
REUSEPORT_SINCE = (3, 9)
MIGRATE_SINCE = (5, 14)


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str  # one line: what was found
    fix: str = ""  # the exact command or action; empty when there is nothing to do


def blocking(findings: Sequence[Finding]) -> bool:
    """Would `up` be refused or fail on this host?"""
    return any(f.status == "fail" for f in findings)


def as_json(findings: Sequence[Finding]) -> dict[str, object]:
    return {"blocking": blocking(findings), "findings": [asdict(f) for f in findings]}


def diagnose(
    port: int | None = None,
    *,
    connect: Callable[[], Engine] = connect_engine,
    sysctl: Callable[[str], int | None] | None = None,
    listeners: Callable[[int], list[Listener]] = read_listeners,
    reuseport: Callable[[Listener], bool | None] | None = None,
    process_tree: attribution.ProcessTree = processes.process_tree,
    euid: int | None = None,
    release: str | None = None,
    steering: Callable[[], str | None] | None = None,
) -> list[Finding]:
    """Every finding, in checklist order: engine, kernel, sysctls, the port, uids."""
    euid = os.geteuid() if euid is None else euid
    read = sysctl or read_sysctl
    findings: list[Finding] = []
    engine, finding = _engine(connect)
    findings.append(finding)
    findings.append(_kernel(release or platform.release()))
    findings.append(_migrate(read("net.ipv4.tcp_migrate_req")))
    findings.append(_somaxconn(read("net.core.somaxconn")))
    findings.append(_steering((steering or _steering_reason)()))
    if port is None:
        findings.append(_uids(euid, None, []))
        return findings
    replicas = _replicas(engine)
    probe = reuseport or (lambda listener: options.has_reuseport(listener, euid))
    held = _classify(listeners(port), replicas or [], probe, process_tree)
    findings.extend(_port(port, held, engine_answers=replicas is not None))
    findings.append(_uids(euid, port, held))
    return findings


# --------------------------------------------------------------------------- engine, host


def _engine(connect: Callable[[], Engine]) -> tuple[Engine | None, Finding]:
    try:
        engine = connect()
        info = engine.version()
    except ReuseportError as exc:
        # The message ends with the same advice as ENGINE_FIX; the fix column carries it.
        detail = exc.message.split(": start one with", 1)[0]
        return None, Finding("engine", "fail", detail, ENGINE_FIX)
    return engine, Finding(
        "engine",
        "ok",
        f"Docker {info.get('version', '?')} (API {info.get('api_version', '?')}) "
        f"at {info.get('address', '?')}",
    )


def _steering_reason() -> str | None:
    from reuseport.kernel import steer  # bpf(2) through ctypes: loaded only when asked

    return steer.unavailable_reason()


def _steering(reason: str | None) -> Finding:
    if reason is None:
        return Finding(
            "steering",
            "ok",
            "eBPF steering works here: --balance round-robin/least-conn send new connections "
            "only to ready replicas (the supervisor container gets CAP_SYS_ADMIN for it)",
        )
    return Finding(
        "steering",
        "warn",
        f"no eBPF steering here ({reason}): services run on the kernel's hash, which also "
        "sends new connections to starting, draining and hung replicas",
        "run as root (or with CAP_SYS_ADMIN / CAP_BPF) on Linux >= 5.14",
    )


def _version(release: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else None


def _kernel(release: str) -> Finding:
    version = _version(release)
    if version is None:
        return Finding("kernel", "warn", f"cannot tell the kernel version from {release!r}")
    if version < REUSEPORT_SINCE:
        return Finding(
            "kernel",
            "fail",
            f"Linux {release} has no SO_REUSEPORT for TCP (Linux >= 3.9)",
            "upgrade the kernel to Linux >= 5.14",
        )
    return Finding(
        "kernel",
        "ok",
        f"Linux {release} (SO_REUSEPORT needs >= 3.9, tcp_migrate_req >= 5.14)",
    )


def read_sysctl(name: str) -> int | None:
    """An integer sysctl, or None where this kernel has no such setting."""
    if name == "net.ipv4.tcp_migrate_req":
        return host.tcp_migrate_req()
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _migrate(value: int | None) -> Finding:
    check = "tcp_migrate_req"
    if value is None:
        return Finding(
            check,
            "warn",
            "no net.ipv4.tcp_migrate_req on this kernel: connections queued on a draining "
            "replica (rollout, scale down) are reset",
            "upgrade the kernel to Linux >= 5.14",
        )
    if value == 0:
        return Finding(
            check,
            "warn",
            "net.ipv4.tcp_migrate_req=0: connections queued on a draining replica (rollout, "
            "scale down) are reset instead of moving to its siblings",
            host.SET_HINT,
        )
    return Finding(check, "ok", f"net.ipv4.tcp_migrate_req={value}")


def _somaxconn(value: int | None) -> Finding:
    if value is None:
        return Finding("somaxconn", "warn", "cannot read net.core.somaxconn")
    if value < SOMAXCONN_MIN:
        return Finding(
            "somaxconn",
            "warn",
            f"net.core.somaxconn={value} caps every replica's accept queue at {value} "
            "connections: bursts beyond it are dropped",
            SOMAXCONN_FIX,
        )
    return Finding("somaxconn", "ok", f"net.core.somaxconn={value}")


# --------------------------------------------------------------------------- the port


@dataclass(frozen=True)
class _Held:
    """One listener on the port, with the replica holding it and what it means."""

    listener: Listener
    replica: Replica | None  # None: no replica of ours holds it (or the engine is down)
    verdict: ports.ListenerClass
    # A stranger on an address where replicas of ours listen: their service (the uid rule
    # then decides whether it shares their SO_REUSEPORT group).
    beside: str | None


def _replicas(engine: Engine | None) -> list[Replica] | None:
    """Replicas of every service of ours; None when the engine cannot say."""
    if engine is None:
        return None
    try:
        return engine.replicas()
    except ReuseportError:
        return None


def _classify(
    found: list[Listener],
    replicas: list[Replica],
    probe: Callable[[Listener], bool | None],
    process_tree: attribution.ProcessTree,
) -> list[_Held]:
    owned = attribution.owners(found, replicas, process_tree)
    groups = {s.address: (s.uid, owned[s.inode].service) for s in found if s.inode in owned}
    held: list[_Held] = []
    for listener in found:
        replica = owned.get(listener.inode)
        group = groups.get(listener.address)
        verdict = ports.classify(
            ports.Owner.of(listener),
            group[0] if group else None,
            replica is not None,
            None if replica else probe(listener),  # one probe per stranger, for both checks
        )
        beside = group[1] if group and replica is None else None
        held.append(_Held(listener, replica, verdict, beside))
    return held


def _stop_fix(owner: ports.Owner) -> str:
    if owner.pid is None:
        return "run `reuseport doctor` as root to see its owner, or choose another --port"
    if owner.container_id:
        return f"docker stop {owner.container_id[:12]} (or choose another --port)"
    return f"kill {owner.pid} (or choose another --port)"


def _port(port: int, held: list[_Held], engine_answers: bool) -> list[Finding]:
    check = "port"
    if not held:
        return [Finding(check, "ok", f"port {port} is free")]
    findings: list[Finding] = []
    ours: dict[str, list[str]] = {}
    # Replicas in index order (the kernel lists sockets in no particular order).
    by_index = sorted(held, key=lambda e: (e.replica is None, e.replica.index if e.replica else 0))
    for entry in by_index:
        listener, replica, owner = entry.listener, entry.replica, entry.verdict.owner
        if replica is not None:
            pid = owner.pid or replica.pid
            ours.setdefault(replica.service, []).append(
                f"replica {replica.index}: pid {pid}, uid {listener.uid}"
            )
        elif not engine_answers:
            findings.append(
                Finding(
                    check,
                    "warn",
                    f"port {port} is held by {owner.describe()}; whether it is a replica of "
                    "ours is unknown while the engine does not answer",
                )
            )
        else:
            findings.append(Finding(check, "fail", _foreign(port, entry.verdict), _stop_fix(owner)))
    if len(ours) > 1:
        names = ", ".join(repr(name) for name in sorted(ours))
        findings.insert(
            0,
            Finding(
                check,
                "fail",
                f"port {port} is served by replicas of several services ({names}): the "
                "kernel spreads connections across all of them",
                f"reuseport down {sorted(ours)[-1]} (or run it on another --port)",
            ),
        )
    elif ours:
        ((name, rows),) = ours.items()
        findings.insert(
            0,
            Finding(
                check,
                "ok",
                f"port {port} is served by replicas of {name!r} ({'; '.join(rows)})",
            ),
        )
    return findings


def _foreign(port: int, verdict: ports.ListenerClass) -> str:
    """Why `up` refuses the port because of a listener no replica of ours holds."""
    head = f"port {port} is held by {verdict.owner.describe()}"
    if verdict.kind == "foreign-joinable":
        return (
            f"{head} with SO_REUSEPORT, which is not a replica of ours and would take a share "
            "of the connections: `up` refuses the port"
        )
    if verdict.kind == "foreign-blocking":
        return f"{head}, which is not in a SO_REUSEPORT group: `up` refuses the port"
    if verdict.kind == "other-uid":
        return (
            f"{head}, which is not a replica of ours, under another uid than the replicas' "
            f"({ports.UID_RULE}): `up` refuses the port"
        )
    return f"{head}, which is not a replica of ours: `up` refuses the port"


# --------------------------------------------------------------------------- uids


def _uids(euid: int, port: int | None, held: list[_Held]) -> Finding:
    parts = [f"doctor runs as uid {euid}"]
    holders = [
        f"replica {e.replica.service}.{e.replica.index} as uid {e.listener.uid}"
        if e.replica
        else e.verdict.owner.describe()
        for e in held
    ]
    if port is not None:
        parts.append(f"on port {port}: " + (", ".join(holders) if holders else "no listener"))
    for entry in held:
        # A stranger beside the replicas with their uid shares their group (ports.classify).
        if entry.beside is None or entry.verdict.kind == "other-uid":
            continue
        owner = entry.verdict.owner
        pid = f"pid {owner.pid}" if owner.pid else "an unseen process"
        if entry.verdict.kind == "foreign-blocking":
            status: Status = "warn"
            detail = (
                f"{pid} shares uid {owner.uid} with the replicas of {entry.beside!r}: it joins "
                "their SO_REUSEPORT group silently if it ever sets the option"
            )
        else:
            status = "fail"
            detail = (
                f"{pid} shares uid {owner.uid} with the replicas of {entry.beside!r} and sits "
                "in their SO_REUSEPORT group: it takes a share of their connections"
            )
        kill = f"kill {owner.pid}; " if owner.pid else ""
        return Finding(
            "uids",
            status,
            f"{'; '.join(parts)}; {detail}",
            f"{kill}run the replicas under a uid of their own (`reuseport up --user UID`)",
        )
    if euid != 0:
        return Finding(
            "uids",
            "warn",
            f"{'; '.join(parts)}, not root: sockets of other users show no owner, and `up` "
            "cannot see its replicas listen",
            "run it as root (sudo)",
        )
    return Finding("uids", "ok", "; ".join(parts))

"""`reuseport doctor`: what on this host would stop `up` or hurt a service, with the fix.

:func:`diagnose` only reads: the engine, ``/proc/sys`` and the kernel's socket tables. Each
source is a parameter so unit tests replay hosts without Docker or root. A ``fail``
finding is something `up` refuses or cannot get past; a ``warn`` one degrades a running
service (reset connections, dropped bursts) without stopping it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from rich.console import Group
from rich.table import Table
from rich.text import Text

from reuseport import host, kernel, preflight
from reuseport.engine import Engine, Replica
from reuseport.engine import connect as connect_engine
from reuseport.errors import ReuseportError

Status = Literal["ok", "warn", "fail"]

ENGINE_FIX = "scripts/ensure-docker (or systemctl start docker)"
SOMAXCONN_MIN = 1024
SOMAXCONN_FIX = "sysctl -w net.core.somaxconn=4096"
REUSEPORT_SINCE = (3, 9)
MIGRATE_SINCE = (5, 14)
_SYS_PIDFD_GETFD = 438  # one number on every architecture (unified table, Linux >= 5.6)


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
    listeners: Callable[[int], list[kernel.Listener]] = kernel.listeners,
    reuseport: Callable[[kernel.Listener], bool | None] | None = None,
    euid: int | None = None,
    release: str | None = None,
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
    if port is None:
        findings.append(_uids(euid, None, [], {}, lambda listener: None))
        return findings
    replicas = _replicas_by_container(engine)
    found = listeners(port)
    probe = reuseport or (lambda listener: has_reuseport(listener, euid))
    # One probe per foreign listener, shared by the port and uid findings.
    flags = {s.inode: probe(s) for s in found if _replica_of(s, replicas) is None}
    findings.extend(_port(port, found, replicas, flags))
    findings.append(_uids(euid, port, found, replicas or {}, lambda s: flags.get(s.inode)))
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


def _replicas_by_container(engine: Engine | None) -> dict[str, Replica] | None:
    """Replicas of every service of ours by container id; None when the engine cannot say."""
    if engine is None:
        return None
    try:
        return {r.id: r for r in engine.replicas()}
    except ReuseportError:
        return None


def _replica_of(listener: kernel.Listener, replicas: dict[str, Replica] | None) -> Replica | None:
    if replicas is None or listener.container_id is None:
        return None
    return replicas.get(listener.container_id)


def _who(listener: kernel.Listener) -> str:
    # Same wording as preflight, so doctor and `up` name a holder alike.
    if not listener.pids:
        return f"a socket on {listener.address} (owner process not visible)"
    who = f"pid {listener.pids[0]} ({listener.program or '?'})"
    if listener.container_id:
        who += f" in container {listener.container_id[:12]}"
    return who


def _owner(listener: kernel.Listener) -> str:
    if not listener.pids:
        return "owner not visible"
    return f"pid {listener.pids[0]}, {listener.program or '?'}"


def _stop_fix(listener: kernel.Listener) -> str:
    if not listener.pids:
        return "run `reuseport doctor` as root to see its owner, or choose another --port"
    if listener.container_id:
        return f"docker stop {listener.container_id[:12]} (or choose another --port)"
    return f"kill {listener.pids[0]} (or choose another --port)"


def _port(
    port: int,
    found: list[kernel.Listener],
    replicas: dict[str, Replica] | None,
    flags: dict[int, bool | None],
) -> list[Finding]:
    check = "port"
    if not found:
        return [Finding(check, "ok", f"port {port} is free")]
    findings: list[Finding] = []
    ours: dict[str, list[str]] = {}
    for listener in found:
        replica = _replica_of(listener, replicas)
        if replica is not None:
            pid = listener.pids[0] if listener.pids else replica.pid
            ours.setdefault(replica.service, []).append(
                f"replica {replica.index}: pid {pid}, uid {listener.uid}"
            )
            continue
        if replicas is None and listener.container_id is not None:
            # Without the engine a container's socket may well be one of our replicas.
            findings.append(
                Finding(
                    check,
                    "warn",
                    f"port {port} is held by {_who(listener)}; whether it is a replica of "
                    "ours is unknown while the engine does not answer",
                )
            )
            continue
        findings.append(
            Finding(check, "fail", _foreign(port, listener, flags), _stop_fix(listener))
        )
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


def _foreign(port: int, listener: kernel.Listener, flags: dict[int, bool | None]) -> str:
    head = f"port {port} is held by {_who(listener)} as uid {listener.uid}"
    has = flags.get(listener.inode)
    if has is True:
        return (
            f"{head} with SO_REUSEPORT, which is not a replica of ours and would take a share "
            "of the connections: `up` refuses the port"
        )
    if has is False:
        return f"{head}, which is not in a SO_REUSEPORT group: `up` refuses the port"
    return f"{head}, which is not a replica of ours: `up` refuses the port"


# --------------------------------------------------------------------------- uids


def _uids(
    euid: int,
    port: int | None,
    found: list[kernel.Listener],
    replicas: dict[str, Replica],
    flag: Callable[[kernel.Listener], bool | None],
) -> Finding:
    parts = [f"doctor runs as uid {euid}"]
    ours: dict[tuple[str, int], str] = {}  # (address, uid) -> service
    holders: list[str] = []
    for listener in found:
        replica = _replica_of(listener, replicas)
        if replica is not None:
            ours.setdefault((listener.address, listener.uid), replica.service)
            holders.append(f"uid {listener.uid} (replica {replica.service}.{replica.index})")
        else:
            holders.append(f"uid {listener.uid} ({_owner(listener)})")
    if port is not None:
        parts.append(f"on port {port}: " + (", ".join(holders) if holders else "no listener"))
    # SO_REUSEPORT groups sockets by address and effective uid, nothing else: a stranger
    # with the replicas' uid that sets the option is load-balanced in without a word.
    for listener in found:
        service = ours.get((listener.address, listener.uid))
        if service is None or _replica_of(listener, replicas) is not None:
            continue
        has = flag(listener)
        pid = f"pid {listener.pids[0]}" if listener.pids else "an unseen process"
        if has is False:
            status: Status = "warn"
            detail = f"{pid} shares uid {listener.uid} with the replicas of {service!r}: it " + (
                "joins their SO_REUSEPORT group silently if it ever sets the option"
            )
        else:
            status = "fail"
            detail = (
                f"{pid} shares uid {listener.uid} with the replicas of {service!r} and sits in "
                "their SO_REUSEPORT group: it takes a share of their connections"
            )
        kill = f"kill {listener.pids[0]}; " if listener.pids else ""
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


# --------------------------------------------------------------------------- SO_REUSEPORT


def has_reuseport(listener: kernel.Listener, euid: int | None = None) -> bool | None:
    """Does the listener have SO_REUSEPORT set? None when it cannot be told.

    Asked of the socket itself through a duplicate of its owner's fd (pidfd_getfd); else a
    probe bind beside it, which only answers for sockets of our own uid.
    """
    for pid in listener.pids:
        answer = _reuseport_via_pidfd(pid, listener.inode)
        if answer is not None:
            return answer
    if listener.uid != (os.geteuid() if euid is None else euid):
        return None  # a bind beside another uid's socket fails whatever its options
    return _probe_joinable(listener.address, listener.port)


def _fd_of(pid: int, inode: int) -> int | None:
    link = f"socket:[{inode}]"
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == link:
                return int(name)
        except OSError:
            continue
    return None


def _reuseport_via_pidfd(pid: int, inode: int) -> bool | None:
    target = _fd_of(pid, inode)
    if target is None:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # gone, or a kernel < 5.3
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        dup = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, target, 0))
        if dup < 0:  # EPERM (no ptrace right), ENOSYS (< 5.6), EBADF (fd closed meanwhile)
            return None
        # Our copy holds the listener open only for these few microseconds, and closing it
        # just drops our reference: the owner's socket is left exactly as it was.
        with socket.socket(fileno=dup) as dup_sock:
            if os.fstat(dup_sock.fileno()).st_ino != inode:
                return None  # the pid or fd number was reused since the scan
            return bool(dup_sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
    except OSError:
        return None
    finally:
        os.close(pidfd)


def _probe_joinable(address: str, port: int) -> bool | None:
    """preflight's check: a SO_REUSEPORT bind (never a listen) beside it succeeds."""
    try:
        return preflight.joinable(address, port)
    except OSError:  # not EADDRINUSE: cannot tell
        return None


# --------------------------------------------------------------------------- rendering

_MARKS: dict[str, tuple[str, str]] = {
    "ok": ("✓", "green"),
    "warn": ("!", "yellow"),
    "fail": ("✗", "red"),
}


def checklist(findings: Sequence[Finding]) -> Group:
    """The human checklist: one row per finding, its fix under it, then the verdict."""
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

"""Host settings reuseport reads, and changes only when asked to (never silently)."""

from __future__ import annotations

from pathlib import Path

from reuseport.errors import ReuseportError

TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
SET_HINT = "sysctl -w net.ipv4.tcp_migrate_req=1"


def tcp_migrate_req(path: Path = TCP_MIGRATE_REQ) -> int | None:
    """The current value, or None where the kernel (< 5.14) has no such setting."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def drain_advice(enable: bool, path: Path = TCP_MIGRATE_REQ) -> str | None:
    """Make sure draining a replica does not reset connections queued on its listener.

    With ``enable`` set the setting is turned on and the change is reported; otherwise a
    warning with the exact command is returned when it is off. None: nothing to say.
    """
    value = tcp_migrate_req(path)
    if value is None:
        return (
            "this kernel has no net.ipv4.tcp_migrate_req (Linux >= 5.14): connections queued "
            "on a draining replica will be reset"
        )
    if value != 0:
        return None
    if enable:
        try:
            path.write_text("1\n")
        except OSError as exc:
            raise ReuseportError(f"cannot set net.ipv4.tcp_migrate_req: {exc.strerror}") from exc
        return (
            "set net.ipv4.tcp_migrate_req=1 (was 0): connections queued on a draining replica "
            "now move to its siblings; `sysctl -w net.ipv4.tcp_migrate_req=0` restores it"
        )
    return (
        "warning: net.ipv4.tcp_migrate_req=0, so connections queued on a draining replica are "
        f"reset; run `{SET_HINT}` (or pass --tcp-migrate-req) for zero failed requests"
    )

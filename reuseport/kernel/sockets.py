"""The TCP sockets on one port: its listeners (with their holders) and its connections.

Everything here is a pure read. Nothing here ever opens, duplicates or keeps a replica's
socket, so the supervisor can never extend a listener past its replica's life.

Sources, both of the reader's network namespace (host-network containers share it):

* NETLINK_SOCK_DIAG (:mod:`reuseport.kernel.netlink`, what ``ss`` uses);
* as a fallback ``{proc}/net/tcp`` and ``{proc}/net/tcp6``.

For a LISTEN socket the receive queue (``rx_queue``) is the current accept-queue depth
(``sk_ack_backlog``). Which processes hold a socket comes from their fd tables
(:mod:`reuseport.kernel.processes`).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from reuseport.kernel import netlink, processes

__all__ = [
    "ListenSocket",
    "Listener",
    "PortSockets",
    "listeners",
    "listening_inodes",
    "passive_opens",
    "pids_listening",
    "port_sockets",
]

_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """One TCP LISTEN socket on the port, with the processes that hold it."""

    inode: int
    address: str  # "0.0.0.0", "::", "127.0.0.1", "::ffff:127.0.0.1", ...
    port: int
    family: str  # "ipv4" | "ipv6"
    uid: int  # socket owner uid
    accept_queue: int  # connections waiting for accept()
    pids: tuple[int, ...]  # processes holding an fd to this socket (empty if unknown)
    program: str | None  # comm of the first pid
    container_id: str | None  # 64-hex Docker container id of the first pid (description only)


@dataclass(frozen=True)
class ListenSocket:
    """A LISTEN socket as the kernel reports it, without its owners."""

    inode: int
    address: str
    family: str
    uid: int
    accept_queue: int  # connections waiting for accept()
    backlog: int  # the most the accept queue may hold (0 when unknown)


@dataclass(frozen=True)
class PortSockets:
    """One read of the TCP sockets on a port: listeners and established connections."""

    listeners: dict[int, ListenSocket]  # inode -> socket
    # Inodes of established connections some process has accept()ed. A connection still in
    # an accept queue has no file yet, hence inode 0: those are only counted.
    accepted: frozenset[int]
    unaccepted: int


# --------------------------------------------------------------------------- /proc/net/tcp*


def _decode_address(hex_addr: str) -> str:
    """Decode the address column of /proc/net/tcp{,6}.

    The kernel prints each 32-bit word of the (network-order) address with ``%08X`` as a
    host-order integer, so every word has to be re-packed in native byte order.
    """
    if len(hex_addr) == 8:
        return socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(hex_addr, 16)))
    if len(hex_addr) == 32:
        words = [int(hex_addr[i : i + 8], 16) for i in range(0, 32, 8)]
        return socket.inet_ntop(socket.AF_INET6, struct.pack("=4I", *words))
    raise ValueError(f"unexpected address {hex_addr!r}")


def listening_inodes(port: int, proc: str = "/proc") -> dict[int, tuple[str, str, int, int]]:
    """TCP LISTEN sockets on ``port``: ``inode -> (address, family, uid, accept_queue)``.

    With the default ``proc="/proc"`` the kernel is asked over NETLINK_SOCK_DIAG, which
    walks only the listening hash, filtered by port (tens of microseconds), whereas reading
    /proc/net/tcp walks the whole established hash (ms). If sock_diag is unavailable, or
    ``proc`` points elsewhere (tests), ``{proc}/net/tcp`` and ``{proc}/net/tcp6`` are parsed.
    """
    if proc == "/proc":
        try:
            return _listening_inodes_diag(port)
        except OSError:
            pass
    return _listening_inodes_proc(port, proc)


def _listening_inodes_proc(port: int, proc: str) -> dict[int, tuple[str, str, int, int]]:
    """Parse ``{proc}/net/tcp{,6}``; a missing file (IPv6 disabled) counts as empty."""
    suffix = f":{port:04X} "
    result: dict[int, tuple[str, str, int, int]] = {}
    for name, family in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        try:
            with open(os.path.join(proc, "net", name), encoding="ascii") as fh:
                text = fh.read()
        except (FileNotFoundError, PermissionError):
            continue
        for line in text.splitlines()[1:]:
            # Cheap pre-filter before splitting: local "ADDR:PORT " followed by remote.
            if suffix not in line:
                continue
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            local_addr, _, local_port = fields[1].partition(":")
            if int(local_port, 16) != port:
                continue  # the suffix matched the remote address, not the local one
            inode = int(fields[9])
            if inode == 0:
                continue
            rx_queue = int(fields[4].partition(":")[2], 16)
            result[inode] = (_decode_address(local_addr), family, int(fields[7]), rx_queue)
    return result


def _listening_inodes_diag(port: int) -> dict[int, tuple[str, str, int, int]]:
    """Ask the kernel (sock_diag) for TCP LISTEN sockets on ``port``; OSError if unusable."""
    return {
        s.inode: (s.address, s.family, s.uid, s.rqueue)
        for s in netlink.dump(port, netlink.TCPF_LISTEN)
        if s.inode
    }


def port_sockets(port: int, connections: bool = True, proc: str = "/proc") -> PortSockets:
    """Listeners on ``port`` (with backlog) and, if asked, its established connections.

    sock_diag only; without it the listeners come from ``{proc}/net/tcp*`` with an unknown
    backlog and no connections. The listener dump is cheap (~0.1 ms); the established one
    walks every bucket of the kernel's established hash whatever the port holds (~3.5 ms of
    kernel CPU here), so ask for connections sparingly.
    """
    if proc == "/proc":
        try:
            states = netlink.TCPF_LISTEN | (netlink.TCPF_ESTABLISHED if connections else 0)
            dump = netlink.dump(port, states)
        except OSError:
            pass
        else:
            listen = {
                s.inode: ListenSocket(s.inode, s.address, s.family, s.uid, s.rqueue, s.wqueue)
                for s in dump
                if s.state == netlink.TCP_STATE_LISTEN and s.inode
            }
            established = [s for s in dump if s.state == netlink.TCP_STATE_ESTABLISHED]
            accepted = frozenset(s.inode for s in established if s.inode)
            return PortSockets(listen, accepted, len(established) - len(accepted))
    listen = {
        inode: ListenSocket(inode, address, family, uid, queue, 0)
        for inode, (address, family, uid, queue) in _listening_inodes_proc(port, proc).items()
    }
    return PortSockets(listen, frozenset(), 0)


def passive_opens(proc: str = "/proc") -> int | None:
    """Connections this network namespace ever accepted at the TCP level (``PassiveOpens``
    of ``{proc}/net/snmp``), None if unreadable: while it stands still, no connection was
    established on any port (a cheap read, ~30 us, unlike the established dump)."""
    try:
        with open(f"{proc}/net/snmp", encoding="ascii") as fh:
            tcp = [line.split() for line in fh if line.startswith("Tcp:")]
        return int(tcp[1][tcp[0].index("PassiveOpens")])
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- with holders


def listeners(port: int, proc: str = "/proc") -> list[Listener]:
    """Every TCP LISTEN socket on ``port`` with its holder processes, program and container.

    Scans the fd tables of all processes in ``proc``, so it costs more than
    :func:`pids_listening` or ``attribution.observe``, which read only given processes; use
    those in polling loops. Sorted by inode.
    """
    sockets = listening_inodes(port, proc)
    if not sockets:
        return []
    proc = _processes(proc)
    owners: dict[int, list[int]] = {inode: [] for inode in sockets}
    for pid in processes.all_pids(proc):
        for inode in processes.socket_inodes(pid, proc) & sockets.keys():
            owners[inode].append(pid)

    result: list[Listener] = []
    for inode in sorted(sockets):
        address, family, uid, queue = sockets[inode]
        pids = tuple(sorted(owners[inode]))
        program = container = None
        if pids:
            program = processes.comm(pids[0], proc)
            container = processes.container_id_of(pids[0], proc)
        result.append(
            Listener(
                inode=inode,
                address=address,
                port=port,
                family=family,
                uid=uid,
                accept_queue=queue,
                pids=pids,
                program=program,
                container_id=container,
            )
        )
    return result


def pids_listening(port: int, pids: Iterable[int], proc: str = "/proc") -> set[int]:
    """Which of ``pids`` hold an fd to a TCP LISTEN socket on ``port``.

    Reads the socket tables once, then only the given processes' fd directories: cheap
    enough to poll every few milliseconds. Vanished or unreadable pids are not returned.
    """
    sockets = listening_inodes(port, proc)
    if not sockets:
        return set()
    proc = _processes(proc)
    return {pid for pid in set(pids) if processes.socket_inodes(pid, proc) & sockets.keys()}


def _processes(proc: str) -> str:
    """Where processes are read for ``proc``: the default /proc means processes.PROC (the
    host's, where it is mounted elsewhere); the sockets are this network namespace's."""
    return processes.PROC if proc == "/proc" else proc

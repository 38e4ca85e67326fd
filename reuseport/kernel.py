"""Kernel-facing reads: who listens on a TCP port, and which processes own those sockets.

Everything here is a pure read. Nothing here ever opens, duplicates or keeps a replica's
socket, so the supervisor can never extend a listener past its replica's life. The only
socket used is a short-lived NETLINK_SOCK_DIAG query socket, closed before returning.

Sources:

* NETLINK_SOCK_DIAG (what ``ss`` uses), or as a fallback ``{proc}/net/tcp`` and
  ``{proc}/net/tcp6``: the TCP sockets of the reader's network namespace (host-network
  containers share it). For a LISTEN socket the receive queue (``rx_queue``) is the current
  accept-queue depth (``sk_ack_backlog``).
* ``{proc}/PID/fd/*``: symlinks ``socket:[INODE]`` map sockets to the processes holding them.
* ``{proc}/PID/comm`` and ``{proc}/PID/cgroup``: program name and Docker container id.

Processes that vanish mid-scan, or whose fds we may not read, are skipped silently.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ListenSocket",
    "Listener",
    "close_listener",
    "PortSockets",
    "container_id_of",
    "listeners",
    "listening_inodes",
    "pids_listening",
    "port_sockets",
    "process_tree",
    "socket_inodes",
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
    container_id: str | None  # 64-hex Docker container id of the first pid


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

    With the default ``proc="/proc"`` the kernel is asked over NETLINK_SOCK_DIAG (what
    ``ss`` uses): it walks only the listening hash, filtered by port, which costs tens of
    microseconds, whereas reading /proc/net/tcp walks the whole established hash (ms). If
    sock_diag is unavailable, or ``proc`` points elsewhere (tests), ``{proc}/net/tcp`` and
    ``{proc}/net/tcp6`` are parsed instead. Both views are of the caller's network namespace.
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


# NETLINK_SOCK_DIAG / inet_diag (linux/sock_diag.h, linux/inet_diag.h, linux/netlink.h).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_STATE_LISTEN = 10
_TCPF_LISTEN = 1 << _TCP_STATE_LISTEN
_TCP_STATE_ESTABLISHED = 1
_TCPF_ESTABLISHED = 1 << _TCP_STATE_ESTABLISHED
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue,
# uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


def _diag_request(family: int, port: int, seq: int, states: int = _TCPF_LISTEN) -> bytes:
    # inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid: sport and
    # dport (big endian), src[16], dst[16], if, cookie[2]. A non-zero sport makes the kernel
    # skip listeners on other ports.
    body = (
        struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states)
        + struct.pack(">HH", port, 0)
        + bytes(32)  # src, dst
        + bytes(12)  # if, cookie
    )
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0
    )
    return header + body


def _listening_inodes_diag(port: int) -> dict[int, tuple[str, str, int, int]]:
    """Ask the kernel (sock_diag) for TCP LISTEN sockets on ``port``; OSError if unusable."""
    return {
        s.inode: (s.address, s.family, s.uid, s.rqueue)
        for s in _diag_dump(port, _TCPF_LISTEN)
        if s.inode
    }


@dataclass(frozen=True)
class _DiagSocket:
    state: int
    family: str
    address: str
    uid: int
    inode: int
    rqueue: int  # LISTEN: accept-queue depth; ESTABLISHED: bytes not yet read
    wqueue: int  # LISTEN: the backlog (max accept-queue depth); ESTABLISHED: bytes unsent
    raw_family: int = socket.AF_INET
    sockid: bytes = b""  # the raw inet_diag_sockid (ports, addresses, cookie)


def _diag_dump(port: int, states: int) -> list[_DiagSocket]:
    """TCP sockets whose local port is ``port`` in the given state mask (sock_diag)."""
    result: list[_DiagSocket] = []
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG
    ) as nl:
        nl.settimeout(2.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            nl.send(_diag_request(family, port, seq, states))
            done = False
            while not done:
                data = nl.recv(1 << 20)
                offset = 0
                while offset + _NLMSGHDR.size <= len(data):
                    length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                    if length < _NLMSGHDR.size:
                        raise OSError("malformed netlink message")
                    payload = offset + _NLMSGHDR.size
                    offset += (length + 3) & ~3
                    if mseq != seq:
                        continue
                    if mtype == _NLMSG_DONE:
                        done = True
                        break
                    if mtype == _NLMSG_ERROR:
                        (errno,) = struct.unpack_from("=i", data, payload)
                        if errno == 0:
                            continue
                        if -errno == 2 and family == socket.AF_INET6:  # ENOENT: no IPv6
                            done = True
                            break
                        raise OSError(-errno, os.strerror(-errno))
                    if mtype != _SOCK_DIAG_BY_FAMILY:
                        continue
                    msg = _DIAG_MSG.unpack_from(data, payload)
                    msg_family, state, sport, src = msg[0], msg[1], msg[4], msg[6]
                    if not (states >> state) & 1 or int.from_bytes(sport, "big") != port:
                        continue
                    if msg_family == socket.AF_INET:
                        address, name = socket.inet_ntop(socket.AF_INET, src[:4]), "ipv4"
                    else:
                        address, name = socket.inet_ntop(socket.AF_INET6, src), "ipv6"
                    result.append(
                        _DiagSocket(
                            state,
                            name,
                            address,
                            msg[13],
                            msg[14],
                            msg[11],
                            msg[12],
                            msg_family,
                            data[payload + 4 : payload + 4 + 48],
                        )
                    )
    return result


_SOCK_DESTROY = 21
_NLM_F_ACK = 0x4
_ENOENT = 2


def close_listener(port: int, inode: int, attempts: int = 256) -> bool:
    """Close a LISTEN socket from outside its process (sock_diag SOCK_DESTROY, what
    ``ss -K`` sends; needs CAP_NET_ADMIN). True once it is gone.

    The kernel stops routing new connections to it at once, and with
    ``net.ipv4.tcp_migrate_req=1`` moves the connections waiting in its accept queue to the
    rest of its SO_REUSEPORT group (otherwise they are reset). Only for a replica being
    replaced because it is hung: a hung process would never close it itself.

    The kernel finds the socket by a lookup that, in a SO_REUSEPORT group, picks a member
    by hashing the request's peer address and port, then refuses (ENOENT) unless the pick
    carries the exact cookie asked for. Varying the (fictitious, 0.0.0.0) peer port steers
    the pick; the cookie check makes sure only the named socket is ever closed.
    """
    wanted = [s for s in _diag_dump(port, _TCPF_LISTEN) if s.inode == inode]
    if not wanted:
        return True
    family, sockid = wanted[0].raw_family, wanted[0].sockid
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG
    ) as nl:
        nl.settimeout(2.0)
        for peer_port in range(1, attempts + 1):
            steered = sockid[:2] + struct.pack(">H", peer_port) + sockid[4:]
            body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0) + steered
            header = _NLMSGHDR.pack(
                _NLMSGHDR.size + len(body), _SOCK_DESTROY, _NLM_F_REQUEST | _NLM_F_ACK, peer_port, 0
            )
            nl.send(header + body)
            data = nl.recv(65536)
            _length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, 0)
            if mtype != _NLMSG_ERROR:
                continue
            (errno,) = struct.unpack_from("=i", data, _NLMSGHDR.size)
            if errno == 0:
                return True
            if -errno != _ENOENT:
                raise OSError(-errno, f"cannot close listener {inode}: {os.strerror(-errno)}")
    return not any(s.inode == inode for s in _diag_dump(port, _TCPF_LISTEN))


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


def port_sockets(port: int, connections: bool = True, proc: str = "/proc") -> PortSockets:
    """Listeners on ``port`` (with backlog) and, if asked, its established connections.

    sock_diag only (the established dump walks just this port's sockets); without it the
    listeners come from ``{proc}/net/tcp*`` with an unknown backlog and no connections.
    """
    if proc == "/proc":
        try:
            states = _TCPF_LISTEN | (_TCPF_ESTABLISHED if connections else 0)
            dump = _diag_dump(port, states)
        except OSError:
            pass
        else:
            listen = {
                s.inode: ListenSocket(s.inode, s.address, s.family, s.uid, s.rqueue, s.wqueue)
                for s in dump
                if s.state == _TCP_STATE_LISTEN and s.inode
            }
            established = [s for s in dump if s.state == _TCP_STATE_ESTABLISHED]
            accepted = frozenset(s.inode for s in established if s.inode)
            return PortSockets(listen, accepted, len(established) - len(accepted))
    listen = {
        inode: ListenSocket(inode, address, family, uid, queue, 0)
        for inode, (address, family, uid, queue) in _listening_inodes_proc(port, proc).items()
    }
    return PortSockets(listen, frozenset(), 0)


# --------------------------------------------------------------------------- fd scans


def socket_inodes(pid: int, proc: str = "/proc") -> set[int]:
    """Inodes of every socket process ``pid`` holds an fd to (empty if unreadable)."""
    fd_dir = f"{proc}/{pid}/fd"
    found: set[int] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:  # vanished, not ours, not a dir
        return found
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:  # fd closed meanwhile, process gone, permission
            continue
        if link.startswith("socket:["):
            found.add(int(link[8:-1]))
    return found


def _all_pids(proc: str) -> list[int]:
    try:
        return [int(n) for n in os.listdir(proc) if n.isdigit()]
    except OSError:
        return []


def _read_small(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:  # vanished, not ours, not a dir
        return None


def _comm(pid: int, proc: str) -> str | None:
    text = _read_small(f"{proc}/{pid}/comm")
    if text is None:
        return None
    return text.rstrip("\n") or None


def listeners(port: int, proc: str = "/proc") -> list[Listener]:
    """Every TCP LISTEN socket on ``port`` with its owner processes, program and container.

    Scans the fd tables of all processes in ``proc``, so it costs more than
    :func:`pids_listening` or ``probe.observe``, which read only given processes; use those
    in polling loops. Sorted by inode.
    """
    sockets = listening_inodes(port, proc)
    if not sockets:
        return []
    owners: dict[int, list[int]] = {inode: [] for inode in sockets}
    for pid in _all_pids(proc):
        for inode in socket_inodes(pid, proc) & sockets.keys():
            owners[inode].append(pid)

    result: list[Listener] = []
    for inode in sorted(sockets):
        address, family, uid, queue = sockets[inode]
        pids = tuple(sorted(owners[inode]))
        program = container = None
        if pids:
            program = _comm(pids[0], proc)
            container = container_id_of(pids[0], proc)
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
    return {pid for pid in set(pids) if socket_inodes(pid, proc) & sockets.keys()}


# --------------------------------------------------------------------------- containers

# Docker-specific shapes, most specific first. The last match on a line wins, so nested
# Docker (".../docker/<outer>/docker/<inner>") yields the innermost container.
_DOCKER_ID = re.compile(r"(?:/docker/|docker-)([0-9a-f]{64})(?![0-9a-f])")
# Any standalone 64-hex path component (cgroup v2 layouts, e.g. "0::/.../<id>").
_ANY_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def container_id_of(pid: int, proc: str = "/proc") -> str | None:
    """The 64-hex Docker container id of ``pid`` from ``{proc}/PID/cgroup``, else None.

    Understands cgroupfs paths (``/docker/<id>``), the systemd driver
    (``/system.slice/docker-<id>.scope``) and cgroup v2 (``0::/...<id>...``). Docker-shaped
    paths are preferred; otherwise any standalone 64-hex path component is taken.
    """
    text = _read_small(f"{proc}/{pid}/cgroup")
    if not text:
        return None
    paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
    for pattern in (_DOCKER_ID, _ANY_ID):
        for path in paths:
            matches = pattern.findall(path)
            if matches:
                return matches[-1]
    return None


# --------------------------------------------------------------------------- process tree


def _stat_ppid(stat: str) -> int | None:
    # "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    rest = stat[stat.rfind(")") + 2 :].split(" ", 2)
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def _children_via_task(pid: int, proc: str) -> list[int] | None:
    """Children of ``pid`` from ``task/*/children`` (CONFIG_PROC_CHILDREN), or None if absent."""
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        # Process gone: no children. Process there but no task dir: no such interface.
        return None if os.path.isdir(f"{proc}/{pid}") else []
    children: list[int] = []
    for tid in tids:
        try:
            with open(f"{proc}/{pid}/task/{tid}/children", encoding="ascii") as fh:
                children.extend(int(c) for c in fh.read().split())
        except FileNotFoundError:
            if not os.path.isdir(f"{proc}/{pid}/task/{tid}"):
                continue  # thread exited
            return None  # kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return children


def process_tree(root_pid: int, proc: str = "/proc") -> list[int]:
    """``root_pid`` followed by all its descendants (breadth first).

    Empty if the root is gone; descendants that vanish during the walk are skipped.
    """
    if not os.path.isdir(f"{proc}/{root_pid}"):
        return []

    tree = [root_pid]
    seen = {root_pid}
    via_task = _children_via_task(root_pid, proc)
    if via_task is not None:
        queue = list(via_task)
        while queue:
            pid = queue.pop(0)
            if pid in seen:
                continue
            kids = _children_via_task(pid, proc)
            if kids is None:  # inconsistent kernel view: fall back to the full scan
                break
            if os.path.isdir(f"{proc}/{pid}"):
                seen.add(pid)
                tree.append(pid)
                queue.extend(kids)
        else:
            return tree

    # Fallback: one pass over every process's stat to build a ppid -> children map.
    by_parent: dict[int, list[int]] = {}
    for pid in _all_pids(proc):
        stat = _read_small(f"{proc}/{pid}/stat")
        if stat is None:
            continue
        ppid = _stat_ppid(stat)
        if ppid is not None:
            by_parent.setdefault(ppid, []).append(pid)
    tree = [root_pid]
    seen = {root_pid}
    index = 0
    while index < len(tree):
        for child in sorted(by_parent.get(tree[index], ())):
            if child not in seen:
                seen.add(child)
                tree.append(child)
        index += 1
    return tree

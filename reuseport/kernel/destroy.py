"""Closing a LISTEN socket from outside its process: sock_diag SOCK_DESTROY.

The one write to the kernel's socket tables reuseport makes, and only for a replica being
replaced because it is hung: a hung process would never close its listener itself.
"""

from __future__ import annotations

import os
import socket
import struct

from reuseport.kernel import netlink


def close_listener(port: int, inode: int, attempts: int = 256) -> bool:
    """Close a LISTEN socket from outside its process (sock_diag SOCK_DESTROY, what
    ``ss -K`` sends; needs CAP_NET_ADMIN). True once it is gone.

    The kernel stops routing new connections to it at once, and with
    ``net.ipv4.tcp_migrate_req=1`` moves the connections waiting in its accept queue to the
    rest of its SO_REUSEPORT group (otherwise they are reset).

    The kernel finds the socket by a lookup that, in a SO_REUSEPORT group, picks a member
    by hashing the request's peer address and port, then refuses (ENOENT) unless the pick
    carries the exact cookie asked for. Varying the (fictitious, 0.0.0.0) peer port steers
    the pick; the cookie check makes sure only the named socket is ever closed.
    """
    wanted = [s for s in netlink.dump(port, netlink.TCPF_LISTEN) if s.inode == inode]
    if not wanted:
        return True
    family, sockid = wanted[0].raw_family, wanted[0].sockid
    header = netlink.NLMSGHDR
    with netlink.open_socket() as nl:
        for peer_port in range(1, attempts + 1):
            steered = sockid[:2] + struct.pack(">H", peer_port) + sockid[4:]
            body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0) + steered
            flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
            nl.send(
                header.pack(header.size + len(body), netlink.SOCK_DESTROY, flags, peer_port, 0)
                + body
            )
            data = nl.recv(65536)
            _length, mtype, _flags, _seq, _pid = header.unpack_from(data, 0)
            if mtype != netlink.NLMSG_ERROR:
                continue
            (errno,) = struct.unpack_from("=i", data, header.size)
            if errno == 0:
                return True
            if -errno != netlink.ENOENT:
                raise OSError(-errno, f"cannot close listener {inode}: {os.strerror(-errno)}")
    return not any(s.inode == inode for s in netlink.dump(port, netlink.TCPF_LISTEN))

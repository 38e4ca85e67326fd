"""Whether a listener has SO_REUSEPORT: could a replica's socket bind beside it?

Asked of the socket itself through a duplicate of its owner's fd (pidfd_getfd), or by a
probe bind beside it. Neither ever listens, and both let go at once: the owner's socket is
left exactly as it was.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

from reuseport.kernel import processes
from reuseport.kernel.sockets import Listener

__all__ = ["has_reuseport", "joinable"]

_SYS_PIDFD_GETFD = 438  # one number on every architecture (unified table, Linux >= 5.6)


def joinable(address: str, port: int) -> bool:
    """Could a SO_REUSEPORT socket of ours bind beside it? Bound, never listening, closed.

    Raises OSError when the bind fails for another reason than EADDRINUSE.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def has_reuseport(listener: Listener, euid: int | None = None) -> bool | None:
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
    try:
        return joinable(listener.address, listener.port)
    except OSError:  # not EADDRINUSE: cannot tell
        return None


def _reuseport_via_pidfd(pid: int, inode: int) -> bool | None:
    target = processes.socket_fds(pid).get(inode)
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

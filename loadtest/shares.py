"""Per-replica share of NEW connections: the kernel's SO_REUSEPORT spread (balance is per
connection, a hash of the 4-tuple)."""

from __future__ import annotations

import resource
import socket
from collections import Counter

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(needed, soft), hard), hard))


def connection_shares(port: int, connections: int) -> dict[str, int]:
    """Open ``connections`` connections at once, one request on each, count X-Replica."""
    raise_fd_limit(connections + 256)
    counts: Counter[str] = Counter()
    sockets = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
        for sock in sockets:
            sock.sendall(REQUEST)
        for sock in sockets:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"x-replica:"):
                    counts[line.split(b":", 1)[1].strip().decode()] += 1
    finally:
        for sock in sockets:
            sock.close()
    return dict(counts)

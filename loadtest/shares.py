"""Per-replica share of NEW connections: the kernel's SO_REUSEPORT spread.

Balance is per connection (a hash of the 4-tuple), so the share is counted over many
fresh connections held open together, each asked once who answers (``X-Replica``).
"""

from __future__ import annotations

import resource
import socket
from collections import Counter

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
TIMEOUT_S = 5.0
_HEADROOM = 256  # fds for everything else the process holds (docker client, pipes, ...)


def raise_fd_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE to ``needed`` (capped at the hard limit) if it is lower.

    Children (wrk, nginx, haproxy) inherit it, so 1024 connections fit everywhere.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _replica_of(sock: socket.socket) -> str | None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-replica":
            return value.strip().decode("latin-1")
    return None


def connection_shares(port: int, connections: int) -> dict[str, int]:
    """Open ``connections`` connections to 127.0.0.1:``port`` at once, one GET on each.

    All are connected before any request is sent, so every one is a distinct, concurrently
    open 4-tuple (as with real clients), then each answer's ``X-Replica`` is counted.
    Returns ``{replica: connections}``; raises if any connection got no identified answer,
    since a silently smaller total would misstate the spread.
    """
    raise_fd_limit(connections + _HEADROOM)
    counts: Counter[str] = Counter()
    sockets: list[socket.socket] = []
    failed = 0
    try:
        for _ in range(connections):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S))
        for sock in sockets:
            sock.sendall(REQUEST)
        for sock in sockets:
            try:
                replica = _replica_of(sock)
            except OSError:
                replica = None
            if replica is None:
                failed += 1
            else:
                counts[replica] += 1
    finally:
        for sock in sockets:
            sock.close()
    if failed:
        raise RuntimeError(f"{failed} of {connections} connections to :{port} got no X-Replica")
    return dict(counts)


def max_over_min(per_replica: dict[str, int], replicas: int) -> float | None:
    """Most loaded replica's count over the least loaded one's; a replica that got none
    counts as 0 (then there is no finite ratio: None)."""
    values = list(per_replica.values()) + [0] * max(0, replicas - len(per_replica))
    if not values or min(values) == 0:
        return None
    return round(max(values) / min(values), 2)

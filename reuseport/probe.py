"""Which replicas the kernel shows listening: the only proof of readiness.

A request to the shared port can be answered by any replica, so it never attests a
particular one. Instead each container's process tree is matched against the LISTEN
sockets on the port. Pure reads; no socket is ever held open here.
"""

from __future__ import annotations

from collections.abc import Iterable

from reuseport import kernel
from reuseport.engine.base import Replica


def listening_pids(port: int, replicas: Iterable[Replica]) -> dict[str, int]:
    """container id -> host pid of a process in it that listens on ``port``."""
    found: dict[str, int] = {}
    for replica in replicas:
        if not replica.running:
            continue
        pids = kernel.pids_listening(port, kernel.process_tree(replica.pid))
        if pids:
            found[replica.id] = min(pids)
    return found

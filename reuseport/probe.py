"""Which replicas the kernel shows listening, and what each one's sockets hold.

A request to the shared port can be answered by any replica, so it never attests a
particular one. Instead each container's process tree is matched against the sockets on
the port: its LISTEN sockets (readiness, accept queue, backlog) and the established
connections it has accepted (its share of the service). A LISTEN socket on the port that
no replica holds is *foreign*: with the same uid and SO_REUSEPORT it silently joins the
group and takes a share of the traffic. Pure reads; no socket is ever held open here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reuseport import kernel
from reuseport.engine.base import Replica


@dataclass(frozen=True)
class ReplicaSockets:
    """The sockets on the port that one replica's processes hold."""

    pid: int  # lowest pid holding one of its listeners
    listeners: tuple[int, ...]  # listener inodes
    accept_queue: int  # connections waiting in its listeners' accept queues
    backlog: int  # the most those queues may hold (0 when unknown)
    connections: frozenset[int]  # inodes of established connections it has accepted


@dataclass(frozen=True)
class ForeignListener:
    """A LISTEN socket on the port that no replica of the service holds."""

    inode: int
    address: str
    uid: int
    pid: int | None  # None when its owner is not visible (another pid namespace)
    program: str | None
    container_id: str | None

    def describe(self) -> str:
        who = f"pid {self.pid} ({self.program or '?'})" if self.pid else "an unseen process"
        return f"{who} uid {self.uid} on {self.address}"


@dataclass(frozen=True)
class PortObservation:
    port: int
    replicas: Mapping[str, ReplicaSockets] = field(default_factory=dict)  # container id ->
    foreign: tuple[ForeignListener, ...] = ()
    with_connections: bool = False  # established connections were read

    @property
    def listening(self) -> dict[str, int]:
        """container id -> host pid of a process in it that listens on the port."""
        return {cid: s.pid for cid, s in self.replicas.items() if s.listeners}

    @property
    def connections(self) -> int:
        return sum(len(s.connections) for s in self.replicas.values())

    def share(self, container_id: str) -> float | None:
        """The replica's fraction of the service's accepted connections."""
        sockets = self.replicas.get(container_id)
        total = self.connections
        if sockets is None or not self.with_connections:
            return None
        return round(len(sockets.connections) / total, 3) if total else 0.0


def observe(
    port: int,
    replicas: Iterable[Replica],
    connections: bool = True,
    known_foreign: Mapping[int, ForeignListener] | None = None,
    foreign: bool = True,
) -> PortObservation:
    """Read the port once and attribute its sockets to ``replicas``.

    ``connections=False`` skips the established dump (readiness polling needs only
    listeners). ``known_foreign`` caches owner lookups of foreign listeners, which need a
    scan of every process's fds; pass the previous observation's to stay cheap.
    """
    table = kernel.port_sockets(port, connections=connections)
    owned: dict[str, ReplicaSockets] = {}
    claimed: set[int] = set()
    for replica in replicas:
        if not replica.running:
            continue
        listener_pids: list[int] = []
        listeners: set[int] = set()
        accepted: set[int] = set()
        for pid in kernel.process_tree(replica.pid):
            held = kernel.socket_inodes(pid)
            mine = held & table.listeners.keys()
            if mine:
                listener_pids.append(pid)
                listeners |= mine
            accepted |= held & table.accepted
        if not listeners and not accepted:
            continue
        claimed |= listeners
        queue = sum(table.listeners[i].accept_queue for i in listeners)
        backlog = sum(table.listeners[i].backlog for i in listeners)
        owned[replica.id] = ReplicaSockets(
            min(listener_pids) if listener_pids else 0,
            tuple(sorted(listeners)),
            queue,
            backlog,
            frozenset(accepted),
        )
    strangers = [s for i, s in table.listeners.items() if foreign and i not in claimed]
    return PortObservation(port, owned, _identify(port, strangers, known_foreign), connections)


def _identify(
    port: int,
    strangers: list[kernel.ListenSocket],
    known: Mapping[int, ForeignListener] | None,
) -> tuple[ForeignListener, ...]:
    if not strangers:
        return ()
    known = known or {}
    if all(s.inode in known for s in strangers):
        return tuple(known[s.inode] for s in strangers)
    owners = {listener.inode: listener for listener in kernel.listeners(port)}
    found = []
    for socket_ in strangers:
        owner = owners.get(socket_.inode)
        found.append(
            ForeignListener(
                socket_.inode,
                socket_.address,
                socket_.uid,
                owner.pids[0] if owner and owner.pids else None,
                owner.program if owner else None,
                owner.container_id if owner else None,
            )
        )
    return tuple(found)


def listening_pids(port: int, replicas: Iterable[Replica]) -> dict[str, int]:
    """container id -> host pid of a process in it that listens on ``port``."""
    return observe(port, replicas, connections=False, foreign=False).listening

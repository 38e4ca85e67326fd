"""Which replica holds which socket on the port: the one attributor.

The rule, the only one reuseport uses to decide ownership: **a socket belongs to a replica
iff a process in that replica's process tree holds an fd to it**, the tree rooted at the
host pid the engine reports for the replica's container (:func:`replica_holdings`). A
container's cgroup id never decides ownership (it only describes a stranger, e.g.
"in container 0123456789ab"): a replica's process may sit in a nested cgroup, and a
container of another tool may hold our port.

A request to the shared port can be answered by any replica, so it never attests a
particular one. Instead each replica's process tree is matched against the sockets on the
port: its LISTEN sockets (readiness, accept queue, backlog) and the established
connections it has accepted (its share of the service). A LISTEN socket on the port that
no replica holds is *foreign* (:mod:`.ports` says what it means). Pure reads; no socket is
ever held open here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from reuseport.engine.base import Replica
from reuseport.kernel import processes, sockets
from reuseport.kernel.holdings import Holdings
from reuseport.kernel.ports import Kind, Owner, classify

ProcessTree = Callable[[int], Sequence[int]]  # root pid -> it and its descendants


def replica_holdings(
    replica: Replica,
    held: Callable[[int], Collection[int]],
    tree: ProcessTree = processes.process_tree,
) -> dict[int, set[int]]:
    """pid -> the socket inodes it holds, for every process in ``replica``'s tree.

    ``held(pid)`` names the sockets a process holds (an fd scan, or one already made).
    Empty when the replica does not run.
    """
    if not replica.running:
        return {}
    return {pid: set(held(pid)) for pid in tree(replica.pid)}


def owners(
    listeners: Iterable[sockets.Listener],
    replicas: Iterable[Replica],
    tree: ProcessTree = processes.process_tree,
) -> dict[int, Replica]:
    """inode -> the replica that holds it, of listeners read with their holders
    (:func:`sockets.listeners`); listeners no replica holds are left out."""
    by_pid: dict[int, set[int]] = {}
    for listener in listeners:
        for pid in listener.pids:
            by_pid.setdefault(pid, set()).add(listener.inode)
    found: dict[int, Replica] = {}
    for replica in replicas:
        for inodes in replica_holdings(replica, lambda pid: by_pid.get(pid, ()), tree).values():
            for inode in inodes:
                found.setdefault(inode, replica)
    return found


@dataclass(frozen=True)
class ReplicaSockets:
    """The sockets on the port that one replica's processes hold."""

    pid: int  # lowest pid holding one of its listeners
    listeners: tuple[int, ...]  # listener inodes
    accept_queue: int  # connections waiting in its listeners' accept queues
    backlog: int  # the most those queues may hold (0 when unknown)
    connections: frozenset[int]  # inodes of established connections it has accepted
    holders: tuple[tuple[int, int], ...] = ()  # (listener inode, a pid holding it)


@dataclass(frozen=True)
class ForeignListener:
    """A LISTEN socket on the port that no replica of the service holds."""

    inode: int
    address: str
    uid: int
    pid: int | None  # None when its owner is not visible (another pid namespace)
    program: str | None
    container_id: str | None
    # Its class beside the replicas (ports.classify), where known: "other-uid" or, since
    # SO_REUSEPORT is not read while polling, "foreign"; None while no replica listens.
    kind: Kind | None = None

    @property
    def owner(self) -> Owner:
        return Owner(self.address, self.uid, self.pid, self.program, self.container_id)

    def describe(self) -> str:
        return self.owner.describe()


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
        sockets_ = self.replicas.get(container_id)
        total = self.connections
        if sockets_ is None or not self.with_connections:
            return None
        return round(len(sockets_.connections) / total, 3) if total else 0.0


def observe(
    port: int,
    replicas: Iterable[Replica],
    connections: bool = True,
    known_foreign: Mapping[int, ForeignListener] | None = None,
    foreign: bool = True,
    cache: Holdings | None = None,
) -> PortObservation:
    """Read the port once and attribute its sockets to ``replicas``.

    ``connections=False`` skips the established dump (readiness polling needs only
    listeners). ``known_foreign`` caches owner lookups of foreign listeners, which need a
    scan of every process's fds; pass the previous observation's to stay cheap. ``cache``
    keeps who holds what between reads (a supervisor passes its own, so an idle read walks
    no process tree and skips the established dump); without one every replica is read
    afresh.
    """
    replicas = list(replicas)  # read twice below
    holdings = cache if cache is not None else Holdings()
    # The established dump costs ~3.5 ms whatever the port holds: with a cache, skip it
    # while the port provably has no connection (see Holdings.connections_unchanged).
    opens = sockets.passive_opens() if cache is not None and connections else None
    quiet = holdings.connections_unchanged(opens)
    table = sockets.port_sockets(port, connections=connections and not quiet)
    if connections and not quiet:
        holdings.note_connections(opens, table)
    # Who holds what: read from /proc only for what changed since the cache's last read.
    holdings.update(table, replicas, connections)
    listener_pids: dict[str, list[int]] = {}
    listeners: dict[str, set[int]] = {}
    accepted: dict[str, set[int]] = {}
    for inode, (owner, pid) in holdings.listener_owner.items():
        listener_pids.setdefault(owner, []).append(pid)
        listeners.setdefault(owner, set()).add(inode)
    for inode in table.accepted:
        if inode in holdings.accepted_owner:
            accepted.setdefault(holdings.accepted_owner[inode], set()).add(inode)
    owned: dict[str, ReplicaSockets] = {}
    claimed: set[int] = set()
    for replica in replicas:
        mine = listeners.get(replica.id, set())
        if not mine and replica.id not in accepted:
            continue
        claimed |= mine
        owned[replica.id] = ReplicaSockets(
            min(listener_pids.get(replica.id, [0])),
            tuple(sorted(mine)),
            sum(table.listeners[i].accept_queue for i in mine),
            sum(table.listeners[i].backlog for i in mine),
            frozenset(accepted.get(replica.id, ())),
            tuple((i, holdings.listener_owner[i][1]) for i in sorted(mine)),
        )
    strangers = [s for i, s in table.listeners.items() if foreign and i not in claimed]
    uids = {table.listeners[i].uid for i in claimed}
    replica_uid = uids.pop() if len(uids) == 1 else None
    found = tuple(
        replace(f, kind=classify(f.owner, replica_uid, False, None).kind if claimed else None)
        for f in _identify(port, strangers, known_foreign)
    )
    return PortObservation(port, owned, found, connections)


def _identify(
    port: int,
    strangers: list[sockets.ListenSocket],
    known: Mapping[int, ForeignListener] | None,
) -> tuple[ForeignListener, ...]:
    if not strangers:
        return ()
    known = known or {}
    if all(s.inode in known for s in strangers):
        return tuple(known[s.inode] for s in strangers)
    holders = {listener.inode: listener for listener in sockets.listeners(port)}
    found = []
    for socket_ in strangers:
        holder = holders.get(socket_.inode)
        found.append(
            ForeignListener(
                socket_.inode,
                socket_.address,
                socket_.uid,
                holder.pids[0] if holder and holder.pids else None,
                holder.program if holder else None,
                holder.container_id if holder else None,
            )
        )
    return tuple(found)


def listening_pids(port: int, replicas: Iterable[Replica]) -> dict[str, int]:
    """container id -> host pid of a process in it that listens on ``port``."""
    return observe(port, replicas, connections=False, foreign=False).listening


def port_listeners(
    port: int, replicas: Iterable[Replica]
) -> list[tuple[sockets.Listener, Replica | None]]:
    """Every listener on ``port`` (a scan of every fd table) with the replica holding it."""
    found = sockets.listeners(port)
    held = owners(found, replicas)
    return [(listener, held.get(listener.inode)) for listener in found]

"""Which replica holds which socket on the port, kept from one read of the port to the next.

Attribution (:mod:`.attribution`) needs every replica's process tree and fd tables, which
cost a /proc walk per replica: far more than the one sock_diag dump of the port. What a
scan found stays true while nothing changes, because socket inodes are never reused: a
socket that was a replica's stays its own until it closes (and leaves the dump). So a
replica's tree and fds are read again only when

* it is new to the listing, or its pid changed (it restarted);
* the dump shows a socket on the port that no scan has seen yet: a listener coming up, or
  (on reads with connections) a connection some process accepted. Then replicas are
  scanned until each new socket has its holder, those without a listener first (the one
  coming up is usually the new socket's holder); a socket that no replica holds after all
  were scanned is foreign, and is not looked for again;
* ``REFRESH_S`` passed since the last full scan: a safety net for what the dump cannot
  show (a listener's fd handed to another process, a holder process exiting while a
  sibling keeps the socket).

An idle service therefore costs one dump per read and no /proc access at all. It also
spares the established dump, the costly one (it walks the kernel's whole established hash,
~3.5 ms of CPU whatever the port holds): once a read with connections found none on the
port and nothing queued, the next ones need none as long as the namespace's PassiveOpens
counter stands still, since every new connection, queued or accepted, moves it
(:meth:`Holdings.connections_unchanged`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable

from reuseport.engine.base import Replica
from reuseport.kernel import processes, sockets
from reuseport.kernel.sockets import PortSockets

REFRESH_S = 30.0

ProcessTree = Callable[[int], Collection[int]]  # root pid -> it and its descendants
HeldSockets = Callable[[int], Collection[int]]  # pid -> socket inodes it holds


class Holdings:
    """The holders of the sockets on one port, updated from each dump (see module doc)."""

    def __init__(
        self,
        tree: ProcessTree = processes.process_tree,
        held: HeldSockets = processes.socket_inodes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tree = tree
        self._held = held
        self._clock = clock
        self._reset()
        self._refreshed_at = float("-inf")
        self.scans = 0  # replica scans made (each: a tree walk and its fd tables)
        # PassiveOpens read before the last read with connections that found the port
        # quiet (no connection, nothing queued); None when it was not quiet.
        self._quiet_at: int | None = None

    def still_quiet(self, passive_opens: Callable[[], int | None] = sockets.passive_opens) -> bool:
        """The port has had no connection since the last read with connections: that read
        found none and nothing queued, and ``passive_opens`` (the counter, read now) has
        not moved. The last read alone is not enough: under short requests (a new
        connection each) a read often finds the port empty between two of them."""
        return self._quiet_at is not None and self.connections_unchanged(passive_opens())

    def connections_unchanged(self, passive_opens: int | None) -> bool:
        """Still no connection on the port: the last read with connections found it quiet
        and no connection was established anywhere since (``passive_opens`` unchanged)."""
        return passive_opens is not None and passive_opens == self._quiet_at

    def note_connections(self, passive_opens: int | None, table: PortSockets) -> None:
        """A read with connections was made (``passive_opens`` read before it)."""
        quiet = not table.accepted and not table.unaccepted
        quiet = quiet and not any(s.accept_queue for s in table.listeners.values())
        self._quiet_at = passive_opens if quiet else None

    def _reset(self) -> None:
        self._pids: dict[str, int] = {}  # replica id -> the pid its tree was read from
        self.listener_owner: dict[int, tuple[str, int]] = {}  # inode -> (replica id, pid)
        self.accepted_owner: dict[int, str] = {}  # connection inode -> replica id
        self._seen_listeners: set[int] = set()  # inodes whose holder was looked for
        self._seen_accepted: set[int] = set()

    def update(self, table: PortSockets, replicas: Iterable[Replica], connections: bool) -> None:
        """Bring the holders up to ``table``, a fresh dump of the port (``connections``:
        it includes the established connections)."""
        running = {r.id: r.pid for r in replicas if r.running}
        now = self._clock()
        if now - self._refreshed_at >= REFRESH_S:
            self._refreshed_at = now
            self._reset()
        for gone in [c for c, pid in self._pids.items() if running.get(c) != pid]:
            self._forget(gone)
        listeners = table.listeners.keys()
        accepted = table.accepted if connections else frozenset()
        fresh = [c for c in running if c not in self._pids]
        for container_id in fresh:
            self._scan(container_id, running[container_id], listeners, accepted, connections)
        unknown = (set(listeners) - self._seen_listeners) | (accepted - self._seen_accepted)
        if self._unclaimed(unknown):
            holding = {owner for owner, _ in self.listener_owner.values()}
            rest = [c for c in running if c not in fresh]
            for container_id in sorted(rest, key=lambda c: c in holding):
                if not self._unclaimed(unknown):
                    break
                self._scan(container_id, running[container_id], listeners, accepted, connections)
        # Keep only what the dump still shows (inodes are never reused).
        self.listener_owner = {i: o for i, o in self.listener_owner.items() if i in listeners}
        self._seen_listeners = set(listeners)
        if connections:
            self.accepted_owner = {i: o for i, o in self.accepted_owner.items() if i in accepted}
            self._seen_accepted = set(accepted)

    def _unclaimed(self, inodes: set[int]) -> bool:
        return any(i not in self.listener_owner and i not in self.accepted_owner for i in inodes)

    def _scan(
        self,
        container_id: str,
        root: int,
        listeners: Collection[int],
        accepted: Collection[int],
        connections: bool,
    ) -> None:
        """Read the replica's process tree and fd tables (a listener held by several of its
        processes is credited to the lowest pid). Without ``connections`` the connections
        it was known to hold are kept."""
        self._forget(container_id, connections)
        self._pids[container_id] = root
        self.scans += 1
        for pid in self._tree(root):
            for inode in self._held(pid):
                if inode in listeners:
                    owner, lowest = self.listener_owner.get(inode, (container_id, pid))
                    if owner == container_id:
                        self.listener_owner[inode] = (owner, min(lowest, pid))
                elif inode in accepted:
                    self.accepted_owner.setdefault(inode, container_id)

    def _forget(self, container_id: str, connections: bool = True) -> None:
        self._pids.pop(container_id, None)
        self.listener_owner = {i: o for i, o in self.listener_owner.items() if o[0] != container_id}
        if connections:
            self.accepted_owner = {
                i: o for i, o in self.accepted_owner.items() if o != container_id
            }

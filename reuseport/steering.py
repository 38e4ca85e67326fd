"""Membership of the steering map: which listeners take new connections.

With ``--balance round-robin`` (or ``least-conn``) an SK_REUSEPORT program attached to the
port's reuseport group picks every new connection's listener from a map
(:mod:`reuseport.kernel.steer`). The supervisor decides who is in it, once per pass, from
the judge's verdicts (:func:`reuseport.judge.out_of_steering`): a ready replica that is not
suspect. Starting, awaiting-health, draining, suspect and failing replicas are out, and a
listener that is not one of ours (a foreign one of the same uid) is never in, so it gets
nothing. An empty map leaves the choice to the kernel's hash: no connection is stranded.

Where the kernel does not allow it (no CAP_SYS_ADMIN / CAP_BPF, an old kernel), the
service runs on the kernel's hash and says so once. ``--balance hash`` turns it off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from reuseport import judge
from reuseport.engine.base import Replica
from reuseport.errors import ReuseportError
from reuseport.judge import Verdict
from reuseport.kernel import sockets
from reuseport.kernel.attribution import PortObservation
from reuseport.records import Records

Wanted = Mapping[int, int]  # listener inode -> a pid holding it
DRAIN_POLL_S = 0.02


class SyncOutcome(Protocol):
    @property
    def members(self) -> frozenset[int]: ...
    @property
    def failed(self) -> dict[int, str]: ...  # inode -> why it could not be admitted


class Steerer(Protocol):
    """What the supervisor needs of the kernel side (kernel.steer.Steering; fakes in tests)."""

    def handle(self) -> dict: ...
    def sync(self, wanted: Wanted) -> SyncOutcome: ...
    def members(self) -> frozenset[int]: ...
    def set_loads(self, loads: Mapping[int, int]) -> None: ...
    def close(self) -> None: ...
    def detach(self) -> None: ...


# policy -> a steerer for it; raises ReuseportError (one line: why not) when unavailable.
Opener = Callable[[str], Steerer]


@dataclass
class SteeringState:
    """The reconciler's steering: the policy it runs and the steerer, or why it runs the
    kernel's hash instead."""

    asked: str = ""  # the spec's policy when it was last opened ("": not yet)
    policy: str = "hash"  # the policy in force
    steerer: Steerer | None = None
    note: str = ""  # why the spec's policy is not in force ("" when it is)

    def close(self, detach: bool) -> None:
        if self.steerer is not None:
            if detach:
                self.steerer.detach()
            else:
                self.steerer.close()
        self.steerer = None


def kernel_opener(
    load_handle: Callable[[], dict | None], save_handle: Callable[[dict], None]
) -> Opener:
    """The real kernel steering, adopting the program and map a previous supervisor of the
    service left attached (their ids are in the store), so a restart leaves no gap."""

    def open_(policy: str) -> Steerer:
        from reuseport.kernel import steer  # bpf(2) through ctypes: loaded only when used

        reason = steer.unavailable_reason()
        if reason is not None:
            raise ReuseportError(reason)
        steerer = _Persisted(steer.Steering(policy, handle=load_handle()), save_handle)
        save_handle(steerer.handle())
        return steerer

    return open_


class _Persisted:
    """A steerer whose handle is saved after every change of its members: the next
    supervisor (or the detached one after `up -d`'s bring-up) adopts exactly that map."""

    def __init__(self, inner: Steerer, save: Callable[[dict], None]) -> None:
        self._inner = inner
        self._save = save

    def handle(self) -> dict:
        return self._inner.handle()

    def sync(self, wanted: Wanted) -> SyncOutcome:
        result = self._inner.sync(wanted)
        self._save(self._inner.handle())
        return result

    def members(self) -> frozenset[int]:
        return self._inner.members()

    def set_loads(self, loads: Mapping[int, int]) -> None:
        self._inner.set_loads(loads)

    def close(self) -> None:
        self._inner.close()

    def detach(self) -> None:
        self._inner.detach()
        self._save({})


@dataclass(frozen=True)
class Membership:
    wanted: dict[int, int]  # listener inode -> holder pid: the map's members after this pass
    out: dict[str, str]  # container id -> why it is not in the map ("" = it is)


def membership(
    replicas: Iterable[Replica],
    verdicts: Mapping[str, Verdict],
    records: Records,
    observation: PortObservation,
    now: float,
) -> Membership:
    """Who belongs in the map this pass. Pure: the judge's verdicts, the records (draining,
    the accept-queue stall) and the kernel's view of who holds which listener."""
    wanted: dict[int, int] = {}
    out: dict[str, str] = {}
    for replica in replicas:
        verdict = verdicts.get(replica.id)
        record = records.get(replica.id)
        if verdict is None or record is None:
            continue
        why = "draining" if record.draining else judge.out_of_steering(verdict, record.stall, now)
        held = observation.replicas.get(replica.id)
        if not why and not (held and held.holders):
            why = "no listener seen yet"
        out[replica.id] = why
        if not why and held:
            wanted.update(held.holders)
    return Membership(wanted, out)


def loads(observation: PortObservation) -> dict[int, int]:
    """least-conn's figures: established connections per listener (a replica's spread
    evenly over its listeners, the kernel cannot tell which listener accepted one)."""
    figures: dict[int, int] = {}
    for held in observation.replicas.values():
        if held.listeners:
            share = len(held.connections) // len(held.listeners)
            figures.update({inode: share for inode in held.listeners})
    return figures


def wait_accepted(port: int, listeners: Collection[int], timeout_s: float) -> bool:
    """Wait until ``listeners`` hold no connection in their accept queues (or are gone):
    a replica out of the map gets no new connection, so once its queue is empty it can be
    stopped without resetting a queued one. False when ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    while True:
        queued = sockets.listening_inodes(port)
        if sum(queued[i][3] for i in listeners if i in queued) == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(DRAIN_POLL_S)

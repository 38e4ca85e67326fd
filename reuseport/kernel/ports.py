"""What a listener on a service's port means for the service: one pure classification.

The kernel puts a LISTEN socket into a SO_REUSEPORT group, and so hands it a share of the
port's connections, only if it set SO_REUSEPORT on the same address and port *and* has
the group's effective uid (:data:`UID_RULE`). So a listener on the port is, to a service:

* ``ours``: a replica of the service holds it (decided by :mod:`.attribution`);
* ``other-uid``: another uid than the replicas' (ours or not): it can never share a group
  with them, so `up` and `rollout` refuse;
* ``foreign-joinable``: a stranger with the replicas' uid and SO_REUSEPORT: it joins (or
  would join) their group and takes a share of the connections;
* ``foreign-blocking``: a stranger holding the port without SO_REUSEPORT: no replica can
  bind beside it;
* ``foreign``: a stranger whose SO_REUSEPORT could not be told.

`up` refuses every kind but ``ours``. :class:`Owner` is the one description of a
listener's holder, used by every message that names one. Nothing here reads the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reuseport.kernel.sockets import Listener

__all__ = ["UID_RULE", "Kind", "ListenerClass", "Owner", "classify"]

UID_RULE = "SO_REUSEPORT only groups sockets of one effective uid"

Kind = Literal["ours", "other-uid", "foreign-joinable", "foreign-blocking", "foreign"]


@dataclass(frozen=True)
class Owner:
    """Who holds a listener: the first process holding its fd, as far as it is visible."""

    address: str
    uid: int  # the socket's owner uid
    pid: int | None = None  # None when no holder is visible (another pid namespace, not root)
    program: str | None = None
    container_id: str | None = None  # describes the holder; never decides ownership

    @classmethod
    def of(cls, listener: Listener) -> Owner:
        pid = listener.pids[0] if listener.pids else None
        return cls(listener.address, listener.uid, pid, listener.program, listener.container_id)

    def describe(self) -> str:
        """``pid 7 (nginx) in container 0123456789ab on 0.0.0.0 as uid 0``."""
        if self.pid is None:
            return f"a socket on {self.address} as uid {self.uid} (owner process not visible)"
        where = f" in container {self.container_id[:12]}" if self.container_id else ""
        return f"pid {self.pid} ({self.program or '?'}){where} on {self.address} as uid {self.uid}"


@dataclass(frozen=True)
class ListenerClass:
    kind: Kind
    ours: bool  # a replica of the service holds it (also for kind "other-uid")
    owner: Owner

    @property
    def refused(self) -> bool:
        """Would `up` refuse the port because of it?"""
        return self.kind != "ours"


def classify(
    owner: Owner, replica_uid: int | None, ours: bool, joinable: bool | None
) -> ListenerClass:
    """Classify one listener on the port of a service whose replicas run as ``replica_uid``.

    ``ours``: a replica of the service holds it. ``joinable``: it has SO_REUSEPORT (None:
    unknown; ignored for ours). ``replica_uid`` None: not known, so no uid verdict.
    """
    if replica_uid is not None and owner.uid != replica_uid:
        return ListenerClass("other-uid", ours, owner)
    if ours:
        return ListenerClass("ours", True, owner)
    if joinable is None:
        return ListenerClass("foreign", False, owner)
    return ListenerClass("foreign-joinable" if joinable else "foreign-blocking", False, owner)

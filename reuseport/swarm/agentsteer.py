"""Steering on a Swarm node: the node agent keeps each steered port's map.

As the local supervisor does (:mod:`reuseport.steering`), per port whose tasks ask for a
balance other than ``hash``: one kernel steerer, whose members are the tasks that listen
and are neither suspect (accept queue unmoved for ``judge.SUSPECT_AFTER_S``) nor being
ended. A listener that is not one of the port's tasks is never a member, so it gets no new
connection. Where steering is unavailable the port runs on the kernel's hash, and the
agent says why once.

The maps are not saved anywhere: a restarted agent creates new ones, and the first sync
attaches its program in place of the old one (``kernel.steer``: EBUSY), which frees the
old program and map; the next pass admits the members. Until then the old program goes on
steering with its old members, so no connection is stranded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from reuseport.errors import ReuseportError
from reuseport.steering import Opener, Steerer


@dataclass(frozen=True)
class PortPlan:
    """What one port's map should hold after this pass."""

    policy: str  # what its tasks ask for
    wanted: Mapping[int, int]  # listener inode -> a pid holding it
    loads: Mapping[int, int] | None = None  # least-conn: connections per listener


class NodeSteering:
    """The steered ports of one node (one steerer per port)."""

    def __init__(self, open_steerer: Opener, say: Callable[[str], None]) -> None:
        self._open = open_steerer
        self._say = say
        self._said: set[str] = set()
        self._steerers: dict[int, tuple[str, Steerer]] = {}
        self.notes: dict[int, str] = {}  # port -> why it runs on the hash it did not ask for

    def policy(self, port: int) -> str:
        """The balance in force on ``port``."""
        found = self._steerers.get(port)
        return found[0] if found else "hash"

    def members(self, port: int) -> frozenset[int]:
        found = self._steerers.get(port)
        return found[1].members() if found else frozenset()

    def apply(self, plans: Mapping[int, PortPlan]) -> None:
        """Make every port's map hold its plan's members; ports without a plan (no task of
        ours here any more) or asking for the hash lose their steering."""
        for port in list(self._steerers):
            plan = plans.get(port)
            if plan is None or plan.policy != self._steerers[port][0]:
                self._steerers.pop(port)[1].detach()
        for port, plan in plans.items():
            if plan.policy == "hash":
                self.notes.pop(port, None)
                continue
            steerer = self._steerer(port, plan.policy)
            if steerer is None:
                continue
            if plan.loads is not None:
                steerer.set_loads(plan.loads)
            if set(plan.wanted) == steerer.members():
                continue
            try:
                result = steerer.sync(plan.wanted)
            except ReuseportError as exc:
                self._say_once(f"steering port {port}: {exc}")
                continue
            for inode, why in result.failed.items():
                if "taking it over" not in why:  # an earlier agent's map: the next pass admits
                    self._say_once(f"steering port {port}: cannot admit listener {inode}: {why}")
        self.notes = {port: why for port, why in self.notes.items() if port in plans}

    def close(self) -> None:
        """The agent exits: close our fds and leave the programs attached with their
        members (the next agent takes them over)."""
        for _policy, steerer in self._steerers.values():
            steerer.close()
        self._steerers.clear()

    def _steerer(self, port: int, policy: str) -> Steerer | None:
        found = self._steerers.get(port)
        if found is not None:
            return found[1]
        if port in self.notes:  # unavailable: said once, not retried every pass
            return None
        try:
            steerer = self._open(policy)
        except ReuseportError as exc:
            self.notes[port] = str(exc)
            self._say_once(
                f"port {port}: {policy} balancing is not available on this node ({exc}); "
                "new connections are spread by the kernel's hash"
            )
            return None
        self._steerers[port] = (policy, steerer)
        return steerer

    def _say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._say(message)

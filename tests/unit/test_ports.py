"""The one classification of a port's listeners, the one attributor, and their users
(`up`'s preflight, `rollout`'s uid check) on replayed listeners: no Docker needed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from reuseport import preflight, rollout
from reuseport.engine.base import Replica
from reuseport.errors import PortBusy, UidMismatch
from reuseport.kernel import attribution, options, sockets
from reuseport.kernel.attribution import ForeignListener
from reuseport.kernel.ports import UID_RULE, Owner, classify
from reuseport.kernel.sockets import Listener
from reuseport.spec import ServiceSpec

PORT = 18080
CID = "a" * 64
ME = os.getpid()  # a real process tree: this test process is "the replica"

SEEN = Owner("0.0.0.0", 0, 7, "nginx")


def listener(
    inode: int = 1, pid: int | None = ME, uid: int = 0, cid: str | None = None
) -> Listener:
    pids = (pid,) if pid else ()
    return Listener(inode, "0.0.0.0", PORT, "ipv4", uid, 0, pids, "python3", cid)


def replica(pid: int = ME, state: str = "running", cid: str = CID) -> Replica:
    return Replica(cid, "web.1", "web", 1, state, pid, "img", "", "", 0, 0)


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("uid", "replica_uid", "ours", "joinable", "kind"),
    [
        (0, 0, True, None, "ours"),
        (0, 0, True, False, "ours"),  # SO_REUSEPORT of a replica's socket is not asked
        (0, None, True, None, "ours"),
        (0, 1000, True, None, "other-uid"),  # our replicas, but new ones could not join them
        (0, 1000, False, True, "other-uid"),
        (0, 0, False, True, "foreign-joinable"),
        (0, 0, False, False, "foreign-blocking"),
        (0, 0, False, None, "foreign"),
        (1000, None, False, True, "foreign-joinable"),  # no replica uid: no uid verdict
    ],
)
def test_classify(
    uid: int, replica_uid: int | None, ours: bool, joinable: bool | None, kind: str
) -> None:
    verdict = classify(Owner("0.0.0.0", uid, 7, "nginx"), replica_uid, ours, joinable)
    assert verdict.kind == kind and verdict.ours is ours
    assert verdict.refused is (kind != "ours")


def test_owner_describes_a_holder_one_way() -> None:
    assert SEEN.describe() == "pid 7 (nginx) on 0.0.0.0 as uid 0"
    boxed = Owner("::", 1000, 7, None, CID)
    assert boxed.describe() == f"pid 7 (?) in container {CID[:12]} on :: as uid 1000"
    unseen = Owner("127.0.0.1", 0)
    assert unseen.describe() == "a socket on 127.0.0.1 as uid 0 (owner process not visible)"
    assert Owner.of(listener(pid=None)) == Owner("0.0.0.0", 0, None, "python3", None)
    foreign = ForeignListener(9, "0.0.0.0", 0, 7, "nginx", None)
    assert foreign.describe() == SEEN.describe()


# --------------------------------------------------------------------------- attribution


def test_owners_follow_process_trees_not_cgroups() -> None:
    trees = {100: [100, 101], 200: [200]}
    found = [
        listener(1, pid=101, cid=None),  # a child of replica 100, in no container
        listener(2, pid=300, cid=CID),  # in replica 100's container, but not in its tree
        listener(3, pid=200),
    ]
    first, second = replica(100), replica(200, cid="b" * 64)
    held = attribution.owners(found, [first, second], lambda pid: trees.get(pid, []))
    assert held == {1: first, 3: second}


def test_a_replica_that_does_not_run_holds_nothing() -> None:
    gone = replica(ME, state="exited")
    assert attribution.owners([listener()], [gone], lambda pid: [pid]) == {}


# --------------------------------------------------------------------------- users


@dataclass
class Engine:
    uid: int = 0
    replica_list: list[Replica] = field(default_factory=list)

    def image_user(self, ref: str) -> str:
        return ""

    def resolve_user(self, ref: str, user: str) -> int | None:
        return self.uid

    def replicas(self, service: str | None = None) -> list[Replica]:
        return self.replica_list


SPEC = ServiceSpec(name="web", image="img:1", replicas=2, port=PORT)


@pytest.fixture
def found(monkeypatch: pytest.MonkeyPatch) -> list[Listener]:
    """The port's listeners as `sockets.listeners` reports them."""
    listed: list[Listener] = []
    monkeypatch.setattr(sockets, "listeners", lambda port: list(listed))
    return listed


def test_up_accepts_its_own_replicas(found: list[Listener]) -> None:
    found.append(listener())
    preflight.check_port(Engine(), SPEC, [replica()])  # no refusal


def test_up_refuses_its_replicas_under_another_uid(found: list[Listener]) -> None:
    found.append(listener(uid=0))
    with pytest.raises(UidMismatch, match=f"listen on port {PORT} as uid 0 but new ones would "):
        preflight.check_port(Engine(uid=1000), SPEC, [replica()])


def test_up_refuses_a_stranger_under_another_uid(found: list[Listener]) -> None:
    found.append(listener(uid=0, pid=7))
    with pytest.raises(UidMismatch) as refused:
        preflight.check_port(Engine(uid=1000), SPEC, [replica()])
    assert "as uid 0 but replicas would run as uid 1000" in refused.value.message
    assert UID_RULE in refused.value.message


@pytest.mark.parametrize(
    ("joinable", "fragment"),
    [(True, "would take a share of its connections"), (False, "not in a SO_REUSEPORT group")],
)
def test_up_refuses_a_stranger_with_its_uid(
    found: list[Listener], monkeypatch: pytest.MonkeyPatch, joinable: bool, fragment: str
) -> None:
    # In the replica's container (cgroup) but not in its process tree: a stranger.
    found.append(listener(pid=7, cid=CID))
    monkeypatch.setattr(options, "joinable", lambda address, port: joinable)
    with pytest.raises(PortBusy) as refused:
        preflight.check_port(Engine(), SPEC, [replica()])
    assert "pid 7 (python3)" in refused.value.message and fragment in refused.value.message


def test_rollout_refuses_a_template_under_another_uid_than_the_replicas(
    found: list[Listener],
) -> None:
    found += [listener(uid=0), listener(2, pid=7, uid=1000)]  # a stranger's uid is not asked
    target = ServiceSpec(name="web", image="img:2", replicas=2, port=PORT)
    rollout._refuse_other_uid(Engine(uid=0, replica_list=[replica()]), SPEC, target)
    with pytest.raises(UidMismatch, match="img:2 would run as uid 1000 .* listen as uid 0"):
        rollout._refuse_other_uid(Engine(uid=1000, replica_list=[replica()]), SPEC, target)

"""reuseport.kernel.steer against the real kernel: SO_REUSEPORT listeners of this process and
of a child process on loopback, steered by the eBPF program (needs root, no containers)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from reuseport.errors import SteeringUnavailable
from reuseport.kernel import bpf, steer
from reuseport.kernel import sockets as kernel_sockets
from reuseport.kernel.steer import Steering

pytestmark = pytest.mark.timeout(60)

if steer.unavailable_reason() is not None:  # pragma: no cover - root and bpf(2) in CI
    pytest.fail(f"steering tests need bpf(2) here: {steer.unavailable_reason()}")

_CHILD = """
import socket, sys, time
s = socket.socket(socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1024)
import os
print(os.fstat(s.fileno()).st_ino, flush=True)
time.sleep(60)
"""


@dataclass
class Group:
    """One SO_REUSEPORT group on a loopback port: listeners of this process (accepted from
    here) and of child processes (counted by their accept queue: they never accept)."""

    host: str
    port: int = 0
    local: list[socket.socket] = field(default_factory=list)
    children: dict[int, subprocess.Popen[str]] = field(default_factory=dict)  # inode -> child
    steerings: list[Steering] = field(default_factory=list)

    def listen(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family)
        self.local.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return os.fstat(sock.fileno()).st_ino

    def listen_in_child(self) -> int:
        assert self.port, "a local listener first: it picks the port"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        inode = int(child.stdout.readline())
        self.children[inode] = child
        return inode

    def holders(self, inodes: list[int]) -> dict[int, int]:
        """``wanted`` for sync: each inode -> the pid holding it."""
        return {i: self.children[i].pid if i in self.children else os.getpid() for i in inodes}

    def steering(self, policy: str = "round-robin", handle: dict | None = None) -> Steering:
        self.steerings.append(Steering(policy, handle))
        return self.steerings[-1]

    def _queued(self) -> dict[int, int]:
        found = kernel_sockets.port_sockets(self.port, connections=False).listeners
        return {i: found[i].accept_queue for i in self.children if i in found}

    def connect(self, count: int) -> dict[int, int]:
        """Open ``count`` connections one after another; new connections per listener inode."""
        before = self._queued()
        got = {os.fstat(s.fileno()).st_ino: 0 for s in self.local if s.fileno() >= 0}
        for _ in range(count):
            with socket.create_connection((self.host, self.port), timeout=2):
                for sock in self.local:
                    if sock.fileno() >= 0:
                        got[os.fstat(sock.fileno()).st_ino] += self._accept_all(sock)
        for inode, queued in self._queued().items():
            got[inode] = queued - before.get(inode, 0)
        return got

    @staticmethod
    def _accept_all(sock: socket.socket) -> int:
        accepted = 0
        while True:
            try:
                conn, _peer = sock.accept()
            except BlockingIOError:
                return accepted
            conn.close()
            accepted += 1

    def close(self) -> None:
        for steering in self.steerings:
            steering.close()
        for sock in self.local:
            sock.close()
        for child in self.children.values():
            child.kill()
            child.wait(timeout=5)


@pytest.fixture
def group() -> Iterator[Group]:
    made = Group("127.0.0.1")
    try:
        yield made
    finally:
        made.close()


def _four(group: Group) -> list[int]:
    """Three listeners here and one in a child process."""
    inodes = [group.listen() for _ in range(3)]
    return [*inodes, group.listen_in_child()]


def test_round_robin_splits_exactly_and_a_foreign_listener_gets_nothing(group: Group) -> None:
    members = _four(group)
    foreign = group.listen()  # in the group, never admitted
    steering = group.steering()
    result = steering.sync(group.holders(members))
    assert result.members == frozenset(members) and set(result.admitted) == set(members)
    got = group.connect(400)
    print("round-robin 400 over 4 (+1 foreign):", got)
    assert all(95 <= got[m] <= 105 for m in members) and got[foreign] == 0
    got = group.connect(200)
    assert got[foreign] == 0 and sum(got[m] for m in members) == 200


def test_evicted_listener_gets_nothing_and_an_empty_map_falls_back(group: Group) -> None:
    members = _four(group)
    steering = group.steering()
    steering.sync(group.holders(members))
    result = steering.sync(group.holders(members[1:]))
    assert result.evicted == (members[0],) and result.members == frozenset(members[1:])
    got = group.connect(300)
    print("after evicting one:", got)
    assert got[members[0]] == 0 and all(got[m] == 100 for m in members[1:])
    assert steering.sync({}).members == frozenset()
    assert sum(group.connect(50).values()) == 50  # the kernel's hash: still served


def test_adoption_by_handle_keeps_members_and_can_evict(group: Group) -> None:
    members = _four(group)
    foreign = group.listen()
    first = group.steering()
    first.sync(group.holders(members))
    handle = first.handle()
    first.close()  # the old supervisor is gone; the group keeps the program
    assert group.connect(40)[foreign] == 0
    second = group.steering(handle=handle)
    assert group.connect(40)[foreign] == 0
    assert second.handle()["families"]["4"]["prog"] == handle["families"]["4"]["prog"]
    assert second.members() == frozenset(members)
    result = second.sync(group.holders(members[:3]))
    assert result.admitted == () and result.evicted == (members[3],)
    got = group.connect(90)
    assert got[members[3]] == got[foreign] == 0 and all(got[m] == 30 for m in members[:3])


def test_adoption_of_unknown_ids_starts_fresh(group: Group) -> None:
    members = [group.listen(), group.listen()]
    stale = {"policy": "round-robin", "families": {"4": {"prog": 2**31 - 1, "socks": 1}}}
    steering = group.steering(handle=stale)
    assert steering.members() == frozenset()
    assert set(steering.sync(group.holders(members)).admitted) == set(members)


def test_nothing_is_left_once_the_group_and_our_fds_are_closed(group: Group) -> None:
    members = [group.listen(), group.listen()]
    steering = group.steering()
    steering.sync(group.holders(members))
    prog_id = steering.handle()["families"]["4"]["prog"]
    steering.close()
    fd = bpf.prog_get_fd_by_id(prog_id)  # still attached to the group: alive
    os.close(fd)
    for sock in group.local:
        sock.close()
    assert _wait_gone(prog_id)  # the kernel frees the group and program after an RCU grace


def _wait_gone(prog_id: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.close(bpf.prog_get_fd_by_id(prog_id))
        except SteeringUnavailable as exc:
            return exc.errno == errno.ENOENT
        time.sleep(0.02)
    return False


def test_closed_member_is_dropped_and_unheld_inode_fails(group: Group) -> None:
    members = [group.listen(), group.listen(), group.listen()]
    steering = group.steering()
    steering.sync(group.holders(members))
    group.local[0].close()  # the kernel takes it out of the sockarray by itself
    result = steering.sync(group.holders(members[1:]))
    assert result.members == frozenset(members[1:]) and result.evicted == (members[0],)
    assert all(n == 50 for n in group.connect(100).values())
    result = steering.sync({**group.holders(members[1:]), members[0]: os.getpid()})
    assert list(result.failed) == [members[0]] and "holds no socket" in result.failed[members[0]]
    assert result.members == frozenset(members[1:])


def test_detach_empties_the_maps_and_frees_the_sockets(group: Group) -> None:
    members = [group.listen(), group.listen()]
    first = group.steering()
    first.sync(group.holders(members))
    first.detach()
    assert sum(group.connect(20).values()) == 20
    again = group.steering()  # the sockets may join a new map (no EBUSY)
    assert set(again.sync(group.holders(members)).admitted) == set(members)


def test_a_socket_in_another_map_is_reported_not_raised(group: Group) -> None:
    members = [group.listen()]
    group.steering().sync(group.holders(members))
    result = group.steering().sync(group.holders(members))  # no handle: a second map
    assert "another steering map" in result.failed[members[0]]


def test_least_conn_fills_the_least_loaded_first(group: Group) -> None:
    members = _four(group)[:3]  # here only: set_loads knows every member
    steering = group.steering("least-conn")
    steering.sync(group.holders(members))
    steering.set_loads({members[0]: 20, members[1]: 0, members[2]: 10})
    got = group.connect(30)
    print("least-conn 30 with loads 20/0/10:", got)
    assert [got[m] for m in members] == [0, 20, 10]
    steering.set_loads({m: 0 for m in members})
    assert [group.connect(30)[m] for m in members] == [10, 10, 10]


def test_switching_policy_reuses_the_sockets(group: Group) -> None:
    members = [group.listen(), group.listen()]
    first = group.steering()
    first.sync(group.holders(members))
    second = group.steering("least-conn", handle=first.handle())
    assert set(second.sync(group.holders(members)).admitted) == set(members)
    assert [group.connect(20)[m] for m in members] == [10, 10]


def test_verifier_log_is_in_the_error() -> None:
    broken = bpf.assemble([bpf.ldx_mem(bpf.W, bpf.R0, bpf.R2, 0), bpf.exit_insn()])
    with pytest.raises(SteeringUnavailable, match=r"loading bpf program rp_broken.*verifier:.*R2"):
        bpf.prog_load(bpf.PROG_SK_REUSEPORT, broken, "rp_broken")


def test_ipv6_listeners_steer_too() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"IPv6 loopback (::1) unavailable here: {exc}")
    group = Group("::1")
    try:
        members = [group.listen(), group.listen()]
        steering = group.steering()
        assert steering.sync(group.holders(members)).members == frozenset(members)
        assert set(steering.handle()["families"]) == {"6"}
        assert [group.connect(100)[m] for m in members] == [50, 50]
    finally:
        group.close()


def test_queued_connections_of_a_closing_member_move_to_members(group: Group) -> None:
    """SELECT_OR_MIGRATE: the program places a dying listener's queue, whatever the sysctl."""
    members = [group.listen(), group.listen(), group.listen_in_child()]
    foreign = group.listen()
    group.steering().sync(group.holders(members))
    got = group.connect(30)
    assert got[members[2]] == 10 and got[foreign] == 0
    child = group.children.pop(members[2])
    child.kill()  # its 10 queued connections are not reset...
    child.wait(timeout=5)
    moved = {os.fstat(s.fileno()).st_ino: Group._accept_all(s) for s in group.local}
    # ...but moved to members: the dead member's turns go to the next position, never to
    # the kernel's hash (which could pick the foreign listener)
    assert moved == {members[0]: 4 + 3, members[1]: 3, foreign: 0}
    got = group.connect(30)  # before any sync: still members only
    assert got[foreign] == 0 and got[members[0]] + got[members[1]] == 30

"""The holdings cache: /proc is read only for what changed since the last read."""

from __future__ import annotations

import os
from collections.abc import Collection

import pytest

from reuseport.engine.base import Replica
from reuseport.engine.inspect import listing_key, same_process
from reuseport.kernel import attribution
from reuseport.kernel.holdings import REFRESH_S, Holdings
from reuseport.kernel.sockets import ListenSocket, PortSockets


class FakeProc:
    """Process trees and fd tables; counts what is read."""

    def __init__(self) -> None:
        self.children: dict[int, list[int]] = {}
        self.fds: dict[int, set[int]] = {}
        self.walks = 0
        self.now = 0.0

    def tree(self, root: int) -> Collection[int]:
        self.walks += 1
        return [root, *self.children.get(root, [])] if root in self.fds else []

    def held(self, pid: int) -> Collection[int]:
        return self.fds.get(pid, set())

    def holdings(self) -> Holdings:
        return Holdings(self.tree, self.held, clock=lambda: self.now)


def replica(n: int, pid: int, state: str = "running") -> Replica:
    return Replica(f"c{n}", f"web.{n}", "web", n, state, pid, "img", "", "", 0, 0)


def table(listeners: Collection[int], accepted: Collection[int] = ()) -> PortSockets:
    found = {i: ListenSocket(i, "0.0.0.0", "ipv4", 0, 0, 128) for i in listeners}
    return PortSockets(found, frozenset(accepted), 0)


def test_an_unchanged_port_reads_no_process_again() -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 200: {2}, 300: set()}
    cache = proc.holdings()
    replicas = [replica(1, 100), replica(2, 200), replica(3, 300)]
    cache.update(table({1, 2}), replicas, connections=False)
    assert cache.scans == 3
    assert {i: o for i, (o, _) in cache.listener_owner.items()} == {1: "c1", 2: "c2"}
    for _ in range(5):
        cache.update(table({1, 2}), replicas, connections=True)
    assert cache.scans == 3  # nothing new on the port, nobody restarted


def test_a_new_listener_is_looked_for_among_replicas_without_one_first() -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 200: {2}, 300: set()}
    cache = proc.holdings()
    replicas = [replica(1, 100), replica(2, 200), replica(3, 300)]
    cache.update(table({1, 2}), replicas, connections=False)
    proc.fds[300] = {3}  # replica 3 comes up
    cache.update(table({1, 2, 3}), replicas, connections=False)
    assert cache.scans == 4  # only replica 3 was read again
    assert cache.listener_owner[3] == ("c3", 300)


def test_a_foreign_listener_is_looked_for_once() -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 200: {2}}
    cache = proc.holdings()
    replicas = [replica(1, 100), replica(2, 200)]
    cache.update(table({1, 2}), replicas, connections=False)
    cache.update(table({1, 2, 9}), replicas, connections=False)
    assert cache.scans == 4 and 9 not in cache.listener_owner
    cache.update(table({1, 2, 9}), replicas, connections=False)
    assert cache.scans == 4


def test_a_restart_or_a_new_replica_is_read_and_a_gone_one_forgotten() -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 200: {2}, 201: {4}}
    cache = proc.holdings()
    cache.update(table({1, 2}), [replica(1, 100), replica(2, 200)], connections=False)
    # replica 2 restarted (new pid, new listener), replica 1 exited
    cache.update(table({4}), [replica(1, 0, "exited"), replica(2, 201)], connections=False)
    assert cache.listener_owner == {4: ("c2", 201)}
    assert cache.scans == 3


def test_connections_are_attributed_once_and_kept_by_listener_reads() -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 200: {2}}
    cache = proc.holdings()
    replicas = [replica(1, 100), replica(2, 200)]
    cache.update(table({1, 2}), replicas, connections=True)
    proc.fds[200] |= {50, 51}
    cache.update(table({1, 2}, {50, 51}), replicas, connections=True)
    assert cache.accepted_owner == {50: "c2", 51: "c2"}
    scans = cache.scans
    cache.update(table({1, 2}, {50, 51}), replicas, connections=True)
    proc.fds[100] |= {5}  # a new listener of replica 1: it is read, without connections
    cache.update(table({1, 2, 5}), replicas, connections=False)
    cache.update(table({1, 2, 5}, {50, 51}), replicas, connections=True)
    assert cache.accepted_owner == {50: "c2", 51: "c2"}
    assert cache.scans == scans + 1
    cache.update(table({1, 2, 5}, {51}), replicas, connections=True)  # 50 closed
    assert cache.accepted_owner == {51: "c2"}


def test_everything_is_read_again_after_the_refresh_period() -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 200: {2}}
    cache = proc.holdings()
    replicas = [replica(1, 100), replica(2, 200)]
    cache.update(table({1, 2}), replicas, connections=False)
    proc.now += REFRESH_S
    cache.update(table({1, 2}), replicas, connections=False)
    assert cache.scans == 4


def test_observe_with_a_cache_sees_what_a_fresh_read_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = FakeProc()
    proc.fds = {100: {1}, 101: {1, 7}, 200: {2}}
    proc.children = {100: [101]}
    cache = proc.holdings()
    replicas = [replica(1, 100), replica(2, 200)]
    dump = table({1, 2, 9}, {7})
    monkeypatch.setattr(attribution.sockets, "port_sockets", lambda port, connections: dump)
    monkeypatch.setattr(attribution, "_identify", lambda port, strangers, known: ())
    cached = attribution.observe(80, replicas, cache=cache)
    again = attribution.observe(80, replicas, cache=cache)
    monkeypatch.setattr(attribution, "Holdings", proc.holdings)
    fresh = attribution.observe(80, replicas)
    assert cached == again == fresh
    assert cached.replicas["c1"] == attribution.ReplicaSockets(
        100, (1,), 0, 128, frozenset({7}), holders=((1, 100),)
    )
    assert cached.listening == {"c1": 100, "c2": 200}


def test_listing_key_ignores_the_age_in_status() -> None:
    young = {"State": "running", "Status": "Up 5 seconds"}
    older = {"State": "running", "Status": "Up About a minute"}
    paused = {"State": "paused", "Status": "Up 2 minutes (Paused)"}
    assert listing_key(young) == listing_key(older) != listing_key(paused)
    assert listing_key({"State": "exited", "Status": "Exited (0) 3 seconds ago"}) != listing_key(
        {"State": "exited", "Status": "Exited (137) 3 seconds ago"}
    )


def test_same_process_needs_the_running_pid_alive() -> None:
    assert same_process({"State": {"Running": True, "Pid": os.getpid()}})
    assert not same_process({"State": {"Running": True, "Pid": 0}})
    assert not same_process({"State": {"Running": True, "Pid": 2**22 + 7}})  # no such pid
    assert same_process({"State": {"Running": False, "Pid": 0}})


def test_the_established_dump_is_spared_while_no_connection_was_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = FakeProc()
    proc.fds = {100: {1}}
    replicas = [replica(1, 100)]
    counter = {"opens": 7}
    asked: list[bool] = []
    port = {"table": table({1})}

    def dump(port_: int, connections: bool) -> PortSockets:
        asked.append(connections)
        return port["table"] if connections else table(port["table"].listeners)

    monkeypatch.setattr(attribution.sockets, "port_sockets", dump)
    monkeypatch.setattr(attribution.sockets, "passive_opens", lambda: counter["opens"])
    cache = proc.holdings()
    for _ in range(3):
        seen = attribution.observe(80, replicas, cache=cache)
        assert seen.with_connections and seen.connections == 0
    assert asked == [True, False, False]  # quiet, and nothing was opened since
    counter["opens"] += 1  # a connection somewhere: read them again
    proc.fds[100] |= {40}
    port["table"] = table({1}, {40})
    assert attribution.observe(80, replicas, cache=cache).connections == 1
    assert attribution.observe(80, replicas, cache=cache).connections == 1
    assert asked[3:] == [True, True]  # not quiet: every read with connections dumps them
    attribution.observe(80, replicas, connections=False, cache=cache)
    assert asked[5:] == [False]


def test_quiet_needs_no_connection_nothing_queued_and_a_still_counter() -> None:
    cache = FakeProc().holdings()
    cache.note_connections(5, table({1}))
    assert cache.connections_unchanged(5) and not cache.connections_unchanged(6)
    assert not cache.connections_unchanged(None)
    cache.note_connections(5, PortSockets({}, frozenset(), 1))  # one waits to be accepted
    assert not cache.connections_unchanged(5)
    queued = {1: ListenSocket(1, "0.0.0.0", "ipv4", 0, 2, 128)}
    cache.note_connections(5, PortSockets(queued, frozenset(), 0))
    assert not cache.connections_unchanged(5)
    cache.note_connections(None, table({1}))
    assert not cache.connections_unchanged(None)


def test_still_quiet_rereads_the_counter() -> None:
    # A read between two short requests finds the port empty; the counter tells it apart.
    cache = FakeProc().holdings()
    opens = {"now": 5}
    assert not cache.still_quiet(lambda: opens["now"])  # no read with connections yet
    cache.note_connections(5, table({1}))
    assert cache.still_quiet(lambda: opens["now"])
    opens["now"] = 6  # a connection was opened (and maybe closed) since that read
    assert not cache.still_quiet(lambda: opens["now"])

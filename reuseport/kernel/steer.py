"""eBPF steering of a service's SO_REUSEPORT group: the supervisor picks the members.

Per address family (IPv4 and IPv6 listeners form separate reuseport groups) one
``BPF_PROG_TYPE_SK_REUSEPORT`` program is attached to the group. It selects a socket from a
``REUSEPORT_SOCKARRAY`` whose members only the supervisor changes, through a state map:

    state (ARRAY, 1 entry): u32 count | u32 pad | u64 counter | u32 order[MAX_MEMBERS]

``order[0:count]`` lists the sockarray slots of the members; the program
(:mod:`reuseport.kernel.steerprog`) picks a position (round-robin: ``counter++ % count``;
least-conn: the least loaded) and selects ``order[position]``. With ``count == 0``, or when
the selection fails (a member closed a moment ago), it returns SK_PASS without a selection
and the kernel's hash decides: a connection is never dropped.

Why an order table instead of keeping the sockarray itself dense: the kernel lets a socket
sit in ONE slot of ONE sockarray (``sk_user_data``, else EBUSY), so a member cannot be
copied into a freed slot. Rewriting the order table moves members without touching sockets
and without a duplicate of their fds. Each change is ordered so that every state a
concurrent reader can see names only sockets still in the map (see ``append``/``remove``).

The program is loaded with ``BPF_SK_REUSEPORT_SELECT_OR_MIGRATE``: when a member closes,
the kernel runs it for each request queued on that listener (``ctx->migrating_sk`` set) and
moves the request to the socket it selects (or, with no selection, to one picked by hash),
whatever ``net.ipv4.tcp_migrate_req`` says. A closing listener is already gone from the
sockarray, so it is never picked again.

Nothing is pinned: the objects live while the group holds the program (or we hold fds), so
the last replica's exit leaves nothing behind. Replica sockets are only ever duplicated for
the few syscalls that admit them, then closed at once.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from reuseport.errors import SteeringUnavailable
from reuseport.kernel import bpf, processes
from reuseport.kernel.steerprog import MAX_MEMBERS, least_conn_pick, pick_and_select

__all__ = ["MAX_MEMBERS", "POLICIES", "Steering", "SyncResult", "unavailable_reason"]

POLICIES = ("round-robin", "least-conn")

SO_ATTACH_REUSEPORT_EBPF = 52
SO_COOKIE = 57
_STATE = struct.Struct(f"<IIQ{MAX_MEMBERS}I")  # count, pad, counter, order[] (at ORDER_AT)
_KEY0 = struct.pack("<I", 0)
_FAMILIES: dict[int, str] = {socket.AF_INET: "4", socket.AF_INET6: "6"}
_PROG_NAMES = {"round-robin": "rp_rr", "least-conn": "rp_lc"}


# --------------------------------------------------------------------------- one family


@dataclass
class _Family:
    """The steering objects of one address family and what we know of their members."""

    policy: str
    prog_fd: int
    socks_fd: int
    state_fd: int
    loads_fd: int  # -1 for round-robin
    order: list[int] = field(default_factory=list)  # sockarray slot by position
    inodes: dict[int, int] = field(default_factory=dict)  # slot -> listener inode (0: unknown)
    cookies: dict[int, int] = field(default_factory=dict)  # slot -> socket cookie

    @classmethod
    def create(cls, policy: str, tag: str) -> _Family:
        fds: list[int] = []
        try:
            fds.append(
                bpf.map_create(bpf.MAP_REUSEPORT_SOCKARRAY, 4, 8, MAX_MEMBERS, f"rp_socks{tag}")
            )
            fds.append(bpf.map_create(bpf.MAP_ARRAY, 4, _STATE.size, 1, f"rp_state{tag}"))
            pick: list[bpf.Line] = []
            if policy == "least-conn":
                fds.append(bpf.map_create(bpf.MAP_ARRAY, 4, 4 * MAX_MEMBERS, 1, f"rp_loads{tag}"))
                pick = least_conn_pick(fds[2])
            insns = pick_and_select(fds[1], fds[0], pick)
            fds.insert(
                0,
                bpf.prog_load(
                    bpf.PROG_SK_REUSEPORT,
                    insns,
                    _PROG_NAMES[policy] + tag,
                    expected_attach_type=bpf.SK_REUSEPORT_SELECT_OR_MIGRATE,
                ),
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls._of(policy, fds)

    @classmethod
    def _of(cls, policy: str, fds: list[int]) -> _Family:
        """From [prog, socks, state] (+ [loads] for least-conn)."""
        return cls(policy, fds[0], fds[1], fds[2], fds[3] if len(fds) > 3 else -1)

    @classmethod
    def adopt(cls, policy: str, tag: str, ids: Mapping[str, Any]) -> _Family | None:
        """Re-open a family's objects by id; None if they are gone or not ours."""
        fds: list[int] = []
        try:
            fds.append(bpf.prog_get_fd_by_id(int(ids["prog"])))
            prog = bpf.prog_info(fds[0])
            names = {"socks": f"rp_socks{tag}", "state": f"rp_state{tag}"}
            if policy == "least-conn":
                names["loads"] = f"rp_loads{tag}"
            if prog.name != _PROG_NAMES[policy] + tag or prog.type != bpf.PROG_SK_REUSEPORT:
                raise LookupError(prog.name)
            for role, name in names.items():
                fds.append(bpf.map_get_fd_by_id(int(ids[role])))
                info = bpf.map_info(fds[-1])
                if info.name != name or info.id not in prog.map_ids:
                    raise LookupError(info.name)
        except (SteeringUnavailable, LookupError, KeyError, TypeError, ValueError):
            for fd in fds:
                os.close(fd)
            return None
        family = cls._of(policy, fds)
        count, _pad, _counter, *order = _STATE.unpack(
            bpf.map_lookup(family.state_fd, _KEY0, _STATE.size) or bytes(_STATE.size)
        )
        saved = ids.get("cookies")
        known = {int(c): int(i) for c, i in saved.items()} if isinstance(saved, dict) else {}
        for slot in order[:count]:
            cookie = family.cookie_at(slot)
            if cookie is not None and slot not in family.inodes:
                family.order.append(slot)
                family.cookies[slot] = cookie
                family.inodes[slot] = known.get(cookie, 0)
        family.write_state()
        return family

    def ids(self) -> dict[str, object]:
        found = {"prog": bpf.prog_info(self.prog_fd).id}
        for role, fd in (
            ("socks", self.socks_fd),
            ("state", self.state_fd),
            ("loads", self.loads_fd),
        ):
            if fd >= 0:
                found[role] = bpf.map_info(fd).id
        cookies = {str(c): self.inodes[s] for s, c in self.cookies.items() if self.inodes[s]}
        return {**found, "cookies": cookies}

    def cookie_at(self, slot: int) -> int | None:
        raw = bpf.map_lookup(self.socks_fd, struct.pack("<I", slot), 8)
        return None if raw is None else int.from_bytes(raw, "little")

    def write_state(self, count: int | None = None) -> None:
        """Write order[] with ``count`` (default: all of it) members in use."""
        slots = self.order + [0] * (MAX_MEMBERS - len(self.order))
        used = len(self.order) if count is None else count
        bpf.map_update(self.state_fd, _KEY0, _STATE.pack(used, 0, 0, *slots))

    def write_loads(self, loads: Mapping[int, int]) -> None:
        if self.loads_fd < 0:
            return
        by_position = [min(loads.get(self.inodes[slot], 0), 0xFFFFFFFF) for slot in self.order]
        by_position += [0] * (MAX_MEMBERS - len(by_position))
        bpf.map_update(self.loads_fd, _KEY0, struct.pack(f"<{MAX_MEMBERS}I", *by_position))

    def append(self, slot: int, dup: int, inode: int, cookie: int) -> None:
        """Put the socket ``dup`` in ``slot`` and at the end of order[], then count it: a
        reader sees the old count (new member unused) or the new one (its slot filled)."""
        bpf.map_update(self.socks_fd, struct.pack("<I", slot), struct.pack("<Q", dup), bpf.NOEXIST)
        self.order.append(slot)
        self.inodes[slot], self.cookies[slot] = inode, cookie
        self.write_state(len(self.order) - 1)
        self.write_state()

    def remove(self, slot: int, delete: bool = True) -> None:
        """Drop ``slot``: the last member takes its position, still counted twice; then the
        count shrinks; only then is the socket taken out of the sockarray."""
        count = len(self.order)
        position = self.order.index(slot)
        self.order[position] = self.order[-1]
        self.write_state(count)
        self.order.pop()
        self.write_state()
        del self.inodes[slot], self.cookies[slot]
        if delete:
            try:
                bpf.map_delete(self.socks_fd, struct.pack("<I", slot))
            except SteeringUnavailable as exc:
                if exc.errno != errno.ENOENT:  # closed meanwhile: the kernel emptied it
                    raise

    def clear(self) -> None:
        for slot in list(self.order):
            self.remove(slot)

    def free_slot(self) -> int:
        used = set(self.order)
        for slot in range(MAX_MEMBERS):
            if slot not in used:
                return slot
        raise SteeringUnavailable(f"more than {MAX_MEMBERS} listeners to steer")

    def close(self) -> None:
        for fd in (self.prog_fd, self.socks_fd, self.state_fd, self.loads_fd):
            if fd >= 0:
                os.close(fd)


# --------------------------------------------------------------------------- the interface


@cache
def unavailable_reason() -> str | None:
    """None when steering can work here, else one line saying why (cached)."""
    try:
        _Family.create("round-robin", "probe").close()
    except SteeringUnavailable as exc:
        return f"eBPF steering unavailable: {exc}"
    try:
        bpf.pidfd_getfd(-1, 0)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return "eBPF steering unavailable: pidfd_getfd missing (kernel < 5.6)"
    return None


@dataclass(frozen=True)
class SyncResult:
    members: frozenset[int]  # listener inodes in the map after the sync
    admitted: tuple[int, ...]
    evicted: tuple[int, ...]  # taken out by us, or closed since the last sync
    failed: dict[int, str]  # inode -> why it could not be admitted


class _Duplicate:
    """A short-lived duplicate of another process's socket (closed on leaving the block)."""

    def __init__(self, inode: int, pid: int) -> None:
        fd_number = processes.socket_fds(pid).get(inode)
        if fd_number is None:
            raise LookupError(f"process {pid} holds no socket {inode}")
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            raise LookupError(f"process {pid}: {exc.strerror}") from None
        try:
            self.fd = bpf.pidfd_getfd(pidfd, fd_number)
        except OSError as exc:
            raise LookupError(f"pidfd_getfd on process {pid}: {exc.strerror}") from None
        finally:
            os.close(pidfd)
        self.sock = socket.socket(fileno=self.fd)
        if os.fstat(self.fd).st_ino != inode:
            self.sock.close()
            raise LookupError(f"fd {fd_number} of process {pid} is no longer socket {inode}")
        if not self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            self.sock.close()  # the kernel refuses it in a sockarray (EINVAL): say why
            raise LookupError(f"socket {inode} does not set SO_REUSEPORT")

    def __enter__(self) -> _Duplicate:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    @property
    def cookie(self) -> int:
        raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8)
        return int.from_bytes(raw, "little")


class Steering:
    """The steering of one service's port: per address family one program, one sockarray,
    one state map (and, for least-conn, one loads map)."""

    def __init__(self, policy: str, handle: dict | None = None) -> None:
        if policy not in POLICIES:
            raise SteeringUnavailable(f"unknown balance policy {policy!r}")
        self.policy = policy
        self._families: dict[int, _Family] = {}
        self._loads: dict[int, int] = {}
        self._create_failed: dict[int, SteeringUnavailable] = {}
        handle = handle if isinstance(handle, dict) else {}
        saved, saved_policy = handle.get("families"), handle.get("policy")
        for family, tag in _FAMILIES.items():
            ids = saved.get(tag) if isinstance(saved, dict) else None
            if saved_policy not in POLICIES or not isinstance(ids, dict):
                continue
            adopted = _Family.adopt(str(saved_policy), tag, ids)
            if adopted is None:
                continue
            if saved_policy == policy:
                self._families[family] = adopted
            else:  # another policy's: empty it, so its sockets are free for our new map
                adopted.clear()
                adopted.close()

    def handle(self) -> dict:
        """JSON-able ids to adopt this steering later (from another process)."""
        families = {_FAMILIES[f]: group.ids() for f, group in self._families.items()}
        return {"policy": self.policy, "families": families}

    def members(self) -> frozenset[int]:
        return frozenset(
            inode for g in self._families.values() for inode in g.inodes.values() if inode
        )

    def sync(self, wanted: Mapping[int, int]) -> SyncResult:
        """Make the members exactly ``wanted`` (listener inode -> pid holding it)."""
        evicted: list[int] = []
        for group in self._families.values():  # sockets closed since the last sync
            for slot in list(group.order):
                if group.cookie_at(slot) != group.cookies[slot]:
                    evicted.append(group.inodes[slot])
                    group.remove(slot, delete=False)
        admitted: list[int] = []
        failed: dict[int, str] = {}
        self._create_failed = {}
        current = self.members()
        for inode, pid in wanted.items():
            if inode in current:
                continue
            try:
                if self._admit(inode, pid):
                    admitted.append(inode)
            except (LookupError, OSError, SteeringUnavailable) as exc:
                failed[inode] = str(exc)
        for group in self._families.values():  # unwanted (or adopted, never claimed) last
            for slot in list(group.order):
                if group.inodes[slot] not in wanted or not group.inodes[slot]:
                    evicted.append(group.inodes[slot])
                    group.remove(slot)
            group.write_loads(self._loads)
        return SyncResult(self.members(), tuple(admitted), tuple(i for i in evicted if i), failed)

    def _admit(self, inode: int, pid: int) -> bool:
        """Insert the socket (or claim its adopted slot); True if it was newly inserted."""
        with _Duplicate(inode, pid) as dup:
            if dup.sock.family not in _FAMILIES:
                raise LookupError(f"socket {inode} is not IPv4 or IPv6")
            group = self._families.get(dup.sock.family)
            if group is None:
                if dup.sock.family in self._create_failed:  # once per sync is enough
                    raise self._create_failed[dup.sock.family]
                try:
                    group = _Family.create(self.policy, _FAMILIES[dup.sock.family])
                except SteeringUnavailable as exc:
                    self._create_failed[dup.sock.family] = exc
                    raise
                self._families[dup.sock.family] = group
            cookie = dup.cookie
            claimed = [slot for slot, c in group.cookies.items() if c == cookie]
            if claimed:  # adopted from an earlier supervisor: already in the map
                group.inodes[claimed[0]] = inode
            else:
                try:
                    group.append(group.free_slot(), dup.fd, inode, cookie)
                except SteeringUnavailable as exc:
                    if exc.errno == errno.EBUSY:
                        # A program whose handle was lost still holds the group: attach ours
                        # in its place, so it and its map are freed and a later sync admits.
                        dup.sock.setsockopt(
                            socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, group.prog_fd
                        )
                        raise LookupError(
                            f"socket {inode} is in another steering map (taking it over)"
                        ) from None
                    raise
            # (Re-)attach on every admit: a group re-formed after all its sockets closed
            # has lost the program. Replacing it by the same program is harmless.
            dup.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, group.prog_fd)
            return not claimed

    def set_loads(self, loads: Mapping[int, int]) -> None:
        """least-conn: established connections per member inode (no-op for round-robin)."""
        if self.policy != "least-conn":
            return
        self._loads = dict(loads)
        for group in self._families.values():
            group.write_loads(self._loads)

    def close(self) -> None:
        """Close our fds; the kernel keeps the objects while a group holds the program."""
        for group in self._families.values():
            group.close()
        self._families.clear()

    def detach(self) -> None:
        """Steering off for good: empty the maps (the program then lets the kernel hash,
        and the sockets are free for another map), then close."""
        for group in self._families.values():
            group.clear()
        self.close()

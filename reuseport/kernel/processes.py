"""Processes, read from ``{proc}``: the sockets each holds, its tree, program and container.

* ``{proc}/PID/fd/*``: symlinks ``socket:[INODE]`` map sockets to the processes holding them.
* ``{proc}/PID/task/*/children`` (or every ``stat``'s ppid): a process's descendants.
* ``{proc}/PID/comm`` and ``{proc}/PID/cgroup``: program name and Docker container id.

Pure reads. Processes that vanish mid-scan, or whose fds we may not read, are skipped
silently.

``{proc}`` defaults to ``PROC``: ``/proc``, or ``$REUSEPORT_HOST_PROC`` where the host's
/proc is mounted elsewhere (the Swarm node agent: a Swarm service cannot join the host's
pid namespace, so it reads the host's processes through a read-only mount of its /proc).
"""

from __future__ import annotations

import os
import re

PROC = os.environ.get("REUSEPORT_HOST_PROC") or "/proc"

__all__ = [
    "PROC",
    "all_pids",
    "comm",
    "container_id_of",
    "process_tree",
    "socket_fds",
    "socket_inodes",
]


# --------------------------------------------------------------------------- fd scans


def socket_fds(pid: int, proc: str = PROC) -> dict[int, int]:
    """``inode -> fd number`` of every socket process ``pid`` holds (empty if unreadable)."""
    fd_dir = f"{proc}/{pid}/fd"
    found: dict[int, int] = {}
    try:
        names = os.listdir(fd_dir)
    except OSError:  # vanished, not ours, not a dir
        return found
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:  # fd closed meanwhile, process gone, permission
            continue
        if link.startswith("socket:[") and name.isdigit():
            found.setdefault(int(link[8:-1]), int(name))
    return found


def socket_inodes(pid: int, proc: str = PROC) -> set[int]:
    """Inodes of every socket process ``pid`` holds an fd to (empty if unreadable)."""
    return set(socket_fds(pid, proc))


def all_pids(proc: str = PROC) -> list[int]:
    try:
        return [int(n) for n in os.listdir(proc) if n.isdigit()]
    except OSError:
        return []


def _read_small(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:  # vanished, not ours, not a dir
        return None


def comm(pid: int, proc: str = PROC) -> str | None:
    """The program name of ``pid``, None if it is gone."""
    text = _read_small(f"{proc}/{pid}/comm")
    if text is None:
        return None
    return text.rstrip("\n") or None


# --------------------------------------------------------------------------- containers

# Docker-specific shapes, most specific first. The last match on a line wins, so nested
# Docker (".../docker/<outer>/docker/<inner>") yields the innermost container.
_DOCKER_ID = re.compile(r"(?:/docker/|docker-)([0-9a-f]{64})(?![0-9a-f])")
# Any standalone 64-hex path component (cgroup v2 layouts, e.g. "0::/.../<id>").
_ANY_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def container_id_of(pid: int, proc: str = PROC) -> str | None:
    """The 64-hex Docker container id of ``pid`` from ``{proc}/PID/cgroup``, else None.

    Understands cgroupfs paths (``/docker/<id>``), the systemd driver
    (``/system.slice/docker-<id>.scope``) and cgroup v2 (``0::/...<id>...``). Docker-shaped
    paths are preferred; otherwise any standalone 64-hex path component is taken. Only
    used to describe who holds a socket: which replica owns one is decided by process
    trees (see :mod:`reuseport.kernel.attribution`).
    """
    text = _read_small(f"{proc}/{pid}/cgroup")
    if not text:
        return None
    paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
    for pattern in (_DOCKER_ID, _ANY_ID):
        for path in paths:
            matches = pattern.findall(path)
            if matches:
                return matches[-1]
    return None


# --------------------------------------------------------------------------- process tree


def _stat_ppid(stat: str) -> int | None:
    # "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    rest = stat[stat.rfind(")") + 2 :].split(" ", 2)
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def _children_via_task(pid: int, proc: str) -> list[int] | None:
    """Children of ``pid`` from ``task/*/children`` (CONFIG_PROC_CHILDREN), or None if absent."""
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        # Process gone: no children. Process there but no task dir: no such interface.
        return None if os.path.isdir(f"{proc}/{pid}") else []
    children: list[int] = []
    for tid in tids:
        try:
            with open(f"{proc}/{pid}/task/{tid}/children", encoding="ascii") as fh:
                children.extend(int(c) for c in fh.read().split())
        except FileNotFoundError:
            if not os.path.isdir(f"{proc}/{pid}/task/{tid}"):
                continue  # thread exited
            return None  # kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return children


def process_tree(root_pid: int, proc: str = PROC) -> list[int]:
    """``root_pid`` followed by all its descendants (breadth first).

    Empty if the root is gone; descendants that vanish during the walk are skipped.
    """
    if not os.path.isdir(f"{proc}/{root_pid}"):
        return []

    tree = [root_pid]
    seen = {root_pid}
    via_task = _children_via_task(root_pid, proc)
    if via_task is not None:
        queue = list(via_task)
        while queue:
            pid = queue.pop(0)
            if pid in seen:
                continue
            kids = _children_via_task(pid, proc)
            if kids is None:  # inconsistent kernel view: fall back to the full scan
                break
            if os.path.isdir(f"{proc}/{pid}"):
                seen.add(pid)
                tree.append(pid)
                queue.extend(kids)
        else:
            return tree

    # Fallback: one pass over every process's stat to build a ppid -> children map.
    by_parent: dict[int, list[int]] = {}
    for pid in all_pids(proc):
        stat = _read_small(f"{proc}/{pid}/stat")
        if stat is None:
            continue
        ppid = _stat_ppid(stat)
        if ppid is not None:
            by_parent.setdefault(ppid, []).append(pid)
    tree = [root_pid]
    seen = {root_pid}
    index = 0
    while index < len(tree):
        for child in sorted(by_parent.get(tree[index], ())):
            if child not in seen:
                seen.add(child)
                tree.append(child)
        index += 1
    return tree

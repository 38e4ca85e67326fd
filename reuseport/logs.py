"""Merged logs of a service's replicas, each line prefixed like compose: ``demo.2 | ...``."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from reuseport.engine.base import Engine, Replica
from reuseport.errors import ServiceNotFound

RELIST_S = 1.0


def _prefix(replica: Replica) -> str:
    return f"{replica.service}.{replica.index} | "


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Reassemble lines: the engine's stream frames need not end on a newline."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace")


def show(
    engine: Engine,
    names: Sequence[str],
    *,
    follow: bool,
    tail: int | str,
    write: Callable[[str], None],
) -> None:
    """The logs of every replica of ``names`` (several: a project file's services)."""
    replicas = _replicas(engine, names)
    if not replicas:
        shown = ", ".join(repr(name) for name in names)
        raise ServiceNotFound(f"no replicas of {shown} (see `reuseport ps`)")
    if not follow:
        merged: list[tuple[str, str]] = []
        for replica in replicas:
            for line in _lines(engine.logs(replica.id, follow=False, tail=tail, timestamps=True)):
                stamp, _, text = line.partition(" ")
                merged.append((stamp, _prefix(replica) + text))
        for _, line in sorted(merged, key=lambda pair: pair[0]):
            write(line)
        return
    _follow(engine, names, replicas, tail, write)


def _replicas(engine: Engine, names: Sequence[str]) -> list[Replica]:
    return [replica for name in names for replica in engine.replicas(name)]


def _follow(
    engine: Engine,
    names: Sequence[str],
    replicas: list[Replica],
    tail: int | str,
    write: Callable[[str], None],
) -> None:
    lines: queue.Queue[str] = queue.Queue()
    followed: set[str] = set()

    def pump(replica: Replica, replica_tail: int | str) -> None:
        for line in _lines(
            engine.logs(replica.id, follow=True, tail=replica_tail, timestamps=False)
        ):
            lines.put(_prefix(replica) + line)

    def attach(current: list[Replica], replica_tail: int | str) -> None:
        for replica in current:
            if replica.id not in followed:
                followed.add(replica.id)
                threading.Thread(target=pump, args=(replica, replica_tail), daemon=True).start()

    attach(replicas, tail)
    next_relist = time.monotonic() + RELIST_S
    while True:  # until Ctrl-C, like `docker compose logs -f`
        try:
            write(lines.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        if time.monotonic() >= next_relist:
            next_relist = time.monotonic() + RELIST_S
            attach(_replicas(engine, names), "all")  # replacements: show them from their start

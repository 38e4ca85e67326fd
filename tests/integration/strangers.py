"""Connections and listeners the tests make themselves: a foreign listener that joins a
service's reuseport group, and clients that connect without asking anything."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


@contextmanager
def foreign_listener(port: int) -> Iterator[socket.socket]:
    """A listener of the same uid that joins the replicas' group, as any process could."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()


def accepted(listener: socket.socket) -> int:
    """Connections waiting in the listener's queue (it never answers them)."""
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def connect_only(port: int, count: int) -> None:
    """``count`` new connections that send nothing (a foreign listener's share shows in
    its queue; a replica just sees them close)."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def keep_connecting(port: int, seconds: float) -> None:
    """New connections that send nothing, for ``seconds``: a stopped replica's queue fills
    with its share of them (what a supervisor or agent sees as a stall)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connect_only(port, 5)


def answered_by(port: int, count: int, timeout_s: float) -> list[str]:
    """Which replica (X-Replica) answered each of ``count`` requests on NEW connections;
    one that landed on a stopped replica times out (httpx.ReadTimeout) after ``timeout_s``."""
    found = []
    for _ in range(count):
        response = httpx.get(
            f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=timeout_s
        )
        assert response.status_code == 200
        found.append(response.headers["X-Replica"])
    return found

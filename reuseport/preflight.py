"""Checks made before anything starts, so a bad `up` leaves nothing behind."""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection

from reuseport import kernel
from reuseport.engine.base import Engine
from reuseport.errors import InvalidSpec, PortBusy, PortConflict, UidMismatch
from reuseport.spec import ServiceSpec


def replica_uid(engine: Engine, spec: ServiceSpec) -> int:
    """The effective uid the service's replicas will run under."""
    user = spec.user or engine.image_user(spec.image) or "0"
    uid = engine.resolve_user(spec.image, user)
    if uid is None:
        raise InvalidSpec(f"user {user!r} does not exist in image {spec.image!r}")
    return uid


def check_port(engine: Engine, spec: ServiceSpec, own_containers: Collection[str]) -> None:
    """Refuse a port held by anything but this service's replicas, or by another uid."""
    uid = replica_uid(engine, spec)  # also refuses a --user the image does not know
    listeners = kernel.listeners(spec.port)
    for listener in listeners:
        who = _describe(listener)
        if listener.container_id in own_containers:
            if listener.uid != uid:
                raise UidMismatch(
                    f"replicas of {spec.name!r} listen on port {spec.port} as uid "
                    f"{listener.uid} but new ones would run as uid {uid}; SO_REUSEPORT only "
                    f"groups sockets of one effective uid: run `reuseport down {spec.name}` first"
                )
            continue
        if listener.uid != uid:
            raise UidMismatch(
                f"port {spec.port} is held by {who} as uid {listener.uid} but replicas would run "
                f"as uid {uid}; SO_REUSEPORT only groups sockets of one effective uid"
            )
        if joinable(listener.address, spec.port):
            raise PortBusy(
                f"port {spec.port} is already served by {who} with SO_REUSEPORT, which is not a "
                f"replica of {spec.name!r} and would take a share of its connections; stop it "
                "or choose another --port"
            )
        raise PortBusy(
            f"port {spec.port} is held by {who}, which is not in a SO_REUSEPORT group; "
            "stop it or choose another --port"
        )


def _describe(listener: kernel.Listener) -> str:
    if not listener.pids:
        return f"a socket on {listener.address} (owner process not visible)"
    return f"pid {listener.pids[0]} ({listener.program or '?'})"


def joinable(address: str, port: int) -> bool:
    """Could a SO_REUSEPORT socket of ours bind beside it? Bound, never listening, closed."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def check_free(address: str, port: int, option: str) -> None:
    """Refuse a port a server of ours (metrics) could not bind, before anything starts."""
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise InvalidSpec(f"{option}: cannot use address {address!r}: {exc.strerror}") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise PortConflict(f"{option} {port} on {address}: {exc.strerror}") from None

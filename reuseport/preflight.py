"""Checks made before anything starts, so a bad `up` leaves nothing behind."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from reuseport.engine.base import Engine, Replica
from reuseport.errors import InvalidSpec, PortBusy, PortConflict, UidMismatch
from reuseport.kernel import attribution, options, ports
from reuseport.spec import ServiceSpec


def replica_uid(engine: Engine, spec: ServiceSpec) -> int:
    """The effective uid the service's replicas will run under."""
    user = spec.user or engine.image_user(spec.image) or "0"
    uid = engine.resolve_user(spec.image, user)
    if uid is None:
        raise InvalidSpec(f"user {user!r} does not exist in image {spec.image!r}")
    return uid


def check_port(engine: Engine, spec: ServiceSpec, replicas: Iterable[Replica]) -> None:
    """Refuse a port held by anything but the service's ``replicas``, or by another uid.

    Whether a replica holds a listener is decided by :mod:`reuseport.kernel.attribution`,
    what each listener means by :func:`reuseport.kernel.ports.classify`.
    """
    uid = replica_uid(engine, spec)  # also refuses a --user the image does not know
    for listener, replica in attribution.port_listeners(spec.port, replicas):
        verdict = ports.classify(ports.Owner.of(listener), uid, replica is not None, None)
        if verdict.kind == "foreign":  # only now does its SO_REUSEPORT matter
            joins = options.joinable(listener.address, spec.port)
            verdict = ports.classify(verdict.owner, uid, False, joins)
        _refuse(spec, uid, verdict)


def _refuse(spec: ServiceSpec, uid: int, verdict: ports.ListenerClass) -> None:
    who = verdict.owner.describe()
    if verdict.kind == "ours":
        return
    if verdict.kind == "other-uid" and verdict.ours:
        raise UidMismatch(
            f"replicas of {spec.name!r} listen on port {spec.port} as uid "
            f"{verdict.owner.uid} but new ones would run as uid {uid}; {ports.UID_RULE}: run "
            f"`reuseport down {spec.name}` first"
        )
    if verdict.kind == "other-uid":
        raise UidMismatch(
            f"port {spec.port} is held by {who} but replicas would run as uid {uid}; "
            f"{ports.UID_RULE}"
        )
    if verdict.kind == "foreign-joinable":
        raise PortBusy(
            f"port {spec.port} is already served by {who} with SO_REUSEPORT, which is not a "
            f"replica of {spec.name!r} and would take a share of its connections; stop it "
            "or choose another --port"
        )
    raise PortBusy(
        f"port {spec.port} is held by {who}, which is not in a SO_REUSEPORT group; "
        "stop it or choose another --port"
    )


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

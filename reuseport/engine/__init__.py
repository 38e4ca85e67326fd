"""Runtime adapters behind one small interface (:class:`reuseport.engine.base.Engine`).

This interface is replica-level: reuseport's supervisor owns each container. Docker Swarm
owns its tasks itself, so its adapter is service-level and lives apart, in
:mod:`reuseport.swarm` (``engine = "swarm"``).
"""

from reuseport.engine.base import Engine, EventStream, Replica, SupervisorInfo

__all__ = ["Engine", "EventStream", "Replica", "SupervisorInfo", "connect"]


def connect() -> Engine:
    """The engine for this machine (Docker, from the environment like the docker CLI)."""
    from reuseport.engine.docker import DockerEngine

    return DockerEngine.from_env()

"""Runtime adapters behind one small interface (:class:`reuseport.engine.base.Engine`).

Docker is the only engine today; a Swarm adapter will be a sibling module.
"""

from reuseport.engine.base import Engine, EventStream, Replica, SupervisorInfo

__all__ = ["Engine", "EventStream", "Replica", "SupervisorInfo", "connect"]


def connect() -> Engine:
    """The engine for this machine (Docker, from the environment like the docker CLI)."""
    from reuseport.engine.docker import DockerEngine

    return DockerEngine.from_env()

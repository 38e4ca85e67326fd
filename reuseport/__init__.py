"""reuseport: N replicas of a server container on one port, balanced by the kernel."""

__version__ = "0.1.0"

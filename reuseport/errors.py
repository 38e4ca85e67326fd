"""The one exception tree of reuseport.

Every error a user can cause or meet derives from :class:`ReuseportError` and carries a
one-line, user-facing message. Only the CLI edge prints them; it maps each class to an
exit code (``exit_code``) so scripts can tell failures apart.

    ReuseportError
    ├── InvalidSpec (2)            a value is malformed or out of range
    │   └── ConfigFileError (2)    ... in a project file: ``FILE:LINE: KEY: what is wrong``
    ├── EngineError (3)            EngineUnavailable, ImageMissing, SwarmUnavailable
    ├── SteeringUnavailable (3)
    ├── ServiceNotFound (4)
    ├── PortConflict (5)           PortBusy, UidMismatch, ReusePortMissing
    ├── SpecConflict (6)           SupervisorConflict
    ├── ReplicaFailed (7)
    ├── RolloutFailed (8)
    ├── StateUnreadable (9)
    └── RolloutInterrupted (130)
"""

from __future__ import annotations


class ReuseportError(Exception):
    """Base of every error reuseport reports to a user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidSpec(ReuseportError):
    """A command-line value or spec field is malformed or out of range.

    ``key``: when the check is about one option, its name as in a project file (the long
    flag without dashes, e.g. ``hang-window``); ``detail``: what is wrong with it, phrased
    without the option's name (``must be >= 1, got 0``), so a file's loader can point at
    the key's line. Without a key, ``detail`` is the whole message."""

    exit_code = 2

    def __init__(self, message: str, key: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.detail = detail if detail is not None else message


class ConfigFileError(InvalidSpec):
    """A project file (``reuseport.toml``) is missing, unreadable or invalid. The message is
    one line naming the file, the line and the key: ``reuseport.toml:12:
    services.web.replicas: must be between 1 and 256, got 0``. ``path`` and ``line`` are
    None when the error is about no file in particular (none found). Exit code 2."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, key=key)
        self.path = path
        self.line = line


class EngineError(ReuseportError):
    """The container engine failed or refused an operation."""

    exit_code = 3


class EngineUnavailable(EngineError):
    """No container engine answers."""


class ImageMissing(EngineError):
    """The image is not present locally (reuseport never pulls)."""


class SwarmUnavailable(EngineError):
    """``engine = "swarm"`` on a Docker engine that is not a manager of an active swarm."""


class SteeringUnavailable(ReuseportError):
    """eBPF steering of the port's SO_REUSEPORT group cannot be set up or changed here (bpf(2)
    refused, kernel too old, pidfd_getfd missing); the message names what failed and why.
    Exit code 3, like the engine's failures. ``errno`` keeps the kernel's error number."""

    exit_code = 3

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class ServiceNotFound(ReuseportError):
    """No replicas or state exist for the named service."""

    exit_code = 4


class PortConflict(ReuseportError):
    """The port cannot be shared with the replicas."""

    exit_code = 5


class PortBusy(PortConflict):
    """A process that is not one of the service's replicas listens on the port."""


class UidMismatch(PortConflict):
    """Listeners would run under different effective UIDs, so the kernel cannot group them."""


class ReusePortMissing(PortConflict):
    """The app does not set SO_REUSEPORT: only one replica can bind the port."""


class SpecConflict(ReuseportError):
    """Replicas of the service already run with a different spec, or another supervisor owns it."""

    exit_code = 6


class SupervisorConflict(SpecConflict):
    """Another supervisor (a foreground ``up`` or a detached container) holds the service's
    lease; the message names the holder. Exit code 6, like any spec conflict."""


class ReplicaFailed(ReuseportError):
    """A replica exited or did not listen in time while the service was being brought up."""

    exit_code = 7


class RolloutFailed(ReuseportError):
    """A rollout did not complete and was rolled back."""

    exit_code = 8


class StateUnreadable(ReuseportError):
    """A state file exists but cannot be trusted: corrupt, truncated, not a JSON object, or
    written by a newer reuseport (a newer schema version). Exit code 9. It never means "no
    such service": the file is left alone and the message names it and what is wrong."""

    exit_code = 9


class RolloutInterrupted(ReuseportError):
    """The user stopped watching a rollout; the supervisor carries it on."""

    exit_code = 130

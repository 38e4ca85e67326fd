"""The Docker adapter: the only module that imports ``docker``.

Replicas run in the host network namespace (they share the host's port space, which is
what lets SO_REUSEPORT group them) under ``docker-init`` so signals reach the app. They get
no Docker restart policy: the supervisor is the single restart owner. The low-level API is
used on the hot path (create/start/inspect) because the high-level one adds inspects and a
silent pull on a missing image.
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
import requests.exceptions

from reuseport import labels
from reuseport.engine.base import Replica, SupervisorInfo
from reuseport.engine.inspect import listing_key, same_process
from reuseport.engine.inspect import replica_from_inspect as _replica
from reuseport.errors import EngineError, EngineUnavailable, ImageMissing
from reuseport.spec import ServiceSpec

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_SOCKET = "/var/run/docker.sock"
INSPECT_PARALLELISM = 16
SUPERVISOR_SOCKET_DIR = "/run/reuseport-engine"  # inside the supervisor container
START_HINT = "start one with `scripts/ensure-docker` (or `systemctl start docker`)"


def translated(method: Callable[P, T]) -> Callable[P, T]:
    """Turn any leftover docker/requests failure into the error tree (one line at the CLI)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            if isinstance(exc, docker.errors.APIError):
                raise EngineError(f"Docker refused: {exc.explanation or exc}") from exc
            raise EngineUnavailable(f"lost the Docker engine at {_where()}: {START_HINT}") from exc
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"Docker request failed: {exc}") from exc

    return wrapper


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def client_from_env() -> docker.DockerClient:
    try:
        # No version= pin: docker-py negotiates with whatever engine answers.
        # A connection per parallel creation (apply.CREATE_PARALLELISM) and health check.
        return docker.from_env(timeout=60, max_pool_size=32)
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"no Docker engine answers at {_where()}: {START_HINT}") from exc


class DockerEngine:
    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client
        self._api = client.api
        # id -> ((State, Status) from the list, inspect data): a resync re-inspects only the
        # containers whose state changed, so an idle pass costs one list call, not N inspects.
        self._inspected: dict[str, tuple[tuple[str, str], dict]] = {}

    @classmethod
    def from_env(cls) -> DockerEngine:
        engine = cls(client_from_env())
        engine.ping()
        return engine

    # -- engine and images ---------------------------------------------------------------

    def ping(self) -> None:
        try:
            self._api.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineUnavailable(
                f"no Docker engine answers at {_where()}: {START_HINT}"
            ) from exc

    @translated
    def require_image(self, ref: str) -> None:
        try:
            self._api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"image {ref!r} is not present locally and reuseport never pulls: "
                f"build or load it first (e.g. `docker build -t {ref} .`)"
            ) from None
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot inspect image {ref!r}: {exc.explanation}") from exc

    @translated
    def image_user(self, ref: str) -> str:
        return self._api.inspect_image(ref).get("Config", {}).get("User") or ""

    @translated
    def resolve_user(self, ref: str, user: str) -> int | None:
        """The numeric uid ``user`` (``name`` or ``uid[:gid]``) maps to in ``ref``, if known."""
        name = user.split(":", 1)[0]
        if not name or name == "root":
            return 0
        if name.isdigit():
            return int(name)
        passwd = self._read_file(ref, "/etc/passwd")
        for line in passwd.splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
        return None

    def _read_file(self, ref: str, path: str) -> str:
        # A created (never started) container exposes the image's filesystem.
        container = self._api.create_container(
            ref, command=["true"], labels={labels.MANAGED: "probe"}
        )
        try:
            stream, _ = self._api.get_archive(container["Id"], path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                handle = tar.extractfile(member) if member else None
                return handle.read().decode(errors="replace") if handle else ""
        except docker.errors.NotFound:
            return ""
        finally:
            self._api.remove_container(container["Id"], force=True)

    # -- replicas ------------------------------------------------------------------------

    @translated
    def replicas(self, service: str | None = None) -> list[Replica]:
        found = []
        listed = self._list(service, labels.ROLE_REPLICA)
        # See listing_key and same_process: an idle resync re-inspects no replica.
        self._reinspect([s for s in listed if not self._cached_fresh(s)])
        for summary in listed:
            cached = self._inspected.get(summary["Id"])
            data = cached[1] if cached is not None else None
            if data is not None and labels.is_owned(data["Config"].get("Labels"), data["Name"]):
                found.append(_replica(data))
        if service is not None:
            seen = {summary["Id"] for summary in listed}
            for gone in [
                c
                for c, (_, d) in self._inspected.items()
                if c not in seen
                and (d["Config"].get("Labels") or {}).get(labels.SERVICE) == service
            ]:
                del self._inspected[gone]
        return sorted(found, key=lambda r: (r.service, r.index, r.started_at or 0.0))

    def _reinspect(self, stale: list[dict]) -> None:
        """Inspect the listed containers whose cached inspect is out of date, at once when
        several: N replicas starting together all change state in one listing, and N
        inspects one after another behind a busy dockerd took 0.5 s of a 16-replica start."""
        if len(stale) < 2:
            for summary in stale:
                self._inspect_into_cache(summary)
            return
        with ThreadPoolExecutor(
            max_workers=min(len(stale), INSPECT_PARALLELISM), thread_name_prefix="inspect"
        ) as pool:
            list(pool.map(self._inspect_into_cache, stale))

    def _cached_fresh(self, summary: dict) -> bool:
        cached = self._inspected.get(summary["Id"])
        return cached is not None and cached[0] == listing_key(summary) and same_process(cached[1])

    def _inspect_into_cache(self, summary: dict) -> None:
        data = self._inspect(summary["Id"])
        if data is None:
            self._inspected.pop(summary["Id"], None)
        else:
            self._inspected[summary["Id"]] = (listing_key(summary), data)

    @translated
    def create_replica(
        self, spec: ServiceSpec, index: int, restarts: int, health_port: int | None = None
    ) -> str:
        host_config = self._api.create_host_config(
            network_mode="host",
            init=True,
            restart_policy={"Name": "no"},
            nano_cpus=round(spec.cpus * 1e9) if spec.cpus is not None else None,
        )
        nonce = labels.new_nonce()
        # The label spec is redacted: labels show in every `docker events` record.
        replica_labels = labels.replica_labels(
            spec.name,
            index,
            spec.spec_hash(),
            spec.redacted().to_json(),
            restarts,
            nonce,
            health_port,
        )
        try:
            container = self._api.create_container(
                spec.image,
                name=labels.replica_name(spec.name, index, nonce),
                environment=spec.replica_env(index, health_port),
                labels=replica_labels,
                user=spec.user or "",
                host_config=host_config,
                stop_timeout=spec.stop_timeout,
            )
        except docker.errors.ImageNotFound:
            raise ImageMissing(f"image {spec.image!r} is not present locally") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot create replica {index}: {exc.explanation}") from exc
        try:
            self._api.start(container["Id"])
        except docker.errors.APIError as exc:
            self.remove_replica(container["Id"])
            raise EngineError(f"cannot start replica {index}: {exc.explanation}") from exc
        return container["Id"]

    @translated
    def exec_check(self, container_id: str, command: str, timeout: float) -> int:
        """Run ``command`` with /bin/sh inside the container; its exit code (like a Docker
        HEALTHCHECK CMD-SHELL). The caller enforces ``timeout``: an exec cannot be killed."""
        try:
            exec_id = self._api.exec_create(container_id, ["/bin/sh", "-c", command])
            self._api.exec_start(exec_id)
            code = self._api.exec_inspect(exec_id).get("ExitCode")
        except docker.errors.APIError as exc:
            raise EngineError(f"health command failed to run: {exc.explanation}") from exc
        return 255 if code is None else int(code)

    @translated
    def stop_replica(self, container_id: str, timeout: float) -> None:
        """Graceful stop (SIGTERM, SIGKILL after ``timeout``), then removal."""
        try:
            self._api.stop(container_id, timeout=max(0, round(timeout)))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            pass  # already stopping or dead: the forced removal below settles it
        self.remove_replica(container_id)

    @translated
    def remove_replica(self, container_id: str) -> None:
        try:
            self._api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise EngineError(
                    f"cannot remove container {container_id[:12]}: {exc.explanation}"
                ) from exc

    @translated
    def unpause_replica(self, container_id: str) -> None:
        try:
            self._api.unpause(container_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not paused (any more)
                raise EngineError(
                    f"cannot unpause container {container_id[:12]}: {exc.explanation}"
                ) from exc

    def logs(
        self, container_id: str, *, follow: bool, tail: int | str = "all", timestamps: bool = False
    ) -> Iterator[bytes]:
        try:
            return self._api.logs(
                container_id, stream=True, follow=follow, tail=tail, timestamps=timestamps
            )
        except docker.errors.NotFound:
            return iter(())

    @translated
    def last_log_lines(self, container_id: str, lines: int) -> list[str]:
        try:
            raw = self._api.logs(container_id, stream=False, tail=lines)
        except docker.errors.APIError:
            return []
        return [line for line in raw.decode(errors="replace").splitlines() if line.strip()]

    def events(self, service: str) -> Any:
        # Each stream gets its own client: a stream is closed from another thread.
        client = client_from_env()
        return client.api.events(
            decode=True,
            filters={"type": "container", "label": labels.filters(service)},
        )

    # -- supervisors -----------------------------------------------------------------------

    @translated
    def supervisors(self, service: str | None = None) -> list[SupervisorInfo]:
        found = []
        for summary in self._list(service, labels.ROLE_SUPERVISOR):
            if not labels.is_owned(summary.get("Labels"), (summary.get("Names") or [""])[0]):
                continue
            found.append(
                SupervisorInfo(
                    id=summary["Id"],
                    service=summary["Labels"].get(labels.SERVICE, ""),
                    state=summary.get("State", ""),
                    spec_hash=summary["Labels"].get(labels.SPEC_HASH, ""),
                )
            )
        return found

    @translated
    def start_supervisor(self, spec: ServiceSpec, image: str, state_dir: str) -> str:
        socket_mount, docker_host = supervisor_socket_mount(socket_path())
        nonce = labels.new_nonce()
        host_config = self._api.create_host_config(
            network_mode="host",
            # The host pid namespace lets the supervisor map listening sockets to replicas'
            # processes through /proc; SYS_PTRACE lets it read their fd tables.
            pid_mode="host",
            # NET_ADMIN: closing a hung replica's listener (sock_diag SOCK_DESTROY).
            # SYS_ADMIN, only for eBPF steering: bpf(2) (Docker 20.10 does not know the
            # narrower CAP_BPF); SYS_PTRACE also lets it borrow listeners by pidfd_getfd.
            cap_add=["SYS_PTRACE", "NET_ADMIN"] + (["SYS_ADMIN"] if spec.balance != "hash" else []),
            init=True,
            # Four times a replica's CPU weight: a supervisor starved by busy replicas (or by
            # N apps starting at once) cannot notice that one died or hung.
            cpu_shares=4096,
            restart_policy={"Name": "unless-stopped"},
            binds={state_dir: {"bind": state_dir, "mode": "rw"}},
            mounts=[socket_mount],
        )
        try:
            container = self._api.create_container(
                image,
                name=labels.supervisor_name(spec.name, nonce),
                command=["supervise", spec.name, "--state-dir", state_dir],
                environment={"DOCKER_HOST": docker_host},
                labels=labels.supervisor_labels(spec.name, spec.spec_hash(), nonce),
                host_config=host_config,
                stop_timeout=5,
            )
            self._api.start(container["Id"])
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"the supervisor image {image!r} is not present: "
                "build it with `scripts/build-images`"
            ) from None
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot start the supervisor: {exc.explanation}") from exc
        return container["Id"]

    def remove_supervisor(self, container_id: str, timeout: float) -> None:
        # `docker stop` counts as a manual stop, so unless-stopped will not bring it back.
        self.stop_replica(container_id, timeout)

    # -- helpers ---------------------------------------------------------------------------

    def _list(self, service: str | None, role: str) -> list[dict]:
        try:
            return self._api.containers(all=True, filters={"label": labels.filters(service, role)})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineUnavailable(f"lost the Docker engine at {_where()}: {exc}") from exc

    def _inspect(self, container_id: str) -> dict | None:
        try:
            return self._api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None  # removed between list and inspect

    # -- diagnostics -----------------------------------------------------------------------

    @translated
    def version(self) -> dict[str, str]:
        """Server version, its API version and where it answers (for `doctor`)."""
        info = self._api.version()
        return {
            "version": str(info.get("Version", "?")),
            "api_version": str(info.get("ApiVersion", "?")),
            "address": _where(),
        }


def socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else DEFAULT_SOCKET


def supervisor_socket_mount(host_socket: str) -> tuple[dict[str, Any], str]:
    """The mount that gives the supervisor container the engine, and its DOCKER_HOST.

    The socket's DIRECTORY is mounted, not the socket file: a dockerd restart (with
    live-restore the supervisor keeps running) re-creates the socket, and a file mount would
    keep the old inode and be refused forever. Non-recursive, so the other mounts under it
    (e.g. /run/docker/netns/*) are not copied into the container and pinned there.
    """
    real = os.path.realpath(host_socket)
    mount = {
        "Type": "bind",
        "Source": os.path.dirname(real),
        "Target": SUPERVISOR_SOCKET_DIR,
        "ReadOnly": False,
        "BindOptions": {"NonRecursive": True},
    }
    return mount, f"unix://{SUPERVISOR_SOCKET_DIR}/{os.path.basename(real)}"

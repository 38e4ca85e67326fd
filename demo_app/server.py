"""Demo HTTP/1.1 server for reuseport: stdlib only, one process per replica.

Every replica binds the SAME port with SO_REUSEPORT, and the kernel spreads new
connections over them. The app therefore has to create its listening socket itself
(asyncio's ``reuse_port=`` flag would work too, but an explicit socket lets us
switch SO_REUSEPORT off with ``REUSEPORT=0`` to simulate a broken app in tests).

Environment:
    PORT           listening port (default 8080)
    HOST           listening address (default 0.0.0.0)
    REPLICA        replica name reported in responses (default "0")
    APP_VERSION    version reported in responses (default "dev")
    DRAIN_TIMEOUT  seconds to wait for open connections after SIGTERM (default 8)
    REUSEPORT      "0" leaves SO_REUSEPORT unset (test hook for a broken app)
    HEALTH_PORT    if set, also serve ``GET /healthz`` on this port (own to each replica)

Routes: ``GET /`` (JSON with replica, pid, version), ``GET /healthz`` (``ok``),
``GET /sleep?s=0.5`` (waits, at most 30 s, then answers like ``/``); anything else 404.
The health port answers only ``GET /healthz``; anything else there is 404.

Signals: SIGTERM/SIGINT drain and exit. SIGUSR1 marks the replica unhealthy (``/healthz``
answers 503 on both ports while every other route keeps serving), SIGUSR2 healthy again:
a test hook for a replica whose app-level check fails although it still serves.

The server runs on the plain asyncio event loop with a low-level ``asyncio.Protocol``:
streams and http.server cost several times more CPU per request. All responses are
constant per process, so they are built once at start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from urllib.parse import parse_qs

MAX_HEAD = 64 * 1024  # a request head larger than this is refused (431), not buffered
MAX_SLEEP = 30.0
BACKLOG = 1024

ResponseKey = tuple[str, bool, bool]  # (route, close connection, HEAD request)


class ConfigError(Exception):
    """A bad environment value: reported as one line on stderr, exit status 2."""


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable, failing loudly on garbage."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


class App:
    """Process-wide state: configuration, prebuilt responses, open connections."""

    def __init__(self) -> None:
        self.host = os.environ.get("HOST", "0.0.0.0") or "0.0.0.0"
        self.port = env_int("PORT", 8080)
        self.replica = os.environ.get("REPLICA", "0")
        self.version = os.environ.get("APP_VERSION", "dev")
        self.drain_timeout = env_float("DRAIN_TIMEOUT", 8.0)
        # Idle keep-alive connections get this long to send one more request (answered
        # with "Connection: close") before they are closed: closing an idle connection
        # races a client that is just sending on it, and that request would fail.
        self.idle_grace = env_float("DRAIN_IDLE_GRACE", 1.0)
        self.grace_over = False
        self.reuseport = os.environ.get("REUSEPORT", "1").strip() != "0"
        self.health_port = self._health_port()
        # Flipped by SIGUSR1/SIGUSR2; only /healthz looks at it.
        self.healthy = True
        self.pid = os.getpid()
        self.conns: set[HttpProtocol] = set()
        self.draining = False
        self.drained: asyncio.Event | None = None
        self.server: asyncio.Server | None = None
        self.health_server: asyncio.Server | None = None
        self.responses: dict[ResponseKey, bytes] = self._build_responses()

    def _health_port(self) -> int | None:
        raw = os.environ.get("HEALTH_PORT", "").strip()
        if not raw:
            return None
        try:
            port = int(raw)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise ConfigError(f"invalid HEALTH_PORT {raw!r}: expected a port number 1-65535")
        if port == self.port:
            # It would fail to bind anyway (the main socket has SO_REUSEPORT, this one
            # not), but "address in use" would send the reader looking for another app.
            raise ConfigError(f"HEALTH_PORT {port} must differ from PORT")
        return port

    def _build_responses(self) -> dict[ResponseKey, bytes]:
        """Prebuild every response: pid, replica and version never change."""
        info = json.dumps(
            {"replica": self.replica, "pid": self.pid, "version": self.version},
            separators=(",", ":"),
        ).encode()
        routes: dict[str, tuple[str, bytes, str, str]] = {
            "root": ("200 OK", info, "application/json", ""),
            "healthz": ("200 OK", b"ok\n", "text/plain; charset=utf-8", ""),
            "unhealthy": (
                "503 Service Unavailable",
                b"unhealthy\n",
                "text/plain; charset=utf-8",
                "",
            ),
            "notfound": ("404 Not Found", b"not found\n", "text/plain; charset=utf-8", ""),
            "badrequest": ("400 Bad Request", b"bad request\n", "text/plain; charset=utf-8", ""),
            "toolarge": (
                "431 Request Header Fields Too Large",
                b"request head too large\n",
                "text/plain; charset=utf-8",
                "",
            ),
            "notallowed": (
                "405 Method Not Allowed",
                b"method not allowed\n",
                "text/plain; charset=utf-8",
                "Allow: GET, HEAD\r\n",
            ),
        }
        out: dict[ResponseKey, bytes] = {}
        for route, (status, body, ctype, extra) in routes.items():
            for close in (False, True):
                head = (
                    f"HTTP/1.1 {status}\r\n"
                    f"Content-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"X-Replica: {self.replica}\r\n"
                    f"{extra}"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n"
                    "\r\n"
                ).encode("latin-1")
                out[(route, close, False)] = head + body
                out[(route, close, True)] = head  # HEAD: same headers, no body
        return out

    def connection_gone(self, conn: HttpProtocol) -> None:
        self.conns.discard(conn)
        if self.draining and not self.conns and self.drained is not None:
            self.drained.set()

    def start_drain(self, signame: str) -> None:
        """Stop accepting, finish in-flight requests, answer each open connection's next
        request with "Connection: close", and close connections still idle after a grace."""
        if self.draining:
            # A second signal (impatient Ctrl-C) cuts the drain short.
            if self.drained is not None:
                self.drained.set()
            return
        self.draining = True
        # Close the listener first so the kernel stops routing new connections to this
        # replica; its siblings in the SO_REUSEPORT group take them over. The health
        # listener goes too: a refused health check tells a prober this replica is gone.
        # Both close before the log line, so whoever reads "draining" can rely on it.
        if self.server is not None:
            self.server.close()
        if self.health_server is not None:
            self.health_server.close()
        print(
            f"replica {self.replica} draining on {signame}: "
            f"{len(self.conns)} open connections, timeout {self.drain_timeout:g}s",
            flush=True,
        )
        loop = asyncio.get_running_loop()
        if self.drained is not None:
            loop.call_later(self.drain_timeout, self.drained.set)
        loop.call_later(self.idle_grace, self.end_grace)
        if not self.conns and self.drained is not None:
            self.drained.set()

    def set_healthy(self, healthy: bool, signame: str) -> None:
        state = "healthy" if healthy else "unhealthy"
        if healthy == self.healthy:
            print(f"replica {self.replica} already {state} ({signame})", flush=True)
            return
        self.healthy = healthy
        print(
            f"replica {self.replica} {state} on {signame}: "
            f"/healthz answers {200 if healthy else 503}",
            flush=True,
        )

    def end_grace(self) -> None:
        self.grace_over = True
        for conn in list(self.conns):
            conn.close_if_idle()


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Requests are handled strictly in order.

    ``health_only``: a connection to the health port, where only /healthz exists.
    """

    __slots__ = ("app", "health_only", "transport", "buf", "skip", "busy", "closing", "timer")

    def __init__(self, app: App, health_only: bool = False) -> None:
        self.app = app
        self.health_only = health_only
        self.transport: asyncio.Transport | None = None
        self.buf = b""  # unparsed bytes (bytes concat is cheap for small heads)
        self.skip = 0  # request-body bytes still to discard
        self.busy = False  # a /sleep request is in flight: later requests wait
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None

    # asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.app.conns.add(self)
        if self.app.grace_over:
            # Accepted just before the listener closed and after the grace: close it.
            self.close_if_idle()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy and not self.closing:
            self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.app.connection_gone(self)

    def pause_writing(self) -> None:
        # The peer does not read its responses: stop reading its requests too, so a
        # client that floods requests cannot grow our write buffer without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # request handling --------------------------------------------------------------

    def close_if_idle(self) -> None:
        """Close at drain time unless a request is in flight or partly received."""
        if not self.busy and not self.buf and self.skip == 0:
            self.close()

    def close(self) -> None:
        if not self.closing and self.transport is not None:
            self.closing = True
            self.transport.close()  # flushes buffered writes first

    def send(self, route: str, close: bool, head_only: bool) -> None:
        assert self.transport is not None
        # While draining every answer says "Connection: close" and ends the connection.
        close = close or self.app.draining
        self.transport.write(self.app.responses[(route, close, head_only)])
        if close:
            self.close()

    def process(self) -> None:
        """Parse and answer every complete request in the buffer, in order."""
        buf = self.buf
        pos = 0
        n = len(buf)
        while pos < n and not self.busy and not self.closing:
            if self.skip:
                take = min(self.skip, n - pos)
                self.skip -= take
                pos += take
                continue
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > MAX_HEAD:
                    self.send("toolarge", True, False)
                break
            head = buf[pos:end]
            pos = end + 4
            self.handle(head)
        self.buf = buf[pos:] if pos < n else b""

    def handle(self, head: bytes) -> None:
        # RFC 9112 2.2: ignore empty lines before a request line.
        head = head.lstrip(b"\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.send("badrequest", True, False)
            return
        method, target, version = parts
        # HTTP/1.0 always closes (we do not implement its keep-alive extension).
        close = version != b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                self.send("badrequest", True, False)
                return
            name = name.strip().lower()
            if name == b"connection":
                if b"close" in value.lower():
                    close = True
            elif name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = -1
                if length < 0:
                    self.send("badrequest", True, False)
                    return
                self.skip = length  # a body nobody reads: discard it
            elif name == b"transfer-encoding":
                # Without a chunked decoder the next request's start is unknown.
                self.send("badrequest", True, False)
                return
        head_only = method == b"HEAD"
        if method != b"GET" and not head_only:
            self.send("notallowed", close, False)
            return
        path, _, query = target.partition(b"?")
        if path == b"/healthz":
            self.send("healthz" if self.app.healthy else "unhealthy", close, head_only)
        elif self.health_only:
            self.send("notfound", close, head_only)
        elif path == b"/":
            self.send("root", close, head_only)
        elif path == b"/sleep":
            self.start_sleep(query, close, head_only)
        else:
            self.send("notfound", close, head_only)

    def start_sleep(self, query: bytes, close: bool, head_only: bool) -> None:
        try:
            values = parse_qs(query.decode("latin-1")).get("s", ["0"])
            seconds = float(values[0])
        except ValueError:
            self.send("badrequest", close, head_only)
            return
        if not seconds >= 0:  # also rejects NaN
            self.send("badrequest", close, head_only)
            return
        seconds = min(seconds, MAX_SLEEP)
        # A timer instead of a task: cheaper, and connection_lost can cancel it.
        self.busy = True
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(seconds, self.finish_sleep, close, head_only)

    def finish_sleep(self, close: bool, head_only: bool) -> None:
        self.timer = None
        self.busy = False
        if self.closing:
            return
        self.send("root", close, head_only)
        if self.buf and not self.closing:
            self.process()  # requests that arrived while we slept


def make_socket(host: str, port: int, reuseport: bool) -> socket.socket:
    """Create the listener ourselves so SO_REUSEPORT is set (or not) before bind()."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve(app: App) -> int:
    loop = asyncio.get_running_loop()
    try:
        sock = make_socket(app.host, app.port, app.reuseport)
    except OSError as exc:
        # Tests and the supervisor look for this text (e.g. "Address already in use").
        print(
            f"replica {app.replica}: cannot listen on {app.host}:{app.port}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    health_sock: socket.socket | None = None
    if app.health_port is not None:
        try:
            # No SO_REUSEPORT: each replica has its own health port, and a second
            # process on it must fail rather than silently take half the checks.
            health_sock = make_socket(app.host, app.health_port, reuseport=False)
        except OSError as exc:
            # A replica nobody can health-check must not look alive: give up before
            # the main listener accepts anything.
            sock.close()
            print(
                f"replica {app.replica}: cannot listen on health port "
                f"{app.host}:{app.health_port}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            return 1
    app.drained = asyncio.Event()
    # backlog= matters: asyncio calls listen() again on start and would reset it to 100.
    app.server = await loop.create_server(lambda: HttpProtocol(app), sock=sock, backlog=BACKLOG)
    if health_sock is not None:
        app.health_server = await loop.create_server(
            lambda: HttpProtocol(app, health_only=True), sock=health_sock, backlog=BACKLOG
        )
    # Without our own handler, Python as PID 1 in a container ignores SIGTERM. All
    # handlers go in before the start-up line: SIGUSR1's default action would kill us.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.start_drain, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, app.set_healthy, False, "SIGUSR1")
    loop.add_signal_handler(signal.SIGUSR2, app.set_healthy, True, "SIGUSR2")
    port = sock.getsockname()[1]
    health = f", health on {app.host}:{app.health_port}" if health_sock is not None else ""
    print(
        f"replica {app.replica} listening on {app.host}:{port} pid {app.pid} "
        f"version {app.version}{health}",
        flush=True,
    )
    await app.drained.wait()
    left = len(app.conns)
    for conn in list(app.conns):
        if conn.transport is not None:
            conn.transport.abort()  # drain timed out: drop what is still open
    print(
        f"replica {app.replica} drained: "
        + (f"{left} connections dropped at timeout" if left else "all connections closed")
        + ", exiting",
        flush=True,
    )
    return 0


def main() -> int:
    try:
        app = App()
    except ConfigError as exc:
        replica = os.environ.get("REPLICA", "0")
        print(f"replica {replica}: {exc}", file=sys.stderr, flush=True)
        return 2
    return asyncio.run(serve(app))


if __name__ == "__main__":
    sys.exit(main())

"""An open-loop HTTP client: requests at a fixed rate, by default each on a new connection,
each on its own. Run as a subprocess (its event loop must not share a GIL with the caller's
watcher)::

    python -m loadtest.openclient --port 8080 --rate 800 --duration 20 --timeout 5 \\
        --out OUT.json --ready READY [--connections N]

Why not locust here: a locust user waits for its last answer before it sends the next
request, so once a replica hangs every user soon sits on a request stuck there, and the
failed requests count the users (the client stopped asking), not the requests a real
crowd of independent clients would have sent. Here a stuck request holds up no other: the
rate stays what it was, and the failed requests are exactly those the kernel (or the
steering program) handed to the hung replica, plus any stuck on it already.

``--connections N`` (keep-alive mode): N persistent HTTP/1.1 connections, opened before
the schedule starts (no measured request pays a connect), each with its own schedule at
rate/N (request i of the run, due at i/rate, goes to connection i mod N). A connection
sends strictly one request at a time (no pipelining): request k is sent at max(its
scheduled time, the previous answer), and its latency counts from its SCHEDULED time, so
a connection that falls behind records the waiting of every request behind it
(coordinated omission corrected, as wrk2 does). Requests scheduled in the run but not
sent by its end (``--duration``) are recorded as "not sent"; a request that fails
(timeout, closed, not 2xx) breaks its connection, which is opened again.

``--out``: JSON ``{"started_at": wall, "rate": r, "timeout_s": t, "requests": [[sent_s,
latency_s, error], ...]}`` with ``sent_s`` since ``started_at`` (keep-alive mode: the
scheduled time), ``latency_s`` null on a failure and ``error`` "" on success; keep-alive
mode adds ``"connections": n, "duration_s": d``. ``--ready``: written once the first
request is sent (keep-alive mode: once the connections are open).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
KEEPALIVE_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
MAX_RESPONSE = 1 << 20
NOT_SENT = "not sent"
Record = tuple[float, float | None, str]  # (sent_s or scheduled_s, latency_s, error)


async def _one(port: int, timeout_s: float) -> str:
    """One request on a new connection: "" when it is answered 2xx within ``timeout_s``."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            response = await reader.read(MAX_RESPONSE)
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    if not response:
        return "closed without an answer"
    status = response.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or not status[1].startswith(b"2"):
        return f"status {status[1].decode(errors='replace') if len(status) > 1 else '?'}"
    return ""


async def _run(port: int, rate: float, duration_s: float, timeout_s: float, ready: Path | None):
    loop = asyncio.get_running_loop()
    records: list[list[object]] = []
    pending: set[asyncio.Task[None]] = set()
    started_at = time.time()
    start = loop.time()

    async def timed(sent_s: float) -> None:
        t = loop.time()
        error = await _one(port, timeout_s)
        latency = None if error else round(loop.time() - t, 5)
        records.append([round(sent_s, 4), latency, error])

    total = int(rate * duration_s)
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(timed(loop.time() - start))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if i == 0 and ready is not None:
            ready.write_text(f"{started_at}\n")
    if pending:
        await asyncio.wait(pending)
    return {"started_at": started_at, "rate": rate, "timeout_s": timeout_s, "requests": records}


def connection_schedule(
    rate: float, duration_s: float, connections: int, index: int
) -> list[float]:
    """The scheduled send times (s since the start) of connection ``index``: request i of
    the run is due at i/rate and goes to connection i mod ``connections``."""
    total = int(rate * duration_s)
    return [i / rate for i in range(index, total, connections)]


def send_time(scheduled_s: float, previous_answer_s: float) -> float:
    """When a request goes out on its connection: not before it is due, not before the
    previous request's answer is in (one request at a time)."""
    return max(scheduled_s, previous_answer_s)


def answered_record(scheduled_s: float, answered_s: float, error: str) -> Record:
    """A sent request's record: its latency counts from when it was SCHEDULED."""
    latency = None if error else round(answered_s - scheduled_s, 5)
    return (round(scheduled_s, 4), latency, error)


def not_sent_records(scheduled: list[float]) -> list[Record]:
    return [(round(s, 4), None, NOT_SENT) for s in scheduled]


async def _answer(reader: asyncio.StreamReader) -> tuple[str, bool]:
    """Read one response: (error, whether the server closes the connection after it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    )
    await reader.readexactly(int(headers.get("content-length", "0")))
    closes = headers.get("connection", "").lower() == "close"
    if len(status) < 2 or not status[1].startswith("2"):
        return f"status {status[1] if len(status) > 1 else '?'}", True
    return "", closes


async def _keepalive_connection(
    port: int,
    scheduled: list[float],
    clock: Callable[[], float],
    duration_s: float,
    timeout_s: float,
    opened: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
) -> list[Record]:
    """Send ``scheduled`` (s on ``clock``) one at a time on one persistent connection."""
    records: list[Record] = []
    answered = 0.0
    for k, due in enumerate(scheduled):
        at = send_time(due, answered)
        if at >= duration_s:
            records += not_sent_records(scheduled[k:])
            break
        if at > clock():
            await asyncio.sleep(at - clock())
        try:
            async with asyncio.timeout(timeout_s):
                if opened is None:
                    opened = await asyncio.open_connection("127.0.0.1", port)
                opened[1].write(KEEPALIVE_REQUEST)
                error, closes = await _answer(opened[0])
        except TimeoutError:
            error, closes = "timeout", True
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            error, closes = type(exc).__name__, True
        answered = clock()
        records.append(answered_record(due, answered, error))
        if closes and opened is not None:
            opened[1].close()
            opened = None
    if opened is not None:
        opened[1].close()
    return records


async def _run_keepalive(
    port: int, rate: float, duration_s: float, timeout_s: float, connections: int,
    ready: Path | None,
) -> dict[str, object]:  # fmt: skip
    loop = asyncio.get_running_loop()
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    started_at, start = time.time(), loop.time()
    if ready is not None:
        ready.write_text(f"{started_at}\n")
    per_connection = await asyncio.gather(
        *(
            _keepalive_connection(
                port,
                connection_schedule(rate, duration_s, connections, index),
                lambda: loop.time() - start,
                duration_s,
                timeout_s,
                opened[index],
            )
            for index in range(connections)
        )
    )
    records = sorted((r for found in per_connection for r in found), key=lambda r: r[0])
    return {
        "started_at": started_at, "rate": rate, "timeout_s": timeout_s,
        "connections": connections, "duration_s": duration_s, "requests": records,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="open-loop HTTP load, a new connection each")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of sending")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request (5 s)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, default=None)
    parser.add_argument(
        "--connections", type=int, default=0,
        help="N persistent keep-alive connections, latency from the scheduled time (0: a "
        "new connection per request)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.timeout <= 0 or args.connections < 0:
        parser.error("--rate, --duration and --timeout must be > 0, --connections >= 0")
    # Requests stuck on a hung replica stay open for the timeout: rate x timeout sockets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections:
        run = _run_keepalive(
            args.port, args.rate, args.duration, args.timeout, args.connections, args.ready
        )
    else:
        run = _run(args.port, args.rate, args.duration, args.timeout, args.ready)
    result = asyncio.run(run)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

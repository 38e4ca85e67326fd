"""An open-loop HTTP client: requests at a fixed rate, each on a new connection, each on its
own. Run as a subprocess (its event loop must not share a GIL with the caller's watcher)::

    python -m loadtest.openclient --port 8080 --rate 800 --duration 20 --timeout 5 \\
        --out OUT.json --ready READY

Why not locust here: a locust user waits for its last answer before it sends the next
request, so once a replica hangs every user soon sits on a request stuck there, and the
failed requests count the users (the client stopped asking), not the requests a real
crowd of independent clients would have sent. Here a stuck request holds up no other: the
rate stays what it was, and the failed requests are exactly those the kernel (or the
steering program) handed to the hung replica, plus any stuck on it already.

``--out``: JSON ``{"started_at": wall, "rate": r, "timeout_s": t, "requests": [[sent_s,
latency_s, error], ...]}`` with ``sent_s`` since ``started_at``, ``latency_s`` null on a
failure and ``error`` "" on success. ``--ready``: written once the first request is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
MAX_RESPONSE = 1 << 20


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="open-loop HTTP load, a new connection each")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of sending")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request (5 s)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.timeout <= 0:
        parser.error("--rate, --duration and --timeout must be > 0")
    # Requests stuck on a hung replica stay open for the timeout: rate x timeout sockets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(_run(args.port, args.rate, args.duration, args.timeout, args.ready))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open N new connections to a port (one request each) and show which replica answered.

Balance under SO_REUSEPORT is per connection (a hash of the 4-tuple), so each request
uses a fresh connection; keep-alive would pin every request to one replica.
"""

from __future__ import annotations

import argparse
from collections import Counter

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--connections", type=int, default=400)
    args = parser.parse_args()
    counts: Counter[str] = Counter()
    for _ in range(args.connections):
        response = httpx.get(f"http://127.0.0.1:{args.port}/", headers={"Connection": "close"})
        counts[response.headers.get("X-Replica", "?")] += 1
    print(f"{args.connections} new connections to 127.0.0.1:{args.port}:")
    for replica, count in sorted(counts.items()):
        print(f"  replica {replica}: {count:4d}  {'#' * (count * 60 // args.connections)}")


if __name__ == "__main__":
    main()

"""Where the balance policy can matter: every request on a new connection (``Connection:
close``), a small fraction of them slow (``GET /sleep?s=0.5`` holds its connection on the
replica that took it), against the tool's three ``--balance`` policies on the same replicas
count: hash (the "reuseport" setup), round-robin ("steered") and least-conn.

wrk picks each request with a Lua script (a fixed pseudo-random sequence per thread, so
every setup gets the same mix), the setups alternate as in the throughput part, and the
report prints req/s and p99 side by side, whatever they say: no expectation is attached.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from loadtest import wrk
from loadtest.setups import Setup

SETUPS = ("reuseport", "steered", "least-conn")
EXTRA_SETUPS = ("least-conn",)  # started for this measurement only
SLOW_FRACTION = 0.005  # below 1 %, so p99 still shows the fast requests' tail
SLOW_S = 0.5
CONNECTIONS = 64
MAX_REPEATS = 3  # keeps the full throughput part within the engine lock's ~10 minutes
PAUSE_S = 1.0


def lua_script(slow_fraction: float, slow_s: float) -> str:
    """wrk's ``request()``: ``/sleep?s=<slow_s>`` with probability ``slow_fraction``, else
    ``/``; the formatted requests (wrk's headers, ``Connection: close``) made once."""
    return f"""local fast, slow
request = function()
  if not fast then
    fast = wrk.format("GET", "/")
    slow = wrk.format("GET", "/sleep?s={slow_s:g}")
  end
  if math.random() < {slow_fraction!r} then
    return slow
  end
  return fast
end
"""


def measure(
    running: Mapping[str, Setup],
    duration_s: float,
    repeats: int,
    progress: Callable[[str], None],
) -> dict[str, list[wrk.WrkResult]]:
    """Alternating wrk runs of the mix on each of ``SETUPS`` that runs; results by setup."""
    names = [name for name in SETUPS if name in running]
    runs: dict[str, list[wrk.WrkResult]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="reuseport-slowmix-") as work:
        script = Path(work) / "mix.lua"
        script.write_text(lua_script(SLOW_FRACTION, SLOW_S))

        def run(name: str, seconds: float) -> wrk.WrkResult:
            url = running[name].urls()[0]
            return wrk.run_wrk(url, CONNECTIONS, seconds, connection="close", script=script)

        for name in names:
            run(name, 1.0)  # warm-up, not measured
        for repeat in range(min(repeats, MAX_REPEATS)):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                result = run(name, duration_s)
                runs[name].append(result)
                progress(
                    f"slow mix {repeat + 1} {name}: {result.rps:,.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"{result.errors} errors"
                )
                time.sleep(PAUSE_S)
    return runs

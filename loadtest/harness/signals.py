"""Signals during a benchmark: SIGTERM cleans up like Ctrl-C, and a teardown runs to its
end whatever arrives meanwhile.

Python only sets handlers in the main thread; elsewhere both context managers do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so it runs the same ``finally`` as Ctrl-C."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """The teardown guard: a (second) Ctrl-C or SIGTERM must not abort a teardown half way.
    Both are held while the block runs; if one came, KeyboardInterrupt is raised after the
    block, unless an exception is already on its way out (it goes on unchanged)."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    saved = {signum: signal.signal(signum, lambda n, _f: caught.append(n)) for signum in HELD}
    in_flight = sys.exc_info()[1] is not None  # entered from a ``finally`` that is unwinding
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    if caught and not in_flight:
        raise KeyboardInterrupt

"""The benchmark's own failures (not reuseport's: those are its CLI's exit status)."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark run failed; the message is one line for the operator."""


class SetupError(BenchError):
    """The benchmark could not be set up (exit status 2)."""


class TrialFailed(BenchError):
    """A killed replica was not replaced in time (exit status 1)."""

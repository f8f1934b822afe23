"""The supervisor's sense of time: one object for reading the clocks and for waiting.

The loop and the step stopper take a Clock, so that in-process tests drive a whole attempt with a fake
one (time advances when the loop waits) and nothing sleeps for real. `wait` ends early when a signal
woke the supervisor; `sleep` does not.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...  # for intervals and deadlines

    def time(self) -> float: ...  # epoch seconds: log stamps, status.json, Slurm's EndTime

    def sleep(self, seconds: float) -> None: ...

    def wait(self, seconds: float) -> None: ...  # returns early once wake() was called

    def wake(self) -> None: ...


class RealClock:
    """time.monotonic/time.time; waits on an Event that the signal handler sets."""

    def __init__(self) -> None:
        self._woken = threading.Event()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, seconds: float) -> None:
        self._woken.wait(max(0.0, seconds))
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

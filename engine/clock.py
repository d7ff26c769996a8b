"""Clocks for the engine loop: wall time for real runs, a virtual clock for simulations.

Both read seconds since the run started, so recorded times mean the same thing either way.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def start(self) -> None:
        """The run begins now: time 0 from here (setup before it, such as opening the database,
        is not the run's time)."""

    def advance(self, seconds: float) -> None:
        """A step of this length was executed (the virtual clock moves; wall time moves by itself)."""

    def wait_until(self, t: float) -> None:
        """Idle until time t, or until woken (a wall clock can be interrupted)."""


class VirtualClock:
    """Time moves only when the engine says so: by each step's predicted cost, or to the next arrival."""

    virtual = True  # the engine may take several steps at once (decode bursts)

    def __init__(self) -> None:
        self._now = 0.0

    def start(self) -> None:
        pass  # virtual time is 0 until the engine moves it

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def wait_until(self, t: float) -> None:
        self._now = max(self._now, t)


class WallClock:
    """Real time since construction; waits can be cut short by wake() (abort, shutdown)."""

    virtual = False

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._wake = threading.Event()

    def start(self) -> None:
        self._start = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._start

    def advance(self, seconds: float) -> None:
        pass  # wall time already passed while the step ran

    def wait_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            self._wake.wait(delay)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

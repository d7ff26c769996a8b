"""The online loop's clock: wall time since a run's origin, with waits that other threads cut short."""

from __future__ import annotations

import threading
import time


class ServingClock:
    """Wall time since a run's origin (a perf_counter reading); waits end early on the shared wake event.

    The origin is given, not taken at start(): a run opened by rotation starts at the receipt of the
    first request it holds, which came before the run object existed."""

    def __init__(self, origin: float, wake_event: threading.Event) -> None:
        self._origin = origin
        self._wake = wake_event

    def start(self) -> None:
        pass

    def now(self) -> float:
        return time.perf_counter() - self._origin

    def run_time(self, perf: float) -> float:
        return perf - self._origin

    def advance(self, seconds: float) -> None:
        pass  # wall time passed while the step ran

    def wait_until(self, t: float) -> None:
        self.wait(t - self.now())

    def wait(self, timeout: float | None) -> None:
        if timeout is None or timeout > 0:
            self._wake.wait(timeout)
        self._wake.clear()  # cleared before the caller looks at its queues again, so no wake is lost

    def wake(self) -> None:
        self._wake.set()

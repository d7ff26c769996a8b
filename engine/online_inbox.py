"""The hand-off between the threads that serve clients and the engine thread of the online loop.

Other threads hand in requests, client aborts and shutdown orders here and wake the engine thread;
the engine thread takes them between steps. A lock makes "are we accepting?" and the hand-off one
step, so once a drain has begun and the inbox is seen empty under it, nothing can arrive later.
"""

from __future__ import annotations

import queue
import threading
import time

from engine.online_io import NotAcceptingError, OnlineRequest, OutputSink, QueueFullError

SHUTTING_DOWN = "the server is shutting down"

Handed = tuple[OnlineRequest, OutputSink]


class Inbox:
    """submit(), abort(), drain(), abort_all() and close() are safe from any thread; the take_* methods
    and admitted() belong to the engine thread."""

    def __init__(self) -> None:
        self.wake_event = threading.Event()  # set on every hand-off; the engine thread's clock waits on it
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[Handed] = queue.SimpleQueue()
        self._aborts: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._unadmitted: set[str] = set()  # handed in, not yet taken by the engine (guarded by _lock)
        self._accepting = True
        self._refusal = "the server is not accepting requests"
        self._abort_now = False
        self.drain_deadline: float | None = None  # perf_counter; set once a drain or abort_all begins
        self.engine_waiting = 0  # the engine's waiting queue, as the engine thread last saw it

    # -- any thread -------------------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def num_waiting(self) -> int:
        """Requests not yet scheduled: handed in but not admitted, plus the engine's waiting queue."""
        return len(self._unadmitted) + self.engine_waiting

    def submit(self, request: OnlineRequest, sink: OutputSink, max_waiting: int | None = None) -> None:
        """NotAcceptingError when draining, stopped or failed; QueueFullError when max_waiting
        requests are already waiting."""
        if request.received_at is None:
            request.received_at = time.perf_counter()
        with self._lock:
            if not self._accepting:
                raise NotAcceptingError(self._refusal)
            if max_waiting is not None and self.num_waiting >= max_waiting:
                raise QueueFullError(f"{self.num_waiting} requests are already waiting (--max-waiting {max_waiting})")
            self._unadmitted.add(request.request_id)
            self._requests.put((request, sink))
        self.wake_event.set()

    def abort(self, request_id: str) -> None:
        self._aborts.put(request_id)
        self.wake_event.set()

    def drain(self, timeout_s: float) -> None:
        """Stop accepting; what was accepted may run until timeout_s from now (the earliest deadline wins)."""
        with self._lock:
            self._accepting, self._refusal = False, SHUTTING_DOWN
            deadline = time.perf_counter() + max(timeout_s, 0.0)
            self.drain_deadline = deadline if self.drain_deadline is None else min(self.drain_deadline, deadline)
        self.wake_event.set()

    def abort_all(self) -> None:
        with self._lock:
            self._accepting, self._refusal = False, SHUTTING_DOWN
            self._abort_now = True
            self.drain_deadline = time.perf_counter()
        self.wake_event.set()

    def close(self, refusal: str) -> None:
        """Accept nothing more, for good (the loop has ended)."""
        with self._lock:
            self._accepting, self._refusal = False, refusal

    # -- the engine thread --------------------------------------------------------------------------
    def take_requests(self) -> list[Handed]:
        taken = []
        while True:
            try:
                taken.append(self._requests.get_nowait())
            except queue.Empty:
                return taken

    def take_aborts(self) -> list[str]:
        taken = []
        while True:
            try:
                taken.append(self._aborts.get_nowait())
            except queue.Empty:
                return taken

    def take_abort_now(self) -> bool:
        """Whether abort_all() was called since the last time this was asked."""
        with self._lock:
            ordered, self._abort_now = self._abort_now, False
        return ordered

    def admitted(self, request_id: str) -> None:
        """The engine thread has taken the request (into the engine, or refused it)."""
        with self._lock:
            self._unadmitted.discard(request_id)

    def is_unadmitted(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._unadmitted

    def has_requests(self) -> bool:
        return not self._requests.empty()

    def drained(self) -> bool:
        """A drain has begun and nothing is left to take: no request can arrive any more."""
        if self.drain_deadline is None or not self._requests.empty():
            return False
        with self._lock:  # submit() checks "accepting" and hands over under this lock
            return self._requests.empty()

"""Scheduling policies as sort keys, and the waiting/swapped queue ordered by them.

A policy is one key: queues serve the smallest key first, and under block pressure the running
request with the largest key is preempted. fcfs: arrival order. priority: lower value first,
arrival breaking ties. sjf: fewest remaining output tokens first.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from engine.request import Request

PolicyKey = Callable[[Request], tuple[float, ...]]


def _fcfs_key(req: Request) -> tuple[float, ...]:
    return (req.arrival_time, req.seq_no)


def _priority_key(req: Request) -> tuple[float, ...]:
    return (req.priority, req.arrival_time, req.seq_no)


def _sjf_key(req: Request) -> tuple[float, ...]:
    return (req.remaining_output_tokens, req.arrival_time, req.seq_no)


POLICY_KEYS: dict[str, PolicyKey] = {"fcfs": _fcfs_key, "priority": _priority_key, "sjf": _sjf_key}


def policy_key(policy: str) -> PolicyKey:
    try:
        return POLICY_KEYS[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICY_KEYS)}") from None


class RequestQueue:
    """Requests ordered by a policy key; the key of a queued request must not change."""

    def __init__(self, key: PolicyKey) -> None:
        self._key = key
        self._heap: list[tuple[tuple[float, ...], Request]] = []

    def add(self, req: Request) -> None:
        heapq.heappush(self._heap, (self._key(req), req))

    def peek(self) -> Request:
        return self._heap[0][1]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[1]

    def remove(self, req: Request) -> bool:
        """Take req out wherever it is (abort); False if it was not queued."""
        for i, (_, queued) in enumerate(self._heap):
            if queued is req:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                return True
        return False

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[Request]:
        """In service order (sorts a copy; for inspection, not the hot path)."""
        return (req for _, req in sorted(self._heap, key=lambda item: item[0]))
